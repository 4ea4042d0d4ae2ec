"""Stage 2, the Dask bag: reuse what the catalog holds, decode the rest, one shard per partition.

The jobs it strings together live in their own modules: `reuse` (which catalog rows to trust), `partition`
(one partition on a worker: `fetch` the bytes, decode, write a shard) and `summaries` (per-tensor hashes).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import dask.bag as db
import numpy as np

from . import kernels
from .catalog import CatalogRef
from .cluster import Engine
from .decode import DecoderSettings
from .partition import decode_partition
from .reuse import removed_count, reusable_rows, trusted_rows
from .sources import Listing

log = logging.getLogger("dupflow")

__all__ = ["Decoded", "ingest", "SHARD_FILES"]

SHARD_FILES = 1024  # files per decode partition (one shard each)


@dataclass
class Decoded:
    """Per listed file (in listing order): where its tensor lives, its size, or why it has none."""

    shard: list[str | None]
    row: np.ndarray
    width: np.ndarray
    height: np.ndarray
    error: list[str | None]
    hash: list[bytes | None]  # of the tensor as decoded
    hash_turned: list[
        bytes | None
    ]  # the least hash over its four quarter turns: equal iff some turn is equal
    sums: np.ndarray  # per-channel sums of the tensor (n x 3 int64)
    decoded: int
    reused: int
    removed: int

    def replace(self, positions: list[int], fresh: Decoded) -> None:
        """Take the rows of `fresh` (decoded for exactly these positions, in order) in their place."""
        for k, i in enumerate(positions):
            self.shard[i], self.error[i] = fresh.shard[k], fresh.error[k]
            self.hash[i], self.hash_turned[i] = fresh.hash[k], fresh.hash_turned[k]
            self.row[i], self.width[i], self.height[i] = fresh.row[k], fresh.width[k], fresh.height[k]
            self.sums[i] = fresh.sums[k]


def ingest(
    listing: Listing,
    catalog: CatalogRef,
    storage_options: dict,
    px_size: int,
    mode: str,
    engine: Callable[[int], Engine],
    show_progress: bool,
) -> Decoded:
    """Make sure every listed file has a catalog row; decode only what is new or changed."""
    settings = DecoderSettings.current()  # the caller's Pillow settings, applied on every worker
    index = catalog.read_index()
    reuse = trusted_rows(reusable_rows(index, listing), catalog, px_size, settings)
    todo = [(u, s, t) for u, s, t in zip(listing.url, listing.size, listing.stamp) if (u, s, t) not in reuse]
    fresh: dict[str, dict] = {}
    if todo:
        cluster = engine(len(todo))
        # a partition holds about 8 copies of each tensor (list, stack, turns, Parquet): sized by bytes
        per_shard = kernels.images_per_task(px_size, 8, SHARD_FILES)
        parts = max(math.ceil(len(todo) / per_shard), min(len(todo), 4 * cluster.workers))
        bag = db.from_sequence(todo, npartitions=parts).map_partitions(
            decode_partition, catalog, storage_options, px_size, mode, settings
        )
        for part in cluster.run(bag.to_delayed(), "dupflow decoding", show_progress, len(todo)):
            for row in part:
                fresh[row["url"]] = row
        catalog.compact_index()  # each partition committed its own index file
    n = len(listing)
    out = Decoded(
        [None] * n,
        np.full(n, -1, np.int64),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
        [None] * n,
        [None] * n,
        [None] * n,
        np.zeros((n, 3), np.int64),
        decoded=len(todo),
        reused=n - len(todo),
        removed=removed_count(index, listing),
    )
    for i, key in enumerate(zip(listing.url, listing.size, listing.stamp)):
        row = reuse.get(key) or fresh[key[0]]
        if row["error"] is not None:
            out.error[i] = row["error"]
            log.warning("skipping %s: %s", listing.path[i], row["error"])
            continue
        out.shard[i], out.row[i] = row["shard"], row["row"]
        out.width[i], out.height[i] = row["width"], row["height"]
        out.hash[i], out.hash_turned[i] = row["hash"], row["hash_turned"]
        out.sums[i] = (row["sum_r"], row["sum_g"], row["sum_b"])
    return out

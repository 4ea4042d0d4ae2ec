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

__all__ = ["Decoded", "ingest", "SHARD_FILES", "HASH_DTYPE"]

SHARD_FILES = 1024  # files per decode partition (one shard each)
HASH_DTYPE = np.dtype("S16")  # a blake2b digest of 16 bytes


@dataclass
class Decoded:
    """Per listed file (in listing order), as columns: where its tensor lives, its size, or why it has none.

    `shard` indexes `shards` (-1 for a file without a tensor, which then has an `error`); the hashes are
    16-byte blake2b digests (b"" without a tensor). Columns, not per-file objects, so a million files cost
    tens of megabytes on the client.
    """

    shards: list[str]  # distinct shard names
    shard: np.ndarray  # int32: index into `shards`, -1 where the file has no tensor
    row: np.ndarray  # int64: row within its shard
    width: np.ndarray  # int64: original size in pixels
    height: np.ndarray
    error: dict[int, str]  # position -> why that file has no tensor
    hash: np.ndarray  # S16: of the tensor as decoded
    hash_turned: np.ndarray  # S16: the least hash over its four quarter turns (equal iff some turn is equal)
    sums: np.ndarray  # per-channel sums of the tensor (n x 3 int64)
    decoded: int
    reused: int
    removed: int

    @classmethod
    def empty(cls, n: int, decoded: int = 0, reused: int = 0, removed: int = 0) -> Decoded:
        """n files with nothing known yet (no tensor, no error)."""
        return cls(
            [],
            np.full(n, -1, np.int32),
            np.full(n, -1, np.int64),
            np.zeros(n, np.int64),
            np.zeros(n, np.int64),
            {},
            np.zeros(n, HASH_DTYPE),
            np.zeros(n, HASH_DTYPE),
            np.zeros((n, 3), np.int64),
            decoded,
            reused,
            removed,
        )

    def shard_name(self, position: int) -> str | None:
        """The name of the shard holding this file's tensor (None without one)."""
        k = int(self.shard[position])
        return self.shards[k] if k >= 0 else None

    def valid(self) -> np.ndarray:
        """Positions of the files that have a tensor."""
        return np.flatnonzero(self.shard >= 0)

    def positions_in(self, name: str) -> np.ndarray:
        """Positions of the files whose tensor lives in shard `name`."""
        if name not in self.shards:
            return np.empty(0, np.int64)
        return np.flatnonzero(self.shard == self.shards.index(name))

    def replace(self, positions: list[int] | np.ndarray, fresh: Decoded) -> None:
        """Take the rows of `fresh` (decoded for exactly these positions, in order) in their place."""
        at = np.asarray(positions, dtype=np.int64)
        index = {name: k for k, name in enumerate(self.shards)}
        remap = np.array([index.setdefault(name, len(index)) for name in fresh.shards] + [-1], np.int32)
        self.shards = list(index)
        self.shard[at] = remap[fresh.shard]  # -1 picks the trailing -1
        for column in ("row", "width", "height", "hash", "hash_turned", "sums"):
            getattr(self, column)[at] = getattr(fresh, column)
        for p in at.tolist():
            self.error.pop(p, None)
        self.error.update({int(at[k]): message for k, message in fresh.error.items()})


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
    out = Decoded.empty(len(listing), len(todo), len(listing) - len(todo), removed_count(index, listing))
    names: dict[str, int] = {}
    for i, key in enumerate(zip(listing.url, listing.size, listing.stamp)):
        row = reuse.get(key) or fresh[key[0]]
        if row["error"] is not None:
            out.error[i] = row["error"]
            log.warning("skipping %s: %s", listing.path[i], row["error"])
            continue
        out.shard[i], out.row[i] = names.setdefault(row["shard"], len(names)), row["row"]
        out.width[i], out.height[i] = row["width"], row["height"]
        out.hash[i], out.hash_turned[i] = row["hash"], row["hash_turned"]
        out.sums[i] = (row["sum_r"], row["sum_g"], row["sum_b"])
    out.shards = list(names)
    return out

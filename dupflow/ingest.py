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
import pyarrow as pa
import pyarrow.compute as pc

from . import kernels
from .catalog import CatalogRef
from .cluster import Engine
from .columns import fixed_bytes
from .decode import DecoderSettings
from .partition import decode_tables
from .reuse import chosen_rows, removed_count
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
    chosen = chosen_rows(index, listing, catalog, px_size, settings)
    reused = np.flatnonzero(chosen >= 0)
    todo = np.flatnonzero(chosen < 0)
    removed = removed_count(index, listing)
    out = Decoded.empty(len(listing), len(todo), len(reused), removed)
    _place(out, reused, index, chosen[reused], listing)
    del index, chosen
    if len(todo):
        cluster = engine(len(todo))
        # a partition holds about 8 copies of each tensor (list, stack, turns, Parquet): sized by bytes
        per_shard = kernels.images_per_task(px_size, 8, SHARD_FILES)
        count = max(math.ceil(len(todo) / per_shard), min(len(todo), 4 * cluster.workers))
        keys = listing.subset(todo).keys()
        # every count-th file: a folder of 4K wallpapers next to one of icons would otherwise make one
        # partition many times longer than the rest, and the run waits on it with the other workers idle
        parts = [np.arange(k, len(todo), count) for k in range(count)]  # count <= len(todo)
        # taken, not sliced: a pickled Arrow slice carries its parent's whole buffers (a 1,000,000-file
        # build's graph would pickle every partition with the whole key table: 99 GB, for 100 MB of keys)
        slices = [keys.take(pa.array(k)) for k in parts]
        bag = db.from_sequence(slices, npartitions=len(slices)).map_partitions(
            decode_tables, catalog, storage_options, px_size, mode, settings
        )
        tables = [
            t
            for part in cluster.run(bag.to_delayed(), "dupflow decoding", show_progress, len(todo))
            for t in part
        ]
        fresh = pa.concat_tables(tables)  # partition after partition
        _place(out, todo, fresh, np.argsort(np.concatenate(parts)), listing)
        catalog.compact_index()  # each partition committed its own index file
    return out


def _place(out: Decoded, positions: np.ndarray, rows: pa.Table, picks: np.ndarray, listing: Listing) -> None:
    """Fill `out` at these listing positions from these rows (INDEX_SCHEMA) of a table, column by column
    (no copy of the table: the index may hold a million rows)."""
    if not len(positions):
        return
    shards = pc.dictionary_encode(rows.column("shard")).combine_chunks()
    code = pc.fill_null(shards.indices, -1).to_numpy()[picks]
    ok = code >= 0
    used, local = np.unique(code[ok], return_inverse=True)
    index = {name: k for k, name in enumerate(out.shards)}
    names = shards.dictionary.to_pylist()
    remap = np.array([index.setdefault(names[k], len(index)) for k in used.tolist()], np.int32)
    out.shards = list(index)
    has, taken = positions[ok], picks[ok]
    out.shard[has] = remap[local]

    def column(name: str) -> np.ndarray:
        return pc.fill_null(rows.column(name), 0).to_numpy()[taken]

    out.row[has], out.width[has], out.height[has] = column("row"), column("width"), column("height")
    for k, name in enumerate(("sum_r", "sum_g", "sum_b")):
        out.sums[has, k] = column(name)
    out.hash[has] = fixed_bytes(rows.column("hash"), 16)[taken]
    out.hash_turned[has] = fixed_bytes(rows.column("hash_turned"), 16)[taken]
    failed = np.flatnonzero(~ok)
    messages = rows.column("error").take(pa.array(picks[failed])).to_pylist()
    for k, message in zip(positions[failed].tolist(), messages):
        out.error[k] = message or "no thumbnail recorded"
        log.warning("skipping %s: %s", listing.path[k], out.error[k])

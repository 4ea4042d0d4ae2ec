"""Tensors of chosen images for the compare tasks: read shard by shard, handed to the tasks that need them.

Images a compare task needs are scattered over the catalog (a brightness band or a hash class ignores the
order files were decoded in), and a Parquet read costs a whole row group (128 tensors) per image. So the
reads go the other way: fetch tasks each read a group of shards once, taking only the rows some task
needs, and split what they read by task; a compare task receives its parts and looks its images up by
position. The graphs are built by hand (see `graph`): dask.delayed's per-call graph merging cost about
1 ms per task, and a million images make tens of thousands of tasks.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from . import kernels
from .catalog import CatalogRef

if TYPE_CHECKING:
    from .ingest import Decoded

FETCH_COPIES = 3  # a fetch task's bytes per image: the row groups read, the rows kept, their split

__all__ = ["Tensors", "by_shard", "graph", "tensor_parts"]


def graph(dsk: dict, keys: list, layer: str) -> list[Delayed]:
    """Delayed objects for these keys of one hand-built graph (a dict of Dask tasks)."""
    high = HighLevelGraph.from_collections(layer, dsk)
    return [Delayed(k, high, layer=layer) for k in keys]


def by_shard(shard: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Each shard index with the places that hold it (one sort, not one scan per shard)."""
    order = np.argsort(shard, kind="stable")
    starts = np.flatnonzero(np.r_[True, shard[order][1:] != shard[order][:-1]]) if len(shard) else []
    return [(int(shard[order[a]]), order[a:b]) for a, b in zip(starts, [*starts[1:], len(order)])]


def _fetch(catalog: CatalogRef, reads: list[tuple], task: np.ndarray) -> dict[int, tuple]:
    """Read some shards' tensors for these rows (each row once); each task's positions and tensors.
    reads: (shard, rows, positions) per shard; task: the task of each (shard, row), in that order."""
    positions = np.concatenate([p for _, _, p in reads])
    parts = []
    for shard, rows, _ in reads:
        unique, inverse = np.unique(rows, return_inverse=True)
        parts.append(catalog.read_rows(shard, unique, "tensor")[inverse])
    order = np.argsort(task, kind="stable")  # one copy of the tensors, grouped by task
    tensors, positions, task = np.concatenate(parts)[order], positions[order], task[order]
    starts = np.flatnonzero(np.r_[True, task[1:] != task[:-1]])
    ends = [*starts[1:], len(task)]
    return {int(task[a]): (positions[a:b], tensors[a:b]) for a, b in zip(starts, ends)}


def tensor_parts(
    dsk: dict, catalog: CatalogRef, decoded: Decoded, needed: list[np.ndarray], px: int, key: str
) -> list[list]:
    """Add fetch tasks to `dsk` for the images each task needs (`needed[t]`: positions); returns, per
    task, the keys of its parts (to be given to Tensors). A fetch task reads as many shards as keep its
    tensors within kernels.TASK_BYTES."""
    positions = np.concatenate(needed) if needed else np.empty(0, np.int64)
    task = (
        np.concatenate([np.full(len(n), t, np.int32) for t, n in enumerate(needed)]) if needed else positions
    )
    most = kernels.images_per_task(px, FETCH_COPIES, 1 << 16)
    parts: list[list] = [[] for _ in needed]
    group: list = []

    def flush() -> None:
        name = (f"{key}-fetch", len(dsk))
        places = np.concatenate([p for _, p in group])
        reads = [
            (decoded.shards[k], decoded.row[positions[p]].astype(np.int32), positions[p]) for k, p in group
        ]
        dsk[name] = (_fetch, catalog, reads, task[places])
        for t in np.unique(task[places]).tolist():
            part = (f"{key}-part", name[1], t)
            dsk[part] = (operator.getitem, name, t)
            parts[t].append(part)

    for k, places in by_shard(decoded.shard[positions]):
        if group and sum(len(p) for _, p in group) + len(places) > most:
            flush()
            group = []
        group.append((k, places))
    if group:
        flush()
    return parts


class Tensors:
    """A task's images, from its parts: tensors looked up by file-table position."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]]):
        positions = np.concatenate([p for p, _ in parts])
        order = np.argsort(positions)
        self.positions = positions[order]
        self.tensors = np.concatenate([t for _, t in parts])[order]

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """Where these positions are in `tensors`."""
        return np.searchsorted(self.positions, positions)

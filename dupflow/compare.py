"""Stage 4, the Dask graph: catalog rows -> blocks -> one task per block pair -> match edges (i, j, S)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from dask import delayed

from . import kernels
from .catalog import CatalogRef
from .cluster import Engine
from .ingest import Decoded

BLOCK_BYTES = 16 * 2**20   # tensor bytes per block: bounds a worker's memory, not the number of images


@dataclass(frozen=True)
class Block:
    """Images compared together: their positions in the file table and where their tensors live."""
    members: np.ndarray
    segments: tuple[tuple[str, np.ndarray], ...]


def block_size(px_size: int, chunksize: int | None) -> int:
    """Images per block: the user's chunksize, or as many as fit BLOCK_BYTES."""
    if chunksize is not None:
        return chunksize
    return int(np.clip(BLOCK_BYTES // (3 * px_size * px_size), 16, 4096))


def make_blocks(decoded: Decoded, members: np.ndarray, size: int) -> list[Block]:
    """Cut the members (valid images) into blocks, each reading as few shards as possible."""
    order = sorted(members, key=lambda p: (decoded.shard[p], decoded.row[p]))
    blocks = []
    for start in range(0, len(order), size):
        chunk = np.array(order[start:start + size], dtype=np.int64)
        segments: list[tuple[str, list[int]]] = []
        for position in chunk:
            shard = decoded.shard[position]
            if not segments or segments[-1][0] != shard:
                segments.append((shard, []))
            segments[-1][1].append(int(decoded.row[position]))
        blocks.append(Block(chunk, tuple((s, np.array(r, dtype=np.int64)) for s, r in segments)))
    return blocks


def _load_block(catalog: CatalogRef, segments: tuple[tuple[str, np.ndarray], ...]) -> np.ndarray:
    """Read a block's tensors on a worker (tensors never pass through the client)."""
    return np.concatenate([catalog.read_tensors(shard, rows) for shard, rows in segments])


def _compare_blocks(a: np.ndarray, b: np.ndarray, members_a: np.ndarray, members_b: np.ndarray,
                    dims_a: np.ndarray | None, dims_b: np.ndarray | None, px: int, rotate: bool,
                    limit: float, same: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mask = kernels.same_dim_mask(dims_a, dims_b) if dims_a is not None else None
    i, j, sums = kernels.block_matches(a, b, px, rotate, limit, mask, upper=same)
    return members_a[i], members_b[j], sums


def compare_tasks(catalog: CatalogRef, decoded: Decoded, members: np.ndarray, px: int, rotate: bool,
                  same_dim: bool, limit: float, size: int) -> list:
    """Delayed tasks, one per block pair (i <= j), each returning edges as file-table positions."""
    blocks = make_blocks(decoded, members, size)
    dims = np.sort(np.stack([decoded.width, decoded.height], axis=1), axis=1)
    loads = [delayed(_load_block, pure=True)(catalog, block.segments) for block in blocks]
    tasks = []
    for x, bx in enumerate(blocks):
        for y in range(x, len(blocks)):
            by = blocks[y]
            dx = dims[bx.members] if same_dim else None
            dy = dims[by.members] if same_dim else None
            if same_dim and not kernels.same_dim_mask(dx, dy).any():
                continue
            tasks.append(delayed(_compare_blocks, pure=True)(
                loads[x], loads[y], bx.members, by.members, dx, dy, px, rotate, limit, x == y))
    return tasks


def find_edges(catalog: CatalogRef, decoded: Decoded, member_sets: list[np.ndarray], px: int, rotate: bool,
               same_dim: bool, threshold: float, chunksize: int | None, engine: Callable[[], Engine],
               show_progress: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every matching pair within each member set, as (i, j, S) arrays per set."""
    limit = kernels.match_limit(threshold, 3 * px * px)
    size = block_size(px, chunksize)
    per_set = [compare_tasks(catalog, decoded, members, px, rotate, same_dim, limit, size)
               for members in member_sets]
    flat = [task for tasks in per_set for task in tasks]
    results = engine().run(flat, "dupflow comparing", show_progress) if flat else []
    out, start = [], 0
    for tasks in per_set:
        chunk = results[start:start + len(tasks)]
        start += len(tasks)
        if chunk:
            out.append(tuple(np.concatenate([part[k] for part in chunk]) for k in range(3)))
        else:
            out.append(kernels.no_matches())
    return out

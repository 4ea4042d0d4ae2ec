"""Stage 4, the Dask graph: catalog rows -> match edges (i, j, S) as file-table positions.

Threshold 0 is a hash join: equal tensors (up to a quarter turn) have equal hashes, and each hash
class is then checked tensor by tensor. Any other threshold cuts the images into blocks and runs one
task per block pair, skipping pairs whose brightness ranges alone rule every match out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np
from dask import delayed

from . import kernels
from .catalog import GRID_DTYPE, CatalogRef
from .cluster import Engine
from .ingest import Decoded

BLOCK_BYTES = 16 * 2**20  # tensor bytes per block: bounds a worker's memory, not the number of images
VERIFY_IMAGES = 4096  # images checked per hash-join task

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Rows:
    """Where some images' tensors live: their file-table positions, shard (by index) and row."""

    members: np.ndarray
    shards: tuple[str, ...]
    shard: np.ndarray
    row: np.ndarray

    def subset(self, picks: np.ndarray) -> Rows:
        return Rows(self.members[picks], self.shards, self.shard[picks], self.row[picks])


def block_size(px_size: int, chunksize: int | None) -> int:
    """Images per block: the user's chunksize, or as many as fit BLOCK_BYTES."""
    if chunksize is not None:
        return chunksize
    return int(np.clip(BLOCK_BYTES // (3 * px_size * px_size), 16, 4096))


def _rows(decoded: Decoded, positions: list[int]) -> Rows:
    """Address the given positions in the catalog."""
    names: dict[str, int] = {}
    shard = np.array([names.setdefault(decoded.shard[p], len(names)) for p in positions], dtype=np.int64)
    return Rows(
        np.array(positions, dtype=np.int64),
        tuple(names),
        shard,
        decoded.row[np.array(positions, dtype=np.int64)],
    )


def _load(catalog: CatalogRef, rows: Rows, column: str = "tensor") -> np.ndarray:
    """Read one column for these rows on a worker, each shard opened once (never through the client)."""
    out = None
    for k in np.unique(rows.shard):
        places = np.nonzero(rows.shard == k)[0]
        values = catalog.read_rows(rows.shards[k], rows.row[places], column)
        if out is None:
            out = np.empty((len(rows.members), values.shape[1]), dtype=np.uint8)
        out[places] = values
    return out if out is not None else np.empty((0, 0), dtype=np.uint8)


def _load_grids(catalog: CatalogRef, rows: Rows, px: int) -> np.ndarray:
    """The block-sum grids of these rows, as (n, GRID, GRID, 3) float64."""
    raw = _load(catalog, rows, "grid").view(GRID_DTYPE)
    g = kernels.GRID
    return raw.reshape(len(rows.members), g, g, 3).astype(np.float64)


# ---- threshold 0: hash join -------------------------------------------------------------------


def _split_equal(tensors: np.ndarray, px: int, rotate: bool) -> list[list[int]]:
    """Partition rows into classes of tensors equal up to a quarter turn (or exactly equal)."""
    left = list(range(len(tensors)))
    classes = []
    while left:
        head, rest = left[0], left[1:]
        forms = kernels.rotations(tensors[head : head + 1], px, rotate)
        same = [r for r in rest if any(np.array_equal(tensors[r], form[0]) for form in forms)]
        classes.append([head] + same)
        taken = set(same)
        left = [r for r in rest if r not in taken]
    return classes


def _verify(catalog: CatalogRef, rows: Rows, sizes: list[int], px: int, rotate: bool) -> list[list[int]]:
    """Check hash classes tensor by tensor; returns the classes of really equal images (positions)."""
    tensors = _load(catalog, rows)
    out, start = [], 0
    for size in sizes:
        for part in _split_equal(tensors[start : start + size], px, rotate):
            if len(part) > 1:
                out.append([int(rows.members[start + k]) for k in part])
        start += size
    return out


def _hash_classes(decoded: Decoded, members: np.ndarray, rotate: bool, same_dim: bool) -> list[list[int]]:
    """Members sharing a content hash (turn-invariant when rotate) and, with same_dim, a size."""
    classes: dict[tuple, list[int]] = defaultdict(list)
    hashes = decoded.hash_turned if rotate else decoded.hash
    for position in members.tolist():
        key = (hashes[position],)
        if same_dim:
            key += tuple(sorted((int(decoded.width[position]), int(decoded.height[position]))))
        classes[key].append(position)
    return [c for c in classes.values() if len(c) > 1]


def _duplicate_tasks(
    catalog: CatalogRef, decoded: Decoded, members: np.ndarray, px: int, rotate: bool, same_dim: bool
) -> tuple[list, int]:
    """Tasks checking each hash class tensor by tensor, and how many images they read."""
    tasks, batch, sizes, images = [], [], [], 0
    for cls in _hash_classes(decoded, members, rotate, same_dim):
        batch.extend(cls)
        sizes.append(len(cls))
        images += len(cls)
        if len(batch) >= VERIFY_IMAGES:
            tasks.append(delayed(_verify, pure=True)(catalog, _rows(decoded, batch), sizes, px, rotate))
            batch, sizes = [], []
    if batch:
        tasks.append(delayed(_verify, pure=True)(catalog, _rows(decoded, batch), sizes, px, rotate))
    return tasks, images


def _class_edges(results: list[list[list[int]]]) -> Edges:
    """Every pair within each class of equal images, with S = 0."""
    i, j = [], []
    for classes in results:
        for cls in classes:
            for x in range(len(cls)):
                i.extend(cls[x] for _ in range(len(cls) - x - 1))
                j.extend(cls[x + 1 :])
    return np.array(i, dtype=np.int64), np.array(j, dtype=np.int64), np.zeros(len(i))


# ---- threshold > 0: block pairs ---------------------------------------------------------------


def _compare(
    grids_a: np.ndarray,
    grids_b: np.ndarray,
    rows_a: Rows,
    rows_b: Rows,
    catalog: CatalogRef,
    dims_a: np.ndarray | None,
    dims_b: np.ndarray | None,
    px: int,
    rotate: bool,
    limit: float,
    same: bool,
) -> Edges:
    """One block pair: bounds on the grids first, then tensors only for the pairs still in doubt."""
    found = kernels.candidates(grids_a, grids_b, px, rotate, limit, dims_a, dims_b, upper=same)
    if found is None:  # most pairs survive the bounds: full matrix products are cheaper
        a = _load(catalog, rows_a)
        b = a if same else _load(catalog, rows_b)
        mask = kernels.same_dim_mask(dims_a, dims_b) if dims_a is not None else None
        i, j, sums = kernels.block_matches(a, b, px, rotate, limit, mask, upper=same)
        return rows_a.members[i], rows_b.members[j], sums
    i, j, alive = found
    if not len(i):
        return kernels.no_matches()
    pick_a, i = np.unique(i, return_inverse=True)
    pick_b, j = np.unique(j, return_inverse=True)
    a, b = _load(catalog, rows_a.subset(pick_a)), _load(catalog, rows_b.subset(pick_b))
    i, j, sums = kernels.exact_matches(a, b, px, limit, i, j, alive)
    return rows_a.members[pick_a[i]], rows_b.members[pick_b[j]], sums


def _block_tasks(
    catalog: CatalogRef,
    decoded: Decoded,
    members: np.ndarray,
    px: int,
    rotate: bool,
    same_dim: bool,
    limit: float,
    size: int,
) -> list:
    """One task per block pair (i <= j) that the blocks' brightness ranges and sizes do not rule out."""
    order = sorted(members.tolist(), key=lambda p: (decoded.shard[p], decoded.row[p]))
    blocks = [_rows(decoded, order[s : s + size]) for s in range(0, len(order), size)]
    d = 3 * px * px
    means = decoded.sums.sum(axis=1) / d
    ranges = [(means[b.members].min(), means[b.members].max()) for b in blocks]
    radius = math.sqrt(limit / d) * (1 + 1e-9) + 1e-6
    dims = np.sort(np.stack([decoded.width, decoded.height], axis=1), axis=1)
    shapes = [set(map(tuple, dims[b.members].tolist())) for b in blocks]
    grids = [delayed(_load_grids, pure=True)(catalog, b, px) for b in blocks]
    tasks = []
    for x, bx in enumerate(blocks):
        for y in range(x, len(blocks)):
            by = blocks[y]
            gap = max(ranges[y][0] - ranges[x][1], ranges[x][0] - ranges[y][1], 0.0)
            if gap > radius or (same_dim and not shapes[x] & shapes[y]):
                continue
            tasks.append(
                delayed(_compare, pure=True)(
                    grids[x],
                    grids[y],
                    bx,
                    by,
                    catalog,
                    dims[bx.members] if same_dim else None,
                    dims[by.members] if same_dim else None,
                    px,
                    rotate,
                    limit,
                    x == y,
                )
            )
    return tasks


def find_edges(
    catalog: CatalogRef,
    decoded: Decoded,
    member_sets: list[np.ndarray],
    px: int,
    rotate: bool,
    same_dim: bool,
    threshold: float,
    chunksize: int | None,
    engine: Callable[[int], Engine],
    show_progress: bool,
) -> list[Edges]:
    """Every matching pair within each member set, as (i, j, S) arrays per set."""
    limit = kernels.match_limit(threshold, 3 * px * px)
    size = block_size(px, chunksize)
    if limit == 0:
        planned = [_duplicate_tasks(catalog, decoded, m, px, rotate, same_dim) for m in member_sets]
        per_set, images = [tasks for tasks, _ in planned], sum(n for _, n in planned)
    else:
        per_set = [_block_tasks(catalog, decoded, m, px, rotate, same_dim, limit, size) for m in member_sets]
        images = sum(len(m) for m in member_sets)
    flat = [task for tasks in per_set for task in tasks]
    results = engine(images).run(flat, "dupflow comparing", show_progress) if flat else []
    out, start = [], 0
    for tasks in per_set:
        chunk = results[start : start + len(tasks)]
        start += len(tasks)
        if limit == 0:
            out.append(_class_edges(chunk))
        elif chunk:
            out.append(tuple(np.concatenate([part[k] for part in chunk]) for k in range(3)))
        else:
            out.append(kernels.no_matches())
    return out

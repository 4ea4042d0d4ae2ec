"""Numeric kernels (numpy in, numpy out): exact sums of squared differences between tensor blocks.

For uint8 tensors a, b of d values, S(a, b) = sum((a - b)^2) = |a|^2 + |b|^2 - 2 a.b is an integer below
2^53 for every px_size dupflow accepts (d * 255^2 <= 4.9e12), so float64 products and sums of these
integers are exact whatever order BLAS adds them in: S is computed exactly, and MSE = S / d.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Iterator

import numpy as np


def threshold_value(threshold: float) -> Fraction:
    """The threshold as the decimal the user wrote (0.03 means 3/100, not the binary float below it)."""
    return Fraction(repr(float(threshold))) if isinstance(threshold, float) else Fraction(threshold)


def tensor_values(px: int) -> int:
    """d, the values in one px x px x 3 tensor: MSE = S / d."""
    return 3 * px * px


TASK_BYTES = 192 * 2**20  # tensors, turned copies and float64 temporaries one task may hold at once
FLOAT_BYTES = 32 * 2**20  # float64 work arrays, cut into column slices whatever the px_size


def images_per_task(px: int, copies: float, most: int) -> int:
    """How many px x px x 3 tensors one task may hold when each costs `copies` times its own bytes
    (stacks, turned copies, Parquet buffers): at least 1, at most `most`, whatever the px_size."""
    return int(min(most, max(1, TASK_BYTES // (copies * tensor_values(px)))))


def block_images(px: int, most: int = 4096) -> int:
    """Images per block so that one block pair fits TASK_BYTES: per image, its tensor in both blocks and
    four turned copies (6 tensors' bytes), plus the dense path's four float64 s x s matrices."""
    d = tensor_values(px)
    s = (math.sqrt(36.0 * d * d + 128.0 * TASK_BYTES) - 6.0 * d) / 64.0  # 6 d s + 32 s^2 = TASK_BYTES
    return int(min(most, max(1, s)))


def _column_step(rows: int) -> int:
    """Columns per slice so that `rows` float64 rows of a slice stay within FLOAT_BYTES."""
    return max(1, FLOAT_BYTES // (8 * max(1, rows)))


def match_limit(threshold: float, d: int) -> float:
    """The largest integer S with S / d <= threshold, decided in exact rational arithmetic."""
    if math.isinf(threshold):
        return float(d * 255 * 255)
    return float(min(math.floor(threshold_value(threshold) * d), d * 255 * 255))


def rotations(block: np.ndarray, px: int, rotate: bool) -> list[np.ndarray]:
    """The block (n x d, rows are px x px x 3 tensors) turned by 0, 90, 180, 270 degrees, or just 0."""
    return list(turns(block, px, rotate))


def turns(block: np.ndarray, px: int, rotate: bool) -> Iterator[np.ndarray]:
    """The same turns as rotations, one at a time (one turned copy of the block in memory at once)."""
    if not rotate:
        yield block
        return
    cube = block.reshape(-1, px, px, 3)
    for k in range(4):
        yield np.ascontiguousarray(np.rot90(cube, k, axes=(1, 2))).reshape(len(block), -1)


def squared_norms(block: np.ndarray) -> np.ndarray:
    """|a|^2 per row, exact, as float64 (in column slices: no full float64 copy of the block)."""
    out = np.zeros(len(block))
    step = _column_step(len(block))
    for start in range(0, block.shape[1], step):
        wide = block[:, start : start + step].astype(np.float64)
        out += np.einsum("ij,ij->i", wide, wide)
    return out


def pair_sums(a: np.ndarray, b: np.ndarray, px: int, rotate: bool) -> np.ndarray:
    """S[i, j] = min over rotations of b[j] of sum((a[i] - rot(b[j]))^2); exact integers in float64.

    The products run over column slices, so float64 copies never exceed FLOAT_BYTES (every partial sum is
    an integer below 2^53, so slicing changes no bit of the result).
    """
    norms = squared_norms(a)[:, None] + squared_norms(b)[None, :]
    step = _column_step(len(a) + len(b))
    best = None
    for turned in turns(b, px, rotate):
        dots = np.zeros((len(a), len(b)))
        for start in range(0, a.shape[1], step):
            cols = slice(start, start + step)
            dots += a[:, cols].astype(np.float64) @ turned[:, cols].astype(np.float64).T
        sums = norms - 2.0 * dots
        best = sums if best is None else np.minimum(best, sums, out=best)
    return best


def same_dim_mask(dims_a: np.ndarray, dims_b: np.ndarray) -> np.ndarray:
    """True where two images' {width, height} are equal as unordered pairs (dims rows are sorted)."""
    return (dims_a[:, None, 0] == dims_b[None, :, 0]) & (dims_a[:, None, 1] == dims_b[None, :, 1])


def block_matches(
    a: np.ndarray,
    b: np.ndarray,
    px: int,
    rotate: bool,
    limit: float,
    mask: np.ndarray | None = None,
    upper: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, S) for every pair of rows within the limit; `upper` keeps i < j (a block against itself)."""
    if mask is not None and not mask.any():
        return no_matches()
    sums = pair_sums(a, b, px, rotate)
    keep = sums <= limit
    if mask is not None:
        keep &= mask
    if upper:
        keep &= np.triu(np.ones(keep.shape, dtype=bool), k=1)
    i, j = np.nonzero(keep)
    return i, j, sums[i, j]


GRID = 5  # coarse grid side for the block-mean bound
PAIR_CHUNK = 1 << 16  # candidate pairs handled at once (bounds memory)
DENSE_FRACTION = 0.25  # above this share of surviving pairs, one matrix product per turn is cheaper


def _slack(limit: float) -> float:
    """Prune only when a bound exceeds the limit by more than float64 rounding could explain."""
    return limit * (1 + 1e-9) + 1e-6


def mean_radius(limit: float, d: int) -> float:
    """The widest gap in mean brightness a match can have: d * (mean_a - mean_b)^2 <= S <= limit.

    The one radius every brightness test uses (block ranges when planning, windows within a block), with
    the same float64 slack as the other bounds plus room for the rounding of the means themselves.
    """
    return math.sqrt(_slack(limit) / d) + 1e-9


def grid_edges(px: int, g: int = GRID) -> np.ndarray:
    """Block boundaries symmetric about the centre, so a quarter turn maps the grid onto itself."""
    edges = [round(i * px / g) for i in range(g + 1)]
    for i in range(g // 2 + 1, g + 1):
        edges[i] = px - edges[g - i]
    return np.array(edges, dtype=np.int64)


def grid_sums(block: np.ndarray, px: int, edges: np.ndarray) -> np.ndarray:
    """Per-block, per-channel sums of each tensor: (n, g, g, 3) float64 (exact integers)."""
    cube = block.reshape(-1, px, px, 3)
    rows = np.add.reduceat(cube, edges[:-1], axis=1, dtype=np.int64)
    return np.add.reduceat(rows, edges[:-1], axis=2, dtype=np.int64).astype(np.float64)


def window_pairs(mean_a: np.ndarray, mean_b: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with |mean_a[i] - mean_b[j]| <= radius, found by sorting (no n x m work)."""
    order_a, order_b = np.argsort(mean_a, kind="stable"), np.argsort(mean_b, kind="stable")
    sorted_b = mean_b[order_b]
    lo = np.searchsorted(sorted_b, mean_a[order_a] - radius, side="left")
    hi = np.searchsorted(sorted_b, mean_a[order_a] + radius, side="right")
    counts = hi - lo
    total = int(counts.sum())
    ii = np.repeat(np.arange(len(mean_a)), counts)
    jj = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(total)
    return order_a[ii], order_b[jj]


def _exact_sums(a: np.ndarray, turned: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """sum((a[i] - turned[j])^2) per pair, exact in float64, in memory-bounded row and column slices."""
    out = np.zeros(len(i), dtype=np.float64)
    rows = max(1, min(len(i), (1 << 23) // a.shape[1]))
    step = _column_step(rows)
    for start in range(0, len(i), rows):
        ii, jj = i[start : start + rows], j[start : start + rows]
        for col in range(0, a.shape[1], step):
            cols = slice(col, col + step)
            diff = a[ii, cols].astype(np.float64) - turned[jj, cols]
            out[start : start + rows] += np.einsum("ij,ij->i", diff, diff)
    return out


def candidates(
    grid_a: np.ndarray,
    grid_b: np.ndarray,
    px: int,
    rotate: bool,
    limit: float,
    dims_a: np.ndarray | None = None,
    dims_b: np.ndarray | None = None,
    upper: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Pairs (i, j) and the turns (n_pairs x n_turns bool) that no lower bound rules out.

    Works on block-sum grids alone (see grid_sums), never on tensors. Bounds, each never above the
    true sum S (averaging never increases a squared error): mean brightness d*(mean_a - mean_b)^2,
    per-channel sums, then the GRID x GRID grid for each turn. Returns None when so many pairs survive
    that one matrix product per turn is cheaper (block_matches).
    """
    d = tensor_values(px)
    if math.isinf(limit) or limit >= d * 255 * 255:
        return None
    ca, cb = grid_a.sum(axis=(1, 2)), grid_b.sum(axis=(1, 2))
    i, j = window_pairs(ca.sum(axis=1) / d, cb.sum(axis=1) / d, mean_radius(limit, d))
    keep = i < j if upper else np.ones(len(i), dtype=bool)
    if dims_a is not None:
        keep &= (dims_a[i] == dims_b[j]).all(axis=1)
    i, j = i[keep], j[keep]
    if len(i) > DENSE_FRACTION * len(grid_a) * len(grid_b):
        return None
    px2 = float(px * px)
    keep = np.empty(len(i), dtype=bool)
    for start in range(0, len(i), PAIR_CHUNK):
        sl = slice(start, start + PAIR_CHUNK)
        keep[sl] = ((ca[i[sl]] - cb[j[sl]]) ** 2).sum(axis=1) / px2 <= _slack(limit)
    i, j = i[keep], j[keep]
    sizes = np.diff(grid_edges(px)).astype(np.float64)
    weights = (sizes[:, None] * sizes[None, :])[None, :, :, None]
    turns = 4 if rotate else 1
    alive = np.empty((len(i), turns), dtype=bool)
    for k in range(turns):
        gbk = np.rot90(grid_b, k, axes=(1, 2))
        for start in range(0, len(i), PAIR_CHUNK):
            sl = slice(start, start + PAIR_CHUNK)
            bound = ((grid_a[i[sl]] - gbk[j[sl]]) ** 2 / weights).sum(axis=(1, 2, 3))
            alive[sl, k] = bound <= _slack(limit)
    keep = alive.any(axis=1)
    return i[keep], j[keep], alive[keep]


def exact_matches(
    a: np.ndarray, b: np.ndarray, px: int, limit: float, i: np.ndarray, j: np.ndarray, alive: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact S = min over the live turns of sum((a[i] - turn(b[j]))^2); keep the pairs within the limit."""
    best = np.full(len(i), np.inf)
    for k, turned in enumerate(turns(b, px, alive.shape[1] > 1)):
        idx = np.nonzero(alive[:, k])[0]
        if len(idx):
            best[idx] = np.minimum(best[idx], _exact_sums(a, turned, i[idx], j[idx]))
    hit = best <= limit
    return i[hit], j[hit], best[hit]


def pruned_matches(
    a: np.ndarray,
    b: np.ndarray,
    px: int,
    rotate: bool,
    limit: float,
    dims_a: np.ndarray | None = None,
    dims_b: np.ndarray | None = None,
    upper: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same answer as block_matches, with lower bounds discarding pairs before any full comparison."""
    edges = grid_edges(px)
    found = candidates(
        grid_sums(a, px, edges), grid_sums(b, px, edges), px, rotate, limit, dims_a, dims_b, upper
    )
    if found is None:
        mask = same_dim_mask(dims_a, dims_b) if dims_a is not None else None
        return block_matches(a, b, px, rotate, limit, mask, upper)
    return exact_matches(a, b, px, limit, *found)


def no_matches() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An empty (i, j, S) edge list."""
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)

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
    for k in range(4):
        yield turned(block, px, k)


def turned(block: np.ndarray, px: int, k: int) -> np.ndarray:
    """The block's rows (px x px x 3 tensors) turned k quarter turns (np.rot90), as a new array."""
    cube = block.reshape(-1, px, px, 3)
    return np.ascontiguousarray(np.rot90(cube, k, axes=(1, 2))).reshape(len(block), -1)


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


GRID = 5  # coarse grid side of the block sums stored per tensor (the region bound sums its cells)
PAIR_CHUNK = 1 << 16  # candidate pairs handled at once (bounds memory)


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


def exact_matches(
    a: np.ndarray, b: np.ndarray, px: int, limit: float, i: np.ndarray, j: np.ndarray, alive: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact S = min over the live turns of sum((a[i] - turn(b[j]))^2); keep the pairs within the limit.
    Only the rows of b a turn is live for are turned."""
    best = np.full(len(i), np.inf)
    for k in range(alive.shape[1]):
        idx = np.nonzero(alive[:, k])[0]
        if not len(idx):
            continue
        rows, at = np.unique(j[idx], return_inverse=True)
        rows_b = turned(b[rows], px, k) if k else b[rows]
        best[idx] = np.minimum(best[idx], _exact_sums(a, rows_b, i[idx], at.reshape(-1)))
    hit = best <= limit
    return i[hit], j[hit], best[hit]


def no_matches() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An empty (i, j, S) edge list."""
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)


# ---- coarse regions: the cheap first bound, and the index that finds the pairs it keeps ----------------

# Five regions of the GRID x GRID cells: four 2 x 3 arms of a pinwheel around the centre cell. A quarter
# turn maps each arm onto the next, so a turned image's region sums are its own, permuted.
PINWHEEL = np.array(
    [
        [0, 0, 0, 1, 1],
        [0, 0, 0, 1, 1],
        [3, 3, 4, 1, 1],
        [3, 3, 2, 2, 2],
        [3, 3, 2, 2, 2],
    ]
)
REGIONS = 5
PROJECTED = 5  # coordinates the neighbour index searches in (of REGIONS * 3)


def _region_turns() -> np.ndarray:
    """REGION_TURNS[k][q]: the region of the unturned image that k quarter turns (np.rot90) bring to q."""
    out = []
    for k in range(4):
        turned = np.rot90(PINWHEEL, k)
        perm = [int(np.unique(turned[PINWHEEL == q]).item()) for q in range(REGIONS)]
        out.append(perm)
    return np.array(out)


REGION_TURNS = _region_turns()


def region_sums(grids: np.ndarray) -> np.ndarray:
    """Per-region, per-channel sums (n, REGIONS, 3) int64 of (n, GRID, GRID, 3) block-sum grids."""
    grids = np.asarray(grids, dtype=np.int64).reshape(len(grids), GRID * GRID, 3)
    labels = PINWHEEL.reshape(-1)
    return np.stack([grids[:, labels == q].sum(axis=1) for q in range(REGIONS)], axis=1)


def region_pixels(px: int) -> np.ndarray:
    """Pixels in each region at this px_size (the arms are equal: the grid edges are symmetric)."""
    sizes = np.diff(grid_edges(px))
    cells = (sizes[:, None] * sizes[None, :]).reshape(-1)
    return np.array([cells[PINWHEEL.reshape(-1) == q].sum() for q in range(REGIONS)], dtype=np.float64)


def region_features(sums: np.ndarray, px: int, turn: int = 0) -> np.ndarray:
    """Points whose squared distance is a lower bound on S: for tensors a and b turned k times,
    |f(a, 0) - f(b, k)|^2 = sum over regions and channels of (region sum difference)^2 / pixels <= S
    (averaging never increases a squared error)."""
    scaled = sums[:, REGION_TURNS[turn]] / np.sqrt(region_pixels(px))[None, :, None]
    return scaled.reshape(len(sums), REGIONS * 3)


def near_pairs(
    fa: np.ndarray, fb: np.ndarray, limit: float, itself: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with |fa[i] - fb[j]|^2 <= limit (float64 slack only); `itself` says fb[j] is fa[j] for
    j < len(fa), so each such point finds itself (only points that find more are listed).

    A k-d tree of fa, asked for each point of fb, finds them on a projection onto the points' main axes (an
    orthonormal projection never lengthens a distance, so no pair is lost); then the full distance decides.
    """
    from scipy.spatial import cKDTree

    if not len(fa) or not len(fb):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    both = np.concatenate([fa, fb])
    centre = both.mean(axis=0)
    sample = both[:: max(1, len(both) // 4096)] - centre
    axes = np.linalg.eigh(sample.T @ sample)[1][:, ::-1][:, :PROJECTED]  # the widest axes first
    scale = float(np.abs(both).max()) + 1.0
    radius = math.sqrt(_slack(limit)) * (1 + 1e-9) + 1e-9 * scale  # room for the projection's rounding
    # einsum, not BLAS: a (n x 15) @ (15 x 5) product gains nothing from threads that a busy worker lacks
    tree = cKDTree(np.einsum("ij,jk->ik", fa - centre, axes))
    points = np.einsum("ij,jk->ik", fb - centre, axes)
    counts = tree.query_ball_point(points, radius, return_length=True)
    hit = np.flatnonzero(counts > np.where(np.arange(len(fb)) < len(fa), int(itself), 0))
    found = tree.query_ball_point(points[hit], radius) if len(hit) else []
    j = np.repeat(hit, counts[hit]).astype(np.int64)
    i = np.concatenate([np.asarray(f, dtype=np.int64) for f in found]) if len(hit) else j
    keep = np.empty(len(i), dtype=bool)
    for start in range(0, len(i), PAIR_CHUNK):
        sl = slice(start, start + PAIR_CHUNK)
        keep[sl] = ((fa[i[sl]] - fb[j[sl]]) ** 2).sum(axis=1) <= _slack(limit)
    return i[keep], j[keep]


def region_candidates(
    sums_a: np.ndarray, sums_b: np.ndarray, px: int, rotate: bool, limit: float, upper: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j) and the turns of b (n_pairs x n_turns bool) that the region bound leaves in doubt;
    with `upper` (a set against itself) each pair once, i < j. One k-d tree holds every turn of b, asked
    once per image of a (four trees asked four times cost about three times more)."""
    turns = 4 if rotate else 1
    width = max(1, len(sums_b))
    fb = np.concatenate([region_features(sums_b, px, k) for k in range(turns)])
    jk, i = near_pairs(fb, region_features(sums_a, px), limit, itself=upper)
    j, k = jk % width, jk // width
    if upper:  # a set against itself: (i, j) at turn k is the pair (j, i) at turn -k
        keep = i != j
        i, j, k = i[keep], j[keep], k[keep]
        i, j, k = np.minimum(i, j), np.maximum(i, j), np.where(i < j, k, (4 - k) % 4)
    pair, inverse = np.unique(i * width + j, return_inverse=True)
    alive = np.zeros((len(pair), turns), dtype=bool)
    alive[inverse, k] = True
    return pair // width, pair % width, alive

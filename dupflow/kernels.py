"""Numeric kernels (numpy in, numpy out): exact sums of squared differences between tensor blocks.

For uint8 tensors a, b of d values, S(a, b) = sum((a - b)^2) = |a|^2 + |b|^2 - 2 a.b is an integer below
2^53 for every px_size dupflow accepts (d * 255^2 <= 4.9e12), so float64 products and sums of these
integers are exact whatever order BLAS adds them in: S is computed exactly, and MSE = S / d.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def threshold_value(threshold: float) -> Fraction:
    """The threshold as the decimal the user wrote (0.03 means 3/100, not the binary float below it)."""
    return Fraction(repr(float(threshold))) if isinstance(threshold, float) else Fraction(threshold)


def match_limit(threshold: float, d: int) -> float:
    """The largest integer S with S / d <= threshold, decided in exact rational arithmetic."""
    if math.isinf(threshold):
        return float(d * 255 * 255)
    return float(min(math.floor(threshold_value(threshold) * d), d * 255 * 255))


def rotations(block: np.ndarray, px: int, rotate: bool) -> list[np.ndarray]:
    """The block (n x d, rows are px x px x 3 tensors) turned by 0, 90, 180, 270 degrees, or just 0."""
    if not rotate:
        return [block]
    cube = block.reshape(-1, px, px, 3)
    return [np.ascontiguousarray(np.rot90(cube, k, axes=(1, 2))).reshape(len(block), -1) for k in range(4)]


def squared_norms(block: np.ndarray) -> np.ndarray:
    """|a|^2 per row, exact, as float64."""
    wide = block.astype(np.float64)
    return np.einsum("ij,ij->i", wide, wide)


def pair_sums(a: np.ndarray, b: np.ndarray, px: int, rotate: bool) -> np.ndarray:
    """S[i, j] = min over rotations of b[j] of sum((a[i] - rot(b[j]))^2); exact integers in float64."""
    a64 = a.astype(np.float64)
    norms = squared_norms(a)[:, None] + squared_norms(b)[None, :]
    best = None
    for turned in rotations(b, px, rotate):
        sums = norms - 2.0 * (a64 @ turned.astype(np.float64).T)
        best = sums if best is None else np.minimum(best, sums, out=best)
    return best


def same_dim_mask(dims_a: np.ndarray, dims_b: np.ndarray) -> np.ndarray:
    """True where two images' {width, height} are equal as unordered pairs (dims rows are sorted)."""
    return (dims_a[:, None, 0] == dims_b[None, :, 0]) & (dims_a[:, None, 1] == dims_b[None, :, 1])


def block_matches(a: np.ndarray, b: np.ndarray, px: int, rotate: bool, limit: float,
                  mask: np.ndarray | None = None, upper: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def no_matches() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An empty (i, j, S) edge list."""
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)

"""Per-tensor summaries the search plans with: content hashes (plain and rotation-invariant) and channel sums."""

from __future__ import annotations

import hashlib

import numpy as np

from . import kernels

__all__ = ["summarize"]


def summarize(block: np.ndarray, px: int, grids: np.ndarray) -> list[dict]:
    """What the search plans with, per tensor: content hashes (plain, and the least over its four quarter
    turns, equal for two tensors iff some turn makes them equal) and its channel sums (from its grid)."""
    turned = [block] + [
        np.ascontiguousarray(t).reshape(len(block), -1) for t in kernels.rotations(block, px, True)[1:]
    ]
    sums = grids.sum(axis=(1, 2)).astype(np.int64)

    def digest(row: np.ndarray) -> bytes:
        return hashlib.blake2b(row.data, digest_size=16).digest()

    out = []
    for k in range(len(block)):
        hashes = [digest(form[k]) for form in turned]
        out.append(
            {
                "hash": hashes[0],
                "hash_turned": min(hashes),
                "sum_r": int(sums[k, 0]),
                "sum_g": int(sums[k, 1]),
                "sum_b": int(sums[k, 2]),
            }
        )
    return out

"""The numeric kernels alone: exact sums against plain numpy, rotations, masks, limits."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from dupflow import kernels


def _brute(a, b, px, rotate):
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            x = a[i].reshape(px, px, 3).astype(np.int64)
            y = b[j].reshape(px, px, 3).astype(np.int64)
            out[i, j] = min(((x - np.rot90(y, k)) ** 2).sum() for k in (range(4) if rotate else [0]))
    return out


def test_pair_sums_are_exact_integers():
    rng = np.random.default_rng(0)
    px = 12
    a = rng.integers(0, 256, (7, 3 * px * px), dtype=np.uint8)
    b = rng.integers(0, 256, (5, 3 * px * px), dtype=np.uint8)
    b[0] = np.rot90(a[3].reshape(px, px, 3), 3).reshape(-1)  # a quarter turn clockwise of a[3]
    for rotate in (True, False):
        got = kernels.pair_sums(a, b, px, rotate)
        assert np.array_equal(got, _brute(a, b, px, rotate))
    assert kernels.pair_sums(a, b, px, True)[3, 0] == 0
    assert kernels.pair_sums(a, b, px, False)[3, 0] > 0


def test_extreme_values_stay_exact_at_the_largest_px():
    """All-0 against all-255 at px 5000 would be 4.9e12: the float64 path must still be exact."""
    px = 5000
    d = 3 * px * px
    assert d * 255 * 255 < 2**53
    a = np.zeros((1, 3 * 40 * 40), np.uint8)
    b = np.full((1, 3 * 40 * 40), 255, np.uint8)
    assert kernels.pair_sums(a, b, 40, False)[0, 0] == 3 * 40 * 40 * 255**2


def test_match_limit_is_the_exact_floor():
    d = 7500
    assert kernels.match_limit(0, d) == 0
    assert kernels.match_limit(5, d) == 37500
    assert kernels.match_limit(0.1, d) == 750  # 0.1 * 7500 is 750 exactly as a decimal
    assert kernels.match_limit(1 / 3, d) == 2499  # 0.3333333333333333 * 7500 = 2499.99...
    assert kernels.threshold_value(0.03) == Fraction(3, 100)
    assert kernels.match_limit(float("inf"), d) == d * 255 * 255
    assert kernels.match_limit(10**9, d) == d * 255 * 255


def test_grid_turns_with_the_image():
    rng = np.random.default_rng(2)
    for px in (10, 13, 50, 64):
        block = rng.integers(0, 256, (3, 3 * px * px), dtype=np.uint8)
        edges = kernels.grid_edges(px)
        grid = kernels.grid_sums(block, px, edges)
        for k, turned in enumerate(kernels.rotations(block, px, True)):
            assert np.array_equal(kernels.grid_sums(turned, px, edges), np.rot90(grid, k, axes=(1, 2)))


def _dense(a, b, px, rotate, limit, upper=False):
    """The reference: every pair's exact sum from the full matrix product (`pair_sums`), kept if within."""
    sums = kernels.pair_sums(a, b, px, rotate)
    keep = sums <= limit
    if upper:
        keep &= np.triu(np.ones(keep.shape, dtype=bool), k=1)
    i, j = np.nonzero(keep)
    return i, j, sums[i, j]


def _pruned(a, b, px, rotate, limit, upper=False):
    """The search's path on tensors: region sums from the grids, the k-d tree, exact sums of survivors."""
    edges = kernels.grid_edges(px)
    sa, sb = (kernels.region_sums(kernels.grid_sums(t, px, edges)) for t in (a, b))
    i, j, alive = kernels.region_candidates(sa, sb, px, rotate, limit, upper)
    return kernels.exact_matches(a, b, px, limit, i, j, alive)


def test_region_turns_follow_the_grid_and_bound_every_turn():
    """A turned image's region sums are its own, permuted; the region bound never exceeds the true S."""
    rng = np.random.default_rng(5)
    for px in (10, 16, 50):
        a = rng.integers(0, 256, (30, 3 * px * px), dtype=np.uint8)
        grids = kernels.grid_sums(a, px, kernels.grid_edges(px))
        sums = kernels.region_sums(grids)
        for k in range(4):
            turned = kernels.region_sums(np.rot90(grids, k, axes=(1, 2)))
            assert np.array_equal(turned, sums[:, kernels.REGION_TURNS[k]])
            exact = (
                (a[:, None, :].astype(np.int64) - kernels.rotations(a, px, True)[k][None].astype(np.int64))
                ** 2
            ).sum(-1)
            fa, fb = kernels.region_features(sums, px), kernels.region_features(sums, px, k)
            bound = ((fa[:, None, :] - fb[None, :, :]) ** 2).sum(-1)
            assert (bound <= exact * (1 + 1e-12) + 1e-6).all()


@pytest.mark.parametrize("px", [10, 16, 50])
@pytest.mark.parametrize("limit_mse", [0.5, 5, 50, 500])
def test_pruned_path_equals_the_dense_kernel(px, limit_mse):
    """Pruning is exact: the same pairs and sums as the full matrix product, on near and far images."""
    rng = np.random.default_rng(px)
    d = 3 * px * px
    base = rng.integers(0, 60, (20, d)) + rng.integers(0, 190, (20, 1))  # spread mean brightness
    variants = [np.clip(base + rng.integers(-s, s + 1, base.shape), 0, 255) for s in (1, 3, 8, 20)]
    turned = kernels.rotations(base.astype(np.uint8), px, True)[1].astype(np.int64)
    a = np.concatenate([base] + variants[:2]).astype(np.uint8)
    b = np.concatenate(variants[2:] + [turned, np.clip(turned + 2, 0, 255)]).astype(np.uint8)
    limit = kernels.match_limit(limit_mse, d)
    for rotate in (True, False):
        want = _dense(a, b, px, rotate, limit)
        got = _pruned(a, b, px, rotate, limit)
        assert len(want[0]) > 0 or not rotate
        assert sorted(zip(*[x.tolist() for x in want])) == sorted(zip(*[x.tolist() for x in got]))
        want = _dense(a, a, px, rotate, limit, upper=True)
        got = _pruned(a, a, px, rotate, limit, upper=True)
        assert sorted(zip(*[x.tolist() for x in want])) == sorted(zip(*[x.tolist() for x in got]))

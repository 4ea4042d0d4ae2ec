"""dupflow's matched pairs and MSEs equal a brute-force float64 reference bit for bit."""

from __future__ import annotations

import itertools
import os
import shutil
from fractions import Fraction

import numpy as np
import pytest
from imagegen import make_photo_set, photo, reference_tensor, save
from PIL import Image

import dupflow


def _near_variants(root: str) -> None:
    """Pairs at many distances, so thresholds 5, 50 and 500 each select different pairs."""
    base = photo(77, 90, 60)
    save(base, f"{root}/near/base.png")
    for shift in (1, 2, 3, 7, 16):
        save(np.clip(base.astype(int) + shift, 0, 255).astype(np.uint8), f"{root}/near/plus{shift}.png")
    noise = np.random.default_rng(5).normal(0, 4, base.shape)
    save(np.clip(base + noise, 0, 255).astype(np.uint8), f"{root}/near/noisy.png")
    save(base, f"{root}/near/base_q95.jpg", quality=95)
    save(
        np.rot90(np.clip(base.astype(int) + 2, 0, 255).astype(np.uint8), 3).copy(),
        f"{root}/near/rot270_plus2.png",
    )
    save(np.asarray(Image.fromarray(base).resize((60, 40))), f"{root}/near/smaller.png")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("exact"))
    make_photo_set(f"{root}/a", n_unrelated=6, seed=1)
    make_photo_set(f"{root}/b", n_unrelated=3, seed=2)
    _near_variants(f"{root}/a")
    shutil.copy(f"{root}/a/img_00.png", f"{root}/b/cross_copy.png")  # a match only across inputs
    return root


def _files(root: str) -> list[str]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        out += [os.path.join(folder, n) for n in names]
    return sorted(out)


def reference_pairs(
    paths: list[str],
    px: int,
    threshold: float,
    rotate: bool,
    same_dim: bool,
    groups: list[list[int]] | None = None,
) -> dict[tuple[str, str], float]:
    """Every pair within threshold: plain float64 sums of squares, decisions in exact rationals."""
    tensors = [reference_tensor(p, px).astype(np.float64) for p in paths]
    sizes = [tuple(sorted(Image.open(p).size)) for p in paths]
    d = 3 * px * px
    groups = groups or [list(range(len(paths)))]
    found = {}
    for members in groups:
        for i, j in itertools.combinations(members, 2):
            if same_dim and sizes[i] != sizes[j]:
                continue
            turns = range(4) if rotate else range(1)
            best = min(((tensors[i] - np.rot90(tensors[j], k)) ** 2).sum() for k in turns)
            if Fraction(int(best), d) <= Fraction(str(threshold)):  # the decimal the user wrote
                a, b = sorted((paths[i], paths[j]))
                found[(a, b)] = best / d
    return found


@pytest.mark.parametrize("px", [10, 50, 64])
def test_pairs_equal_brute_force(dataset, client, tmp_path, px):
    paths = _files(f"{dataset}/a")
    dif = dupflow.build(
        f"{dataset}/a", px_size=px, show_progress=False, scheduler=client, catalog=str(tmp_path / "cat")
    )
    checked = 0
    for threshold, rotate, same_dim in itertools.product([0, 5, 50, 500], [True, False], [True, False]):
        found = dupflow.search(
            dif, similarity=threshold, rotate=rotate, same_dim=same_dim, show_progress=False
        )
        expected = reference_pairs(paths, px, threshold, rotate, same_dim)
        got = {(a, b): mse for a, b, mse in found.pairs}
        assert got.keys() == expected.keys(), (threshold, rotate, same_dim)
        for key, mse in expected.items():
            assert got[key] == mse and type(got[key]) is float, (key, got[key], mse)
        checked += len(expected)
    assert checked > 100  # the dataset really exercises every threshold


def test_small_blocks_give_the_same_pairs(dataset, client, tmp_path):
    """Cutting the images into many blocks (chunksize) changes the task graph, never the answer."""
    dif = dupflow.build(f"{dataset}/a", show_progress=False, scheduler=client, catalog=str(tmp_path / "cat"))
    whole = dupflow.search(dif, similarity=50, same_dim=False, show_progress=False)
    pieces = dupflow.search(dif, similarity=50, same_dim=False, chunksize=3, show_progress=False)
    assert whole.pairs == pieces.pairs and whole.result == pieces.result
    assert pieces.stats["dupflow"]["search"]["band_size"] == 3


def test_in_folder_pairs_stay_within_each_input(dataset, client, tmp_path):
    a, b = f"{dataset}/a", f"{dataset}/b"
    dif = dupflow.build(
        a, b, in_folder=True, px_size=32, show_progress=False, scheduler=client, catalog=str(tmp_path / "cat")
    )
    found = dupflow.search(dif, similarity=50, same_dim=False, show_progress=False)
    paths = _files(a) + _files(b)
    n_a = len(_files(a))
    expected = reference_pairs(paths, 32, 50, True, False, [list(range(n_a)), list(range(n_a, len(paths)))])
    assert {(x, y): m for x, y, m in found.pairs} == expected
    union = dupflow.search(
        dupflow.build(a, b, px_size=32, show_progress=False, scheduler=client, catalog=str(tmp_path / "cat")),
        similarity=50,
        same_dim=False,
        show_progress=False,
    )
    cross = (f"{a}/img_00.png", f"{b}/cross_copy.png")
    assert cross in {(x, y) for x, y, _ in union.pairs} and cross not in expected
    assert set(found.result) <= {a, b}


def test_threshold_decision_is_exact_at_the_boundary(tmp_path, client):
    """A pair whose MSE equals the threshold exactly matches; one unit of squared error more does not."""
    px = 10
    base = np.full((px, px, 3), 100, np.uint8)
    one = base.copy()
    one[0, 0, 0] = 103  # S = 9
    two = base.copy()
    two[0, 0, 0] = 103
    two[0, 0, 1] = 101  # S = 10
    for name, arr in (("base", base), ("one", one), ("two", two)):
        save(arr, tmp_path / "img" / f"{name}.png")
    d = 3 * px * px
    dif = dupflow.build(
        str(tmp_path / "img"),
        px_size=px,
        show_progress=False,
        scheduler=client,
        catalog=str(tmp_path / "cat"),
    )
    found = dupflow.search(dif, similarity=9 / d, show_progress=False)  # 9/300 = 0.03, not exact in binary
    got = {(a, b): m for a, b, m in found.pairs}
    base_p, one_p, two_p = (str(tmp_path / "img" / f"{n}.png") for n in ("base", "one", "two"))
    assert (base_p, one_p) in got and got[(base_p, one_p)] == 9 / d
    assert (base_p, two_p) not in got
    assert (one_p, two_p) in got  # S = 1
    assert Fraction(9 / d) < Fraction(9, d)  # the float is below 9/300: a binary comparison would miss it
    above = dupflow.search(dif, similarity=8.5 / d, show_progress=False)
    assert (base_p, one_p) not in {(a, b) for a, b, _ in above.pairs}


def test_hash_classes_split_into_copies_equal_as_is_or_turned():
    """A class is split by tensor: copies equal as they are, and (rotating) copies equal after a quarter
    turn, whichever slice of the class they are read in; without rotation a turned copy stands alone."""
    from dupflow import kernels
    from dupflow.compare import _split_equal

    px = 4
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 1, px * px * 3), dtype=np.uint8)
    turn = kernels.turned
    rows = np.concatenate([a, b, turn(a, px, 1), a, turn(b, px, 3), turn(a, px, 2)])
    fetch = rows.__getitem__
    for step in (1, 2, 10):
        assert _split_equal(fetch, len(rows), px, True, step) == [[0, 2, 3, 5], [1, 4]]
        assert _split_equal(fetch, len(rows), px, False, step) == [[0, 3], [1], [2], [4], [5]]

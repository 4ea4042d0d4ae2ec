"""The contract's grouping rule, result/lower_quality formats and the stats document."""

from __future__ import annotations

import json

import numpy as np
from imagegen import photo, save

import dupflow
from dupflow.groups import greedy_groups, quality_order


def _shift(arr, k):
    return np.clip(arr.astype(int) + k, 0, 255).astype(np.uint8)


def test_chain_is_split_around_the_best_image():
    """c0~c1~c2 with c0 !~ c2: the best image takes its matches; the rest is grouped again."""
    paths = ["c0", "c1", "c2", "d"]
    pixels = np.array([100, 400, 100, 50])
    ranking = quality_order(np.arange(4), pixels, paths)
    assert ranking == [1, 2, 0, 3]
    i, j, s = np.array([0, 1]), np.array([1, 2]), np.array([4.0, 4.0])
    assert greedy_groups(ranking, i, j, s) == [(1, [(0, 4.0), (2, 4.0)])]
    # with c0 best, c2 is left alone (it matches only c1, already placed)
    ranking = quality_order(np.arange(4), np.array([500, 400, 100, 50]), paths)
    assert greedy_groups(ranking, i, j, s) == [(0, [(1, 4.0)])]


def test_ties_on_pixels_keep_the_greatest_path():
    ranking = quality_order(np.arange(3), np.array([10, 10, 10]), ["a/x", "b/x", "a/y"])
    assert ranking == [1, 2, 0]


def test_grouping_rule_on_real_images(run, tmp_path):
    base = photo(3, 64, 48)
    save(base, tmp_path / "p" / "small.png")  # 64x48
    save(
        np.asarray(__import__("PIL.Image").Image.fromarray(base).resize((128, 96))),
        tmp_path / "p" / "big.png",
    )
    save(_shift(base, 2), tmp_path / "p" / "plus2.png")  # MSE 4 to small
    save(_shift(base, 4), tmp_path / "p" / "plus4.png")  # MSE 4 to plus2, 16 to small
    save(photo(99, 64, 48), tmp_path / "p" / "other.png")
    root = str(tmp_path / "p")
    _, found = run(root, search={"similarity": 5, "same_dim": False})
    result = found.result
    primaries = list(result)
    # big.png (most pixels) is too far from the others (MSE 7.7 to small), so small.png ranks next and
    # takes plus2 (MSE 3.9); plus4 (MSE 15.6 to small) is then grouped on its own terms or left alone
    assert f"{root}/big.png" not in primaries
    assert primaries[0] == f"{root}/small.png" and result[primaries[0]][0][0] == f"{root}/plus2.png"
    placed = [m for matches in result.values() for m, _ in matches] + primaries
    assert len(placed) == len(set(placed))  # each image in at most one group
    for matches in result.values():
        assert all(0 <= mse <= 5 for _, mse in matches)
        assert matches == sorted(matches, key=lambda e: (e[1], e[0]))
    assert set(found.lower_quality) == {m for ms in result.values() for m, _ in ms}
    assert found.lower_quality == sorted(found.lower_quality)
    assert f"{root}/other.png" not in placed
    # every removed file keeps a primary within the threshold
    keep = set(primaries)
    pairs = {(a, b): m for a, b, m in found.pairs}
    for lq in found.lower_quality:
        assert any(pairs.get(tuple(sorted((lq, p))), 99) <= 5 for p in keep)


def test_stats_structure_and_key_order(run, tmp_path):
    save(photo(1, 40, 30), tmp_path / "s" / "a.png")
    save(photo(1, 40, 30), tmp_path / "s" / "b.png")
    (tmp_path / "s" / "notes.txt").write_text("hi")
    dif, found = run(str(tmp_path / "s"))
    stats = found.stats
    assert list(stats) == ["directory", "total_files", "invalid_files", "process", "dupflow"]
    assert list(stats["invalid_files"]) == ["count", "logs"]
    assert list(stats["process"]) == ["build", "search"]
    assert list(stats["process"]["build"]) == ["duration", "parameters"]
    assert list(stats["process"]["build"]["duration"]) == ["start", "end", "seconds_elapsed"]
    assert list(stats["process"]["build"]["parameters"]) == [
        "recursive",
        "in_folder",
        "limit_extensions",
        "px_size",
        "processes",
    ]
    assert list(stats["process"]["search"]) == ["duration", "parameters", "files_searched", "matches_found"]
    assert list(stats["process"]["search"]["parameters"]) == [
        "similarity_mse",
        "rotate",
        "same_dim",
        "processes",
        "chunksize",
    ]
    assert stats["total_files"] == 3 and stats["invalid_files"]["count"] == 1
    assert stats["invalid_files"]["logs"] == {str(tmp_path / "s" / "notes.txt"): "Unsupported file type"}
    assert stats["process"]["search"]["files_searched"] == 2
    assert stats["process"]["search"]["matches_found"] == {"duplicates": 1, "similar": 0}
    json.dumps(stats)  # plain JSON types throughout
    # the build's stats are untouched, and two searches do not share one dict
    assert "search" not in dif.stats["process"]
    other = dupflow.search(dif, similarity="similar", show_progress=False)
    assert found.stats["process"]["search"]["parameters"]["similarity_mse"] == 0
    assert other.stats["process"]["search"]["parameters"]["similarity_mse"] == 5
    assert other.stats is not found.stats


def test_in_folder_result_is_keyed_by_input(run, tmp_path):
    for folder in ("f1", "f2", "f3"):
        save(photo(7, 40, 30), tmp_path / folder / "x.png")
    save(photo(7, 40, 30), tmp_path / "f1" / "deep" / "x_dup.png")
    save(photo(8, 40, 30), tmp_path / "f2" / "y.png")
    save(photo(8, 40, 30), tmp_path / "f2" / "y_dup.png")
    f1, f2, f3 = (str(tmp_path / f) for f in ("f1", "f2", "f3"))
    _, found = run(f3, f1 + "/", f2, in_folder=True)
    assert list(found.result) == [f1, f2]  # input order, normalized; f3 has no group
    assert found.result[f1] == {f"{f1}/x.png": [[f"{f1}/deep/x_dup.png", 0.0]]}
    assert found.result[f2] == {f"{f2}/y_dup.png": [[f"{f2}/y.png", 0.0]]}
    assert found.lower_quality == [f"{f1}/deep/x_dup.png", f"{f2}/y.png"]

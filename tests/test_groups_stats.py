"""The contract's grouping rule, result/lower_quality formats and the stats document."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
from imagegen import photo, save
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import dupflow
from dupflow.groups import greedy_groups, quality_order


def _shift(arr, k):
    return np.clip(arr.astype(int) + k, 0, 255).astype(np.uint8)


def test_chain_is_split_around_the_best_image():
    """c0~c1~c2 with c0 !~ c2: the best image takes its matches; the rest is grouped again."""
    paths = ["c0", "c1", "c2", "d"]
    pixels = np.array([100, 400, 100, 50])
    ranking = quality_order(np.arange(4), pixels, paths)
    assert ranking == [1, 0, 2, 3]
    i, j, s = np.array([0, 1]), np.array([1, 2]), np.array([4.0, 4.0])
    assert greedy_groups(ranking, i, j, s) == [(1, [(0, 4.0), (2, 4.0)])]
    # with c0 best, c2 is left alone (it matches only c1, already placed)
    ranking = quality_order(np.arange(4), np.array([500, 400, 100, 50]), paths)
    assert greedy_groups(ranking, i, j, s) == [(0, [(1, 4.0)])]


def test_ties_on_everything_else_keep_the_smallest_path():
    ranking = quality_order(np.arange(3), np.array([10, 10, 10]), ["a/x", "b/x", "a/y"])
    assert ranking == [0, 2, 1]


# pixels, mtime, bytes, path: each rule sorts by its own key first, then the resolution rule's keys
RANKING_CASES = {
    "resolution": ["big_new", "old_large", "old_small", "mid_a", "mid_b", "new_small", "unknown_time"],
    "oldest": ["old_large", "old_small", "mid_a", "mid_b", "big_new", "new_small", "unknown_time"],
    "newest": ["big_new", "new_small", "mid_a", "mid_b", "old_large", "old_small", "unknown_time"],
    "largest": ["old_large", "big_new", "mid_a", "mid_b", "old_small", "new_small", "unknown_time"],
}


@pytest.mark.parametrize("keep", sorted(RANKING_CASES))
def test_quality_order_for_each_keep_rule(keep):
    files = {  # name: (pixels, mtime, bytes)
        "big_new": (400, 300.0, 500),
        "old_small": (100, 100.0, 200),
        "old_large": (100, 100.0, 900),
        "mid_b": (100, 200.0, 400),
        "mid_a": (100, 200.0, 400),
        "new_small": (100, 300.0, 100),
        "unknown_time": (100, np.nan, 100),
    }
    names = list(files)
    pixels, mtime, nbytes = (np.array([files[n][k] for n in names]) for k in range(3))
    if keep == "resolution":  # the default
        ranking = quality_order(np.arange(len(names)), pixels, names, mtime, nbytes)
    else:
        ranking = quality_order(np.arange(len(names)), pixels, names, mtime, nbytes, keep)
    assert [names[p] for p in ranking] == RANKING_CASES[keep]
    # a reference image comes first whatever its own rank, the others keep their order
    reference = np.array([n == "unknown_time" for n in names])
    ranked = quality_order(np.arange(len(names)), pixels, names, mtime, nbytes, keep, reference)
    assert [names[p] for p in ranked] == ["unknown_time", *RANKING_CASES[keep][:-1]]
    # a subset of positions is ranked among itself
    subset = np.array([names.index("mid_b"), names.index("old_small")])
    assert quality_order(subset, pixels, names, mtime, nbytes, keep) == [
        names.index(n) for n in RANKING_CASES[keep] if n in ("mid_b", "old_small")
    ]


def test_unknown_keep_rule_is_refused():
    with pytest.raises(ValueError, match='"keep" parameter: must be one of resolution, oldest'):
        quality_order(np.arange(1), np.array([1]), ["a"], keep="biggest")
    with pytest.raises(ValueError, match='"keep" parameter: must be one of resolution, oldest'):
        dupflow.search(None, keep="best")


@pytest.fixture
def planted(tmp_path):
    """One picture five times, same pixels: an original and copies made later, of different file sizes."""
    base = photo(5, 80, 60)
    folder = tmp_path / "planted"
    made = {  # name: (mtime offset in seconds, PNG compress level: 0 is the largest file)
        "zz_original.png": (0, 6),  # with a text chunk: larger than the other level-6 files
        "a_copy_of_original.png": (3600, 6),
        "m_uncompressed_export.png": (1800, 0),
        "n_latest_resave.png": (7200, 6),
        "b_same_time_as_original.png": (0, 6),
    }
    t0 = 1_600_000_000
    for name, (offset, level) in made.items():
        info = PngInfo()
        if name == "zz_original.png":
            info.add_text("Description", "the camera's original " * 4)
        path = save(base, folder / name, compress_level=level, pnginfo=info)
        os.utime(path, (t0 + offset, t0 + offset))
    sizes = {name: os.path.getsize(folder / name) for name in made}
    assert sizes["m_uncompressed_export.png"] == max(sizes.values())
    assert sizes["b_same_time_as_original.png"] < sizes["zz_original.png"]
    return folder


@pytest.mark.parametrize(
    "keep, kept",
    [
        (None, "zz_original.png"),  # equal pixels: the oldest; of the two oldest, the larger file
        ("resolution", "zz_original.png"),
        ("oldest", "zz_original.png"),
        ("newest", "n_latest_resave.png"),
        ("largest", "m_uncompressed_export.png"),
    ],
)
def test_keep_rules_on_real_files(run, planted, keep, kept):
    root = str(planted)
    _, found = run(root, search={} if keep is None else {"keep": keep})
    assert list(found.result) == [f"{root}/{kept}"]
    names = sorted(os.listdir(planted))
    assert found.lower_quality == [f"{root}/{n}" for n in names if n != kept]
    assert all(mse == 0 for _, mse in found.result[f"{root}/{kept}"])


def test_objects_are_ranked_by_the_stores_modification_time(catalog):
    """memory:// objects: the store's time, not the path, decides (the later upload is the copy)."""
    import fsspec

    fs = fsspec.filesystem("memory")
    buffer = io.BytesIO()
    Image.fromarray(photo(6, 64, 48)).save(buffer, format="PNG")
    fs.pipe("/keep-rank/z_first.png", buffer.getvalue())
    time.sleep(0.01)
    fs.pipe("/keep-rank/a_second.png", buffer.getvalue())
    with dupflow.build("memory://keep-rank", catalog=catalog, show_progress=False, processes=1) as dif:
        found = dupflow.search(dif, show_progress=False)
        newest = dupflow.search(dif, show_progress=False, keep="newest")
    fs.rm("/keep-rank", recursive=True)
    assert found.result == {"memory://keep-rank/z_first.png": [["memory://keep-rank/a_second.png", 0.0]]}
    assert list(newest.result) == ["memory://keep-rank/a_second.png"]


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
    assert found.result[f2] == {f"{f2}/y.png": [[f"{f2}/y_dup.png", 0.0]]}  # the older (or, at a tie, a-z)
    assert found.lower_quality == [f"{f1}/deep/x_dup.png", f"{f2}/y_dup.png"]

"""Parity with difPy 4.2.1 itself, run on the same generated folders as dupflow.

For similarity="duplicates", dupflow's groups (as sets of files: the keys differ on purpose) and its
lower_quality must equal difPy's wherever difPy's documented behaviour holds. Every place where they
may differ is excluded explicitly and by name (the constants below), and each exclusion is checked:
the excluded files really are hit by that defect, and dupflow does there what its contract says.

difPy runs in a fresh Python process (its multiprocessing Pool forks, and this test process holds the
threads of a distributed Client), with `processes=P`, `show_progress=False`.
"""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from collections import defaultdict

import numpy as np
import pytest
from imagegen import make_photo_set, photo, reference_tensor, save
from PIL import Image

import dupflow
from dupflow.decode import decode_image

P = min(2, os.cpu_count() or 1)  # processes, passed to difPy and dupflow alike

# ---- the difPy 4.2.1 defects that excuse a difference (behaviour notes section in brackets) ----
MISSING_270 = (
    "difPy defect: only 0/90/180 degree turns of the second image are tried, never 270, so a "
    "quarter turn is missed depending on file order (behaviour notes 3.3)"
)
UINT8_WRAP = (
    "difPy defect: its MSE is computed in uint8 and wraps modulo 256, so an image shifted by +16 "
    "scores 0 and is called a duplicate (behaviour notes 3.1)"
)
PALETTE_WARNING = (
    "difPy defect: any Pillow UserWarning makes a file invalid, e.g. a palette PNG with "
    "transparency as bytes (behaviour notes 2.3)"
)
BMP_REJECTED = "difPy defect: 'bmp' is missing from difPy's extension list (behaviour notes 2.2)"
W_PLUS_H = (
    "difPy defect: quality is width + height, not width x height, so ties and inversions keep a "
    "smaller image (behaviour notes 5.1)"
)
KEEP_RULE = (
    "dupflow's keep rule: at equal pixels the older file, then the larger, then the smaller path is kept; "
    "difPy keeps the greater path (contract, Groups)"
)

UNIDENTIFIED = "UnidentifiedImageError: file could not be identified as image."
UNSUPPORTED = "Unsupported file type"


# ------------------------------------------------------------------------------------ running difPy

_DIFPY_SCRIPT = textwrap.dedent("""
    import copy, pickle, sys, warnings
    warnings.simplefilter("ignore")
    import difPy

    def plain(result, in_folder):
        if in_folder:
            return {str(f): plain(r, False) for f, r in result.items()}
        return {str(k): [[str(m), float(v)] for m, v in matches] for k, matches in result.items()}

    with open(sys.argv[1], "rb") as fh:
        job = pickle.load(fh)
    dif = difPy.build(*job["dirs"], show_progress=False, **job["build"])
    out = {"tensors": dict(dif._tensor_dictionary),
           "names": {i: str(p) for i, p in dif._filename_dictionary.items()},
           "shapes": dict(dif._id_to_shape_dictionary),
           "folders": {g: list(ids) for g, ids in dif._group_to_id_dictionary.items()},
           "build_stats": copy.deepcopy(dif.stats), "searches": []}
    in_folder = job["build"].get("in_folder", False)
    for kw in job["searches"]:
        se = difPy.search(dif, show_progress=False, **kw)
        out["searches"].append({"result": plain(se.result, in_folder),
                                "lower_quality": sorted(str(p) for p in se.lower_quality),
                                "stats": copy.deepcopy(se.stats)})
    with open(sys.argv[2], "wb") as fh:
        pickle.dump(out, fh)
""")


def run_difpy(tmp_path, *dirs, searches=({},), **build_kw) -> dict:
    """difPy.build(*dirs, **build_kw) and one difPy.search per entry of `searches`, in a fresh process."""
    build_kw.setdefault("processes", P)
    searches = [{"processes": P, **kw} for kw in searches]
    job, out = tmp_path / "difpy_job.pkl", tmp_path / "difpy_out.pkl"
    job.write_bytes(pickle.dumps({"dirs": list(dirs), "build": build_kw, "searches": searches}))
    proc = subprocess.run(
        [sys.executable, "-c", _DIFPY_SCRIPT, str(job), str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"difPy failed:\n{proc.stdout}\n{proc.stderr}"
    return pickle.loads(out.read_bytes())


def dupflow_search(dif, **kw):
    return dupflow.search(dif, show_progress=False, processes=P, **kw)


# ------------------------------------------------------------------------------------ comparing


def group_sets(result: dict) -> set[frozenset]:
    """{primary: [[match, mse], ...]} -> the groups as sets of files (keys differ on purpose)."""
    return {frozenset([key, *(m for m, _ in matches)]) for key, matches in result.items()}


def defect_components(dp: dict, rotate: bool, same_dim: bool) -> list[tuple[frozenset[str], str]]:
    """Sets of files where difPy's 270-degree gap or uint8 wrap can change its answer at threshold 0.

    Decided pair by pair on difPy's own tensors, ids (= its comparison order) and shapes: a pair is
    "really" a duplicate when the tensors are equal under one of the 4 turns; difPy calls it one when
    its uint8 "MSE" is 0 under one of its 3 turns (i < j, the second image turned). Files connected by
    either relation form a component; each component holding a pair where the two disagree is
    returned with the defect(s) explaining the disagreement.
    """
    tensors, shapes, names = dp["tensors"], dp["shapes"], dp["names"]
    folders = list(dp["folders"].values()) or [sorted(tensors)]
    parent = {i: i for i in tensors}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    defects: dict[tuple[int, int], str] = {}
    for ids in folders:
        for i, j in itertools.combinations(sorted(ids), 2):
            if same_dim and sorted(shapes[i]) != sorted(shapes[j]):
                continue
            a, b = tensors[i], tensors[j]
            really = any(np.array_equal(a, np.rot90(b, k)) for k in (range(4) if rotate else [0]))
            difpy = any(
                np.square(np.subtract(a, np.rot90(b, k))).mean() == 0 for k in (range(3) if rotate else [0])
            )
            if really or difpy:
                parent[find(i)] = find(j)
            if really and not difpy:
                defects[(i, j)] = MISSING_270
            elif difpy and not really:
                defects[(i, j)] = UINT8_WRAP
    reasons = defaultdict(set)
    for (i, _), reason in defects.items():
        reasons[find(i)].add(reason)
    members = defaultdict(set)
    for i in tensors:
        members[find(i)].add(names[i])
    return [(frozenset(members[root]), " + ".join(sorted(why))) for root, why in reasons.items()]


def true_classes(dp: dict, files: set[str], rotate: bool, same_dim: bool) -> set[frozenset]:
    """The exact-duplicate classes (tensor equal under any of the 4 turns) among `files`, size >= 2."""
    ids = {p: i for i, p in dp["names"].items() if p in files}
    parent = {p: p for p in ids}

    def find(p):
        while parent[p] != p:
            p = parent[p]
        return p

    for x, y in itertools.combinations(sorted(ids), 2):
        i, j = ids[x], ids[y]
        if same_dim and sorted(dp["shapes"][i]) != sorted(dp["shapes"][j]):
            continue
        a, b = dp["tensors"][i], dp["tensors"][j]
        if any(np.array_equal(a, np.rot90(b, k)) for k in (range(4) if rotate else [0])):
            parent[find(x)] = find(y)
    classes = defaultdict(set)
    for p in ids:
        classes[find(p)].add(p)
    return {frozenset(c) for c in classes.values() if len(c) > 1}


def sizes(path: str) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def match_entries(result: dict, in_folder: bool = False) -> int:
    """How many [match, mse] entries a result holds."""
    if in_folder:
        return sum(match_entries(r) for r in result.values())
    return sum(len(matches) for matches in result.values())


def check_duplicate_parity(
    dp: dict,
    dp_result: dict,
    dp_lq: list[str],
    df_result: dict,
    df_lq: list[str],
    *,
    rotate: bool,
    same_dim: bool,
    unreadable: dict[str, str] | None = None,
    min_groups: int = 1,
) -> dict:
    """Groups and lower_quality of one "duplicates" search; returns what was compared and excluded."""
    unreadable = unreadable or {}
    dp_groups = group_sets(dp_result)
    df_groups_all = group_sets(df_result)
    # Files difPy cannot read are not in its groups: compare dupflow's groups without them.
    df_groups = {g - set(unreadable) for g in df_groups_all}
    df_groups = {g for g in df_groups if len(g) > 1}
    touched_by_unreadable = set().union(*(g for g in df_groups_all if g & set(unreadable)))
    assert not set().union(*dp_groups) & set(unreadable)
    # A defect excuses the files of its component only where the two answers there really differ.
    excluded: dict[str, str] = {}
    for component, reason in defect_components(dp, rotate, same_dim):
        if {g for g in dp_groups if g & component} != {g for g in df_groups if g & component}:
            excluded.update(dict.fromkeys(component, reason))

    compared_dp = {g for g in dp_groups if not g & set(excluded)}
    compared_df = {g for g in df_groups if not g & set(excluded)}
    assert compared_df == compared_dp, (
        f"groups differ outside the excluded files:\n only dupflow: {compared_df - compared_dp}\n"
        f" only difPy: {compared_dp - compared_df}\n excluded: {excluded}"
    )
    assert len(compared_dp) >= min_groups, f"too few groups compared: {compared_dp}"

    # Where difPy's defects exclude files, dupflow must still give the true classes (its contract).
    if excluded:
        in_zone = {g for g in df_groups if g & set(excluded)}
        assert in_zone == true_classes(dp, set(excluded), rotate, same_dim), (in_zone, excluded)

    # lower_quality: per compared group the same losers, unless difPy's W+H rule picks another winner.
    dp_lq, df_lq_set = set(dp_lq), set(df_lq)
    assert list(df_lq) == sorted(df_lq_set), "dupflow's lower_quality is sorted and free of repeats"
    w_plus_h, keep_rule = {}, {}
    for g in compared_dp:
        dims = {p: sizes(p) for p in g}
        keep_difpy = max(g, key=lambda p: (sum(dims[p]), p))
        # the contract's rule: pixels desc, then modification time asc, then bytes desc, then path asc
        keep_dupflow = min(
            g, key=lambda p: (-dims[p][0] * dims[p][1], os.stat(p).st_mtime, -os.path.getsize(p), p)
        )
        if keep_difpy != keep_dupflow:
            (w1, h1), (w2, h2) = dims[keep_difpy], dims[keep_dupflow]
            if w1 * h1 != w2 * h2:
                w_plus_h.update({p: W_PLUS_H for p in g})
            else:
                keep_rule.update({p: KEEP_RULE for p in g})
            assert dp_lq & g == g - {keep_difpy} and df_lq_set & g == g - {keep_dupflow}, W_PLUS_H
        else:
            assert dp_lq & g == df_lq_set & g == g - {keep_dupflow}, g
    zone = set(excluded) | set(unreadable) | touched_by_unreadable | set(w_plus_h) | set(keep_rule)
    assert dp_lq - zone == df_lq_set - zone
    assert df_lq_set <= set().union(*df_groups_all)

    # Match entries outside the compared groups (those are equal on both sides by now).
    outside = lambda groups, keep: sum(len(g) - 1 for g in groups if keep(g) not in compared_dp)  # noqa: E731
    return {
        "compared": compared_dp,
        "excluded": excluded,
        "w_plus_h": w_plus_h,
        "keep_rule": keep_rule,
        "outside_dp": outside(dp_groups, lambda g: g),
        "outside_df": outside(df_groups_all, lambda g: g - set(unreadable)),
    }


def check_counts(
    dp_stats: dict,
    dp_result: dict,
    df_stats: dict,
    df_result: dict,
    reports: list[dict],
    in_folder: bool = False,
) -> None:
    """matches_found: each side counts its own result; they agree up to the excluded groups' entries."""
    dp_found = dp_stats["process"]["search"]["matches_found"]
    df_found = df_stats["process"]["search"]["matches_found"]
    assert sum(dp_found.values()) == match_entries(dp_result, in_folder)
    assert sum(df_found.values()) == match_entries(df_result, in_folder)
    if dp_stats["process"]["search"]["parameters"]["similarity_mse"] == 0:
        assert dp_found["similar"] == df_found["similar"] == 0
    assert dp_found["duplicates"] - sum(r["outside_dp"] for r in reports) == df_found["duplicates"] - sum(
        r["outside_df"] for r in reports
    )
    if all(r["outside_dp"] == r["outside_df"] == 0 for r in reports):
        assert dp_found == df_found


def key_tree(d):
    """The nested key structure (in order) of a stats dict, file names in logs left out."""
    if isinstance(d, dict):
        return [(k, None if k == "logs" else key_tree(v)) for k, v in d.items()]
    return None


def check_stats(dp_stats: dict, df_stats: dict, *, unreadable: dict[str, str] | None = None) -> None:
    """difPy's stats layout and figures; dupflow adds only its own top-level "dupflow" key."""
    unreadable = unreadable or {}
    assert list(df_stats)[-1] == "dupflow"
    assert key_tree({k: v for k, v in df_stats.items() if k != "dupflow"}) == key_tree(dp_stats)
    assert df_stats["directory"] == [str(d) for d in dp_stats["directory"]]
    assert df_stats["total_files"] == dp_stats["total_files"]
    dp_logs, df_logs = dp_stats["invalid_files"]["logs"], df_stats["invalid_files"]["logs"]
    assert dp_logs.keys() - df_logs.keys() == unreadable.keys(), (
        "only difPy's defects make extra invalid files"
    )
    assert not df_logs.keys() - dp_logs.keys()
    for path, reason in unreadable.items():
        expected = (
            UNSUPPORTED if reason == BMP_REJECTED else "Palette images with Transparency expressed in bytes"
        )
        assert dp_logs[path].startswith(expected), (path, dp_logs[path], reason)
    for path, reason in df_logs.items():
        if dp_logs[path].startswith("[Errno"):
            # An OS error: difPy shows Python's text, dupflow words its own reason (the contract asks
            # only for "a clear reason" here).
            assert reason.strip() and not reason.startswith("[Errno"), (path, reason)
        else:  # difPy's fixed texts and Pillow's own messages: the same words
            assert reason == dp_logs[path], (path, reason, dp_logs[path])
    assert df_stats["invalid_files"]["count"] == len(df_logs)
    assert dp_stats["invalid_files"]["count"] - df_stats["invalid_files"]["count"] == len(unreadable)
    build_dp, build_df = dp_stats["process"]["build"], df_stats["process"]["build"]
    assert build_df["parameters"] == build_dp["parameters"]
    search_dp, search_df = dp_stats["process"]["search"], df_stats["process"]["search"]
    assert search_df["parameters"] == search_dp["parameters"]
    assert [type(v) for v in search_df["parameters"].values()] == [
        type(v) for v in search_dp["parameters"].values()
    ]
    assert search_df["files_searched"] == search_dp["files_searched"] + len(unreadable)


# ------------------------------------------------------------------------------------ the folders


def _png_header(width: int, height: int) -> bytes:
    """A PNG that only declares its size (Pillow refuses it at open as a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _png(array16: np.ndarray) -> bytes:
    """A 48-bit RGB PNG (Pillow cannot write one) of a (h, w, 3) uint16 array."""
    height, width, _ = array16.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array16)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _solid(colour, width, height):
    return np.full((height, width, 3), colour, np.uint8)


def make_library(root: str) -> dict[str, str]:
    """The generated photo set plus the cases difPy gets wrong; returns {file: defect} for unreadable ones."""
    kinds = make_photo_set(root, n_unrelated=6, seed=3)
    assert kinds["rot270"] and kinds["copy"] and kinds["resized"] and kinds["jpeg_resave"]
    shutil.copy(f"{root}/img_01.png", f"{root}/img_01_dup.png")  # a top-level group (recursive=False)
    shutil.copy(f"{root}/img_00.png", f"{root}/.hidden_copy.png")  # hidden: neither tool sees it
    # quarter and half turns in pairs of their own, besides the full 90/180/270 sets of make_photo_set
    x, y = photo(41, 88, 66), photo(42, 88, 66)
    save(x, f"{root}/turns/x.png")
    save(np.rot90(x, 2).copy(), f"{root}/turns/x_r180.png")
    save(y, f"{root}/turns/y.png")
    save(np.rot90(y, 1).copy(), f"{root}/turns/y_r90.png")
    # +16 on every value (no clipping): difPy's uint8 wrap calls it a duplicate, its true MSE is 256
    w = photo(43, 64, 48) // 2 + 40
    save(w, f"{root}/wrap/w.png")
    save(w + 16, f"{root}/wrap/w_plus16.png")
    # one colour at several sizes: equal tensors, so duplicates once same_dim=False
    for width, height in ((60, 40), (30, 20), (20, 12)):  # W+H and WxH agree: 60x40 is best
        save(_solid((100, 150, 200), width, height), f"{root}/flat/a_{width}x{height}.png")
    for width, height in ((60, 40), (50, 50)):  # W+H ties (difPy: greater path), WxH: 50x50
        save(_solid((30, 60, 90), width, height), f"{root}/flat/b_{width}x{height}.png")
    # invalid files: same verdict from both tools
    with open(f"{root}/fake.jpg", "w") as fh:
        fh.write("not an image\n")
    with open(f"{root}/notes.txt", "w") as fh:
        fh.write("notes\n")
    open(f"{root}/empty.png", "wb").close()
    with open(f"{root}/README", "w") as fh:  # no extension at all
        fh.write("readme\n")
    whole = open(f"{root}/img_00_q90.jpg", "rb").read()
    os.makedirs(f"{root}/broken")
    with open(f"{root}/broken/truncated.jpg", "wb") as fh:
        fh.write(whole[: len(whole) // 2])
    with open(f"{root}/broken/huge.png", "wb") as fh:  # header only: 9500 x 9500 pixels
        fh.write(_png_header(9500, 9500))
    # more that both tools must see alike: an upper-case extension, a hidden folder
    shutil.copy(f"{root}/img_05.png", f"{root}/sub/IMG_05_COPY.PNG")
    shutil.copytree(f"{root}/sub", f"{root}/.cache/sub")
    # awkward names: non-ASCII, spaces, glob characters in a file name, a folder named like an image
    shutil.copy(f"{root}/img_02.png", f"{root}/sub/ünïcødé img_02.png")
    shutil.copy(f"{root}/img_03.png", f"{root}/sub/[copy] img_03?.png")
    os.makedirs(f"{root}/folder.png")
    shutil.copy(f"{root}/img_04.png", f"{root}/folder.png/img_04 (2).png")
    os.symlink(f"{root}/no_such_file.png", f"{root}/broken/dead_link.png")
    # files dupflow reads and difPy refuses
    Image.open(f"{root}/other/u_0.jpg").save(f"{root}/other/u_0.bmp")  # same pixels as u_0.jpg
    pal = Image.fromarray(photo(44, 40, 30)).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(f"{root}/other/palette_trns.png", transparency=bytes([0, 128] + [255] * 14))
    return {f"{root}/other/u_0.bmp": BMP_REJECTED, f"{root}/other/palette_trns.png": PALETTE_WARNING}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("parity") / "lib")
    return root, make_library(root)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("parity_inputs")
    f1, f2 = str(base / "f1"), str(base / "f2")
    make_photo_set(f1, n_unrelated=3, seed=5)
    make_photo_set(f2, n_unrelated=2, seed=6)
    shutil.copy(f"{f1}/img_02.png", f"{f2}/cross_img_02.png")  # a match only across the two inputs
    with open(f"{f2}/notes.txt", "w") as fh:
        fh.write("notes\n")
    f3 = str(base / "f3")  # no duplicates at all: absent from result
    save(photo(700, 64, 48), f"{f3}/alone.png")
    save(photo(701, 64, 48), f"{f3}/deep/alone_too.jpg")
    with open(f"{f3}/fake.jpg", "w") as fh:
        fh.write("not an image\n")
    return f1, f2, f3


# ------------------------------------------------------------------------------------ the tests


def parity(dp, se, found, **kw) -> dict:
    """check_duplicate_parity + check_counts for a union-mode search."""
    report = check_duplicate_parity(
        dp, se["result"], se["lower_quality"], found.result, found.lower_quality, **kw
    )
    check_counts(se["stats"], se["result"], found.stats, found.result, [report])
    return report


def test_union_recursive_duplicates(library, run, tmp_path):
    root, unreadable = library
    dp = run_difpy(tmp_path, root)
    se = dp["searches"][0]
    dif, found = run(root, processes=P)
    report = parity(dp, se, found, rotate=True, same_dim=True, unreadable=unreadable, min_groups=5)
    check_stats(se["stats"], found.stats, unreadable=unreadable)
    excluded = report["excluded"]
    # The 90/180/270 sets of img_00 and img_03 always hit the missing turn (4 turns, 3 tried); +16 wraps.
    assert any(MISSING_270 in r for p, r in excluded.items() if p.endswith("img_00_r90.png"))
    assert excluded[f"{root}/wrap/w_plus16.png"] == UINT8_WRAP
    assert not {p for p in excluded if "/rot/" not in p and "/turns/" not in p} - {
        f"{root}/img_00.png",
        f"{root}/img_03.png",
        f"{root}/sub/img_00_copy.png",
        f"{root}/sub/[copy] img_03?.png",
        f"{root}/wrap/w.png",
        f"{root}/wrap/w_plus16.png",
    }, excluded
    groups = group_sets(found.result)
    assert frozenset({f"{root}/turns/x.png", f"{root}/turns/x_r180.png"}) in report["compared"]  # any order
    assert frozenset({f"{root}/turns/y.png", f"{root}/turns/y_r90.png"}) in groups
    assert frozenset({f"{root}/other/u_0.jpg", f"{root}/other/u_0.bmp"}) in groups, BMP_REJECTED
    assert (
        frozenset({f"{root}/img_01.png", f"{root}/img_01_dup.png", f"{root}/sub/deeper/img_01_again.png"})
        in report["compared"]
    )
    assert (
        frozenset({f"{root}/img_02.png", f"{root}/sub/img_02_copy.png", f"{root}/sub/ünïcødé img_02.png"})
        in report["compared"]
    )
    assert frozenset({f"{root}/img_05.png", f"{root}/sub/IMG_05_COPY.PNG"}) in report["compared"]
    assert not any("/." in p for g in groups for p in g)  # hidden names: seen by neither
    logs = found.stats["invalid_files"]["logs"]
    assert not logs.keys() & unreadable.keys()
    assert logs[f"{root}/broken/truncated.jpg"].startswith("image file is truncated")
    assert "decompression bomb" in logs[f"{root}/broken/huge.png"]
    assert {logs[f"{root}/{n}"] for n in ("fake.jpg", "empty.png")} == {UNIDENTIFIED}
    assert f"{root}/broken/dead_link.png" in logs and logs[f"{root}/README"] == UNSUPPORTED


def test_not_recursive_is_full_parity(library, run, tmp_path):
    """The top level holds none of difPy's defect cases: everything must agree, stats included."""
    root, unreadable = library
    assert not [p for p in unreadable if os.path.dirname(p) == root]
    dp = run_difpy(tmp_path, root, recursive=False)
    se = dp["searches"][0]
    dif, found = run(root, recursive=False, processes=P)
    report = parity(dp, se, found, rotate=True, same_dim=True, min_groups=1)
    assert report["excluded"] == {}
    assert (
        group_sets(found.result)
        == group_sets(se["result"])
        == {frozenset({f"{root}/img_01.png", f"{root}/img_01_dup.png"})}
    )
    # the one deliberate difference: difPy keeps the greater path, dupflow the older file (the original)
    assert se["lower_quality"] == [f"{root}/img_01.png"] and found.lower_quality == [f"{root}/img_01_dup.png"]
    assert set(report["keep_rule"]) == {f"{root}/img_01.png", f"{root}/img_01_dup.png"}, KEEP_RULE
    check_stats(se["stats"], found.stats)
    assert found.stats["process"]["search"]["matches_found"] == {"duplicates": 1, "similar": 0}
    assert found.stats["invalid_files"]["logs"] == {
        f"{root}/empty.png": UNIDENTIFIED,
        f"{root}/fake.jpg": UNIDENTIFIED,
        f"{root}/notes.txt": UNSUPPORTED,
        f"{root}/README": UNSUPPORTED,
    }


@pytest.mark.slow
def test_same_dim_false_rotate_false_and_px32(library, run, tmp_path):
    """same_dim=False and rotate=False (one build on each side), then px_size=32 (fresh builds)."""
    root, unreadable = library
    dp = run_difpy(tmp_path, root, searches=({"same_dim": False}, {"rotate": False}))
    dif, found = run(root, processes=P, search={"same_dim": False})

    # same_dim=False: the one-colour images of different sizes become duplicates.
    se = dp["searches"][0]
    report = parity(dp, se, found, rotate=True, same_dim=False, unreadable=unreadable, min_groups=6)
    check_stats(se["stats"], found.stats, unreadable=unreadable)
    flat_a = frozenset(f"{root}/flat/a_{s}.png" for s in ("60x40", "30x20", "20x12"))
    flat_b = frozenset(f"{root}/flat/b_{s}.png" for s in ("60x40", "50x50"))
    assert {flat_a, flat_b} <= report["compared"]
    assert {f"{root}/flat/a_30x20.png", f"{root}/flat/a_20x12.png"} <= set(found.lower_quality)
    assert f"{root}/flat/a_60x40.png" not in set(found.lower_quality) | set(se["lower_quality"])
    # W+H: 60x40 and 50x50 tie at 100 and difPy keeps the greater path; by pixels 50x50 (2500) is best.
    assert set(report["w_plus_h"]) == set(flat_b), W_PLUS_H
    assert (
        f"{root}/flat/b_50x50.png" in se["lower_quality"]
        and f"{root}/flat/b_60x40.png" in found.lower_quality
    )

    # rotate=False: no missing turn any more; the +16 wrap remains.
    se = dp["searches"][1]
    found = dupflow_search(dif, rotate=False)
    report = parity(dp, se, found, rotate=False, same_dim=True, unreadable=unreadable, min_groups=4)
    check_stats(se["stats"], found.stats, unreadable=unreadable)
    assert set(report["excluded"].values()) == {UINT8_WRAP}
    assert not any("/rot/" in p or "/turns/" in p for g in group_sets(found.result) for p in g)

    # px_size=32
    dp32 = run_difpy(tmp_path, root, px_size=32)
    se = dp32["searches"][0]
    dif32, found = run(root, px_size=32, processes=P)
    assert next(iter(dp32["tensors"].values())).shape == (32, 32, 3)
    parity(dp32, se, found, rotate=True, same_dim=True, unreadable=unreadable, min_groups=5)
    check_stats(se["stats"], found.stats, unreadable=unreadable)


@pytest.mark.slow
def test_in_folder_and_union_of_three_inputs(inputs, run, tmp_path):
    f1, f2, f3 = inputs
    dp = run_difpy(tmp_path, f3, f2, f1, in_folder=True)  # difPy sorts its inputs, as dupflow does
    se = dp["searches"][0]
    dif, found = run(f3, f2, f1, in_folder=True, processes=P)
    assert [str(d) for d in se["stats"]["directory"]] == [f1, f2, f3]
    assert list(found.result) == list(se["result"]) == [f1, f2]
    reports = []
    for folder, group in ((f1, "group_0"), (f2, "group_1")):
        in_it = lambda paths, folder=folder: [p for p in paths if p.startswith(folder + os.sep)]  # noqa: E731
        one = {**dp, "folders": {group: dp["folders"][group]}}
        reports.append(
            check_duplicate_parity(
                one,
                se["result"][folder],
                in_it(se["lower_quality"]),
                found.result[folder],
                in_it(found.lower_quality),
                rotate=True,
                same_dim=True,
                min_groups=1,
            )
        )
    check_counts(se["stats"], se["result"], found.stats, found.result, reports, in_folder=True)
    cross = {f"{f1}/img_02.png", f"{f2}/cross_img_02.png"}
    for result in (found.result, se["result"]):
        assert not any(cross <= g for r in result.values() for g in group_sets(r))
    check_stats(se["stats"], found.stats)

    dp = run_difpy(tmp_path, f1, f2, f3)
    se = dp["searches"][0]
    dif, found = run(f1, f2, f3, processes=P)
    report = parity(dp, se, found, rotate=True, same_dim=True, min_groups=3)
    assert any(cross <= g for g in report["compared"])
    check_stats(se["stats"], found.stats)


def test_quarter_turns_in_a_fixed_order(tmp_path, run):
    """Files given as a list: difPy's ids follow the sorted list, so its missing 270° turn is predictable."""
    root = tmp_path / "turns"
    files = {}
    for name, seed, k in (("p", 51, 1), ("q", 52, 3), ("s", 53, 2)):
        base = photo(seed, 96, 72)
        files[name] = save(base, root / f"{name}.png")
        files[name + "_turned"] = save(np.rot90(base, k).copy(), root / f"{name}_r{90 * k}.png")
    base = photo(54, 96, 72)  # t, t_r180, t_r270: the pair (t_r180, t_r270)
    files["t"] = save(base, root / "t.png")  # needs a 270° turn, but t claims both first
    files["t_r180"] = save(np.rot90(base, 2).copy(), root / "t_r180.png")
    files["t_r270"] = save(np.rot90(base, 3).copy(), root / "t_r270.png")
    listing = sorted(files.values())
    dp = run_difpy(tmp_path, listing, searches=({}, {"similarity": 0}))
    se = dp["searches"][0]
    assert [dp["names"][i] for i in sorted(dp["names"])] == listing
    dif, found = run(listing, processes=P)
    q = frozenset({files["q"], files["q_turned"]})  # q_r270 follows q: difPy's 90° CCW try finds it
    s = frozenset({files["s"], files["s_turned"]})  # 180°: found in any order
    p = frozenset({files["p"], files["p_turned"]})  # p_r90 follows p: only a 270° turn finds it
    t = frozenset({files["t"], files["t_r180"], files["t_r270"]})
    assert group_sets(se["result"]) == {q, s, t}, MISSING_270
    assert group_sets(found.result) == {p, q, s, t}
    assert {c for c, _ in defect_components(dp, True, True)} == {p, t}
    report = parity(dp, se, found, rotate=True, same_dim=True, min_groups=3)
    # t's component holds a pair difPy misses, yet its answer is right there: compared, not excluded
    assert report["excluded"] == {files["p"]: MISSING_270, files["p_turned"]: MISSING_270}
    assert t in report["compared"]
    # the originals (written first: older) are kept, the turned copies go; difPy keeps the greater path
    turned = {files[k] for k in ("p_turned", "q_turned", "s_turned", "t_r180", "t_r270")}
    assert set(found.lower_quality) == turned
    check_stats(se["stats"], found.stats)
    # similarity=0 given as a number: the same answer, and similarity_mse 0.0 (a float) on both sides
    se = dp["searches"][1]
    found = dupflow_search(dif, similarity=0)
    assert se["stats"]["process"]["search"]["parameters"]["similarity_mse"] == 0.0
    assert group_sets(se["result"]) == {q, s, t} and group_sets(found.result) == {p, q, s, t}
    parity(dp, se, found, rotate=True, same_dim=True, min_groups=3)
    check_stats(se["stats"], found.stats)


def test_similar_values_equal_difpy_where_its_mse_is_true(tmp_path, run):
    """Within |difference| <= 15 per value difPy's uint8 "MSE" is the true MSE: dupflow reports it exactly."""
    root = tmp_path / "near"
    rng = np.random.default_rng(9)
    bases = [photo(60 + k, 72, 54) // 2 + 60 for k in range(3)]
    save(bases[0], root / "n0.png")
    save(bases[0] + 1, root / "n0_plus1.png")
    save(bases[1], root / "n1.png")
    save((bases[1] + rng.integers(-4, 5, bases[1].shape)).astype(np.uint8), root / "n1_noise.png")
    save(bases[2], root / "n2.png")
    save(bases[2] + 3, root / "n2_plus3.png")
    dp = run_difpy(tmp_path, str(root), searches=({"similarity": 10},))
    se = dp["searches"][0]
    ids = {p: i for i, p in dp["names"].items()}
    dif, found = run(str(root), processes=P, search={"similarity": 10})
    pairs = lambda result: {frozenset((k, m)): v for k, ms in result.items() for m, v in ms}  # noqa: E731
    dp_pairs, df_pairs = pairs(se["result"]), pairs(found.result)
    assert dp_pairs.keys() == df_pairs.keys() and len(dp_pairs) == 3
    for pair, value in dp_pairs.items():
        a, b = (dp["tensors"][ids[f]].astype(int) for f in sorted(pair))
        assert np.abs(a - b).max() <= 15  # where difPy's value is the true MSE
        assert 0 < value <= 10 and df_pairs[pair] == value, (pair, value, df_pairs[pair])
    assert dp_pairs[frozenset((str(root / "n0.png"), str(root / "n0_plus1.png")))] == 1.0
    assert found.stats["process"]["search"]["matches_found"] == {"duplicates": 0, "similar": 3}
    assert se["stats"]["process"]["search"]["matches_found"] == {"duplicates": 0, "similar": 3}
    # same sizes: difPy keeps the greater path, dupflow the older file (each base was written first)
    assert se["lower_quality"] == [str(root / n) for n in ("n0.png", "n1.png", "n2.png")]
    assert found.lower_quality == [str(root / n) for n in ("n0_plus1.png", "n1_noise.png", "n2_plus3.png")]
    check_stats(se["stats"], found.stats)


def _formats(root) -> dict[str, str]:
    """One file per decoding path: {name: path}."""
    root = str(root)
    rgb = photo(70, 70, 50)
    out = {"png": save(rgb, f"{root}/rgb.png"), "jpeg": save(rgb, f"{root}/rgb.jpg", quality=90)}
    Image.fromarray(rgb).convert("CMYK").save(f"{root}/cmyk.jpg", quality=90)
    out["cmyk_jpeg"] = f"{root}/cmyk.jpg"
    Image.fromarray(photo(71, 50, 70)[..., 0].astype(np.uint16) * 200).save(f"{root}/gray16.png")
    out["png16"] = f"{root}/gray16.png"
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=64).save(f"{root}/palette.png")
    out["palette"] = f"{root}/palette.png"
    Image.fromarray(rgb).convert("L").save(f"{root}/gray.png")
    out["gray"] = f"{root}/gray.png"
    Image.fromarray(rgb).convert("L").save(f"{root}/gray.jpg", quality=85)
    out["gray_jpeg"] = f"{root}/gray.jpg"
    rgba = np.dstack([rgb, np.random.default_rng(3).integers(0, 256, rgb.shape[:2], dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(f"{root}/rgba.png")
    out["rgba"] = f"{root}/rgba.png"
    Image.fromarray(rgb).convert("1").save(f"{root}/bilevel.png")
    out["bilevel"] = f"{root}/bilevel.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": neither tool applies it
    Image.fromarray(rgb).save(f"{root}/exif6.jpg", exif=exif, quality=90)
    out["exif_oriented_jpeg"] = f"{root}/exif6.jpg"
    frames = [Image.fromarray(photo(72 + k, 40, 30)).convert("P") for k in range(2)]
    frames[0].save(f"{root}/anim.gif", save_all=True, append_images=frames[1:])
    out["gif_first_frame"] = f"{root}/anim.gif"
    wide = photo(74, 60, 45).astype(np.uint16) * 257 + np.arange(45 * 60 * 3).reshape(45, 60, 3) % 200
    with open(f"{root}/rgb48.png", "wb") as fh:  # 16 bits per channel, RGB
        fh.write(_png(wide))
    out["png48"] = f"{root}/rgb48.png"
    Image.fromarray(rgb).convert("LA").save(f"{root}/gray_alpha.png")
    out["gray_alpha"] = f"{root}/gray_alpha.png"
    Image.fromarray(photo(75, 50, 40)[..., 1].astype(np.int32) * 3 - 100).save(f"{root}/int32.tif")
    out["int32_tiff"] = f"{root}/int32.tif"
    Image.fromarray(photo(76, 50, 40)[..., 2].astype(np.float32) * 0.9).save(f"{root}/float.tif")
    out["float_tiff"] = f"{root}/float.tif"
    out["tiff"] = save(rgb, f"{root}/rgb.tif")
    out["bmp"] = save(rgb, f"{root}/rgb.bmp")
    for ext in ("tga", "webp", "pcx", "ppm", "ico"):
        out[ext] = save(rgb, f"{root}/rgb.{ext}")
    return out


@pytest.mark.parametrize("px", [50, 23])
def test_tensor_equals_difpy(tmp_path, px):
    """dupflow's exact decode is bit-identical to difPy's tensor, and records the same size."""
    files = _formats(tmp_path / "fmt")
    pal = Image.fromarray(photo(73, 40, 30)).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(tmp_path / "fmt" / "palette_trns.png", transparency=bytes([0, 128] + [255] * 14))
    # limit_extensions=False so that difPy decodes the bmp too (it would refuse it by extension: BMP_REJECTED)
    dp = run_difpy(tmp_path, str(tmp_path / "fmt"), px_size=px, limit_extensions=False, searches=())
    by_path = {p: i for i, p in dp["names"].items()}
    assert set(by_path) == set(files.values())
    for kind, path in files.items():
        with open(path, "rb") as fh:
            tensor, width, height = decode_image(fh.read(), px, "exact")
        theirs = dp["tensors"][by_path[path]]
        assert tensor.dtype == np.uint8 and tensor.shape == theirs.shape == (px, px, 3), kind
        assert np.array_equal(tensor, theirs), kind
        assert dp["shapes"][by_path[path]] == (height, width, 3), kind
    # difPy refuses the palette PNG with bytes transparency (PALETTE_WARNING); dupflow decodes it, with
    # the tensor difPy's recipe gives once the warning is not an error.
    trns = str(tmp_path / "fmt" / "palette_trns.png")
    assert "Palette images with Transparency" in dp["build_stats"]["invalid_files"]["logs"][trns], (
        PALETTE_WARNING
    )
    with open(trns, "rb") as fh:
        tensor, width, height = decode_image(fh.read(), px, "exact")
    assert np.array_equal(tensor, reference_tensor(trns, px)) and (width, height) == (40, 30)


def test_limit_extensions_false(library, run, tmp_path):
    """Every file is tried: the bmp is then read by difPy too; the bytes-transparency palette PNG is out."""
    root, unreadable = library
    unreadable = {p: r for p, r in unreadable.items() if r != BMP_REJECTED}
    dp = run_difpy(tmp_path, root, limit_extensions=False)
    se = dp["searches"][0]
    dif, found = run(root, limit_extensions=False, processes=P)
    report = parity(dp, se, found, rotate=True, same_dim=True, unreadable=unreadable, min_groups=6)
    check_stats(se["stats"], found.stats, unreadable=unreadable)
    assert frozenset({f"{root}/other/u_0.jpg", f"{root}/other/u_0.bmp"}) in report["compared"]
    logs = found.stats["invalid_files"]["logs"]
    assert logs[f"{root}/notes.txt"] == logs[f"{root}/README"] == UNIDENTIFIED
    assert UNSUPPORTED not in logs.values()

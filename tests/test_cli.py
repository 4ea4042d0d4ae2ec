"""The `dupflow` command, run in a subprocess: difPy's flags, its three output files, move/delete/undo."""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from imagegen import photo, save

import dupflow
from dupflow import cli

_SCRIPT = shutil.which("dupflow", path=os.path.dirname(sys.executable))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "dupflow.cli"]
QUICK = ["-p", "false", "-proc", "1"]


@pytest.fixture
def folders(tmp_path):
    """a/ and b/ under tmp_path: byte copies, a sub-folder copy, a quarter turn, a +1 shift, a text file."""
    p1, p2, p3 = photo(1, 96, 72), photo(2, 96, 72), photo(3, 96, 72)
    for name in ("a/p1.png", "a/p1_copy.png", "a/sub/p1.png", "b/p1.png"):
        save(p1, tmp_path / name)
    save(p2, tmp_path / "a/p2.png")
    save(np.rot90(p2).copy(), tmp_path / "a/p2_r90.png")
    save(p3, tmp_path / "b/p3.png")
    save(np.clip(p3.astype(int) + 1, 0, 255).astype(np.uint8), tmp_path / "b/p3_plus1.png")  # MSE 1
    (tmp_path / "a/notes.txt").write_text("not an image")
    t0 = 1_700_000_000  # originals first, copies made later: the keep rule keeps the originals
    for name, later in {"a/p1.png": 0, "a/p2.png": 0, "b/p3.png": 0, "a/p1_copy.png": 60}.items():
        os.utime(tmp_path / name, (t0 + later, t0 + later))
    for name in ("a/sub/p1.png", "b/p1.png", "a/p2_r90.png", "b/p3_plus1.png"):
        os.utime(tmp_path / name, (t0 + 120, t0 + 120))
    return tmp_path


def files(root) -> dict[str, bytes]:
    """Every file under root except dupflow's own output: {relative path: bytes}."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if not name.startswith("dupflow_") and rel.split(os.sep)[0] not in ("cache", "state", "cat"):
                out[rel] = open(path, "rb").read()
    return out


def dupflow_cmd(cwd, *args, stdin=subprocess.DEVNULL, timeout=120):
    """Run the command in cwd with private cache/state folders and a catalog there."""
    env = dict(os.environ, XDG_CACHE_HOME=str(cwd / "cache"), XDG_STATE_HOME=str(cwd / "state"))
    extra = ["--catalog", str(cwd / "cat")] if args and args[0] != "undo" and "--help" not in args else []
    return subprocess.run(
        COMMAND + list(args) + extra,
        cwd=cwd,
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def outputs(folder) -> dict[str, object]:
    """The three output files of one run, parsed: {"results": ..., "lower_quality": ..., "stats": ...}."""
    found = {}
    for path in glob.glob(os.path.join(folder, "dupflow_*.json")):
        match = re.fullmatch(
            r"dupflow_(\d{14}(?:_\d+)?)_(results|lower_quality|stats|journals)\.json", os.path.basename(path)
        )
        assert match, path
        with open(path, encoding="utf-8") as handle:
            found[match.group(2)] = json.load(handle)
    assert {"lower_quality", "results", "stats"} <= set(found)
    return found


def without_timings(stats: dict) -> dict:
    """difPy's part of the stats with the run-dependent durations removed."""
    stats = json.loads(json.dumps(stats))
    stats.pop("dupflow")
    for stage in ("build", "search"):
        stats["process"][stage].pop("duration")
    return stats


def test_help_and_version(tmp_path):
    shown = dupflow_cmd(tmp_path, "--help")
    assert shown.returncode == 0
    for flag in (
        "-D",
        "-Z",
        "-r",
        "-i",
        "-le",
        "-px",
        "-s",
        "-ro",
        "-dim",
        "-mv",
        "-d",
        "-sd",
        "-p",
        "-proc",
        "-ch",
        "--catalog",
        "--scheduler",
        "--storage-options",
        "--keep",
        "--format",
        "--report",
    ):
        assert re.search(rf"(^|[\s\[,]){re.escape(flag)}[\s,\]]", shown.stdout), flag
    version = dupflow_cmd(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"dupflow {dupflow.__version__}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["a", "-r", "maybe"], "-r/--recursive: boolean value expected"),
        (["a", "-px", "3"], 'Invalid value for "px_size" parameter: must be between 10 and 5000.'),
        (["missing"], 'Directory "missing" does not exist'),
        (
            ["a", "-mv", "q", "-d", "true"],
            '"move_to" and "delete" parameter are mutually exclusive. Please select one of them.',
        ),
        (["a", "--keep", "best"], "argument --keep: invalid choice: 'best'"),
        (
            ["a", "-la", "true"],
            'Parameter "-la" / "lazy" was renamed to "-dim" / "same_dim" with difPy v4.2.',
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(folders, args, message):
    before = files(folders)
    done = dupflow_cmd(folders, *args, *QUICK)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("dupflow: error: ") and done.stderr.count("\n") == 1
    assert message in done.stderr
    assert files(folders) == before and not glob.glob(str(folders / "dupflow_*"))


def test_difpy_flags_and_output_files_match_the_api(folders, run, monkeypatch):
    """Every difPy flag away from its default; the three files equal the Python API's answers."""
    flags = [
        "-r",
        "false",
        "-i",
        "true",
        "-le",
        "false",
        "-px",
        "32",
        "-s",
        "2",
        "-ro",
        "false",
        "-dim",
        "false",
        "-ch",
        "3",
    ]
    done = dupflow_cmd(folders, "-D", "a", "b", "-Z", "out", *flags, *QUICK)
    assert done.returncode == 0, done.stderr
    assert "decoding" not in done.stderr  # -p false: no progress bars
    got = outputs(folders / "out")
    assert "saved in 'out'." in done.stdout and all(
        os.path.basename(p) in done.stdout for p in glob.glob(str(folders / "out" / "dupflow_*"))
    )

    # what each flag means: no sub-folder (-r), each folder alone (-i), MSE <= 2 (-s), no quarter turns (-ro)
    assert list(got["results"]) == ["a", "b"]
    assert got["results"]["a"] == {"a/p1.png": [["a/p1_copy.png", 0.0]]}
    [[match, mse]] = got["results"]["b"]["b/p3.png"]
    assert match == "b/p3_plus1.png" and 0 < mse <= 2
    assert got["lower_quality"] == ["a/p1_copy.png", "b/p3_plus1.png"]
    stats = got["stats"]
    assert stats["directory"] == ["a", "b"] and stats["total_files"] == 8
    assert list(stats["invalid_files"]["logs"]) == ["a/notes.txt"]  # -le false: tried
    assert "Unsupported" not in stats["invalid_files"]["logs"]["a/notes.txt"]
    assert stats["process"]["build"]["parameters"] == {
        "recursive": False,
        "in_folder": True,
        "limit_extensions": False,
        "px_size": 32,
        "processes": 1,
    }
    assert stats["process"]["search"]["parameters"] == {
        "similarity_mse": 2,
        "rotate": False,
        "same_dim": False,
        "processes": 1,
        "chunksize": 3,
    }
    assert stats["process"]["search"]["matches_found"] == {"duplicates": 1, "similar": 1}

    monkeypatch.chdir(folders)
    _, found = run(
        "a",
        "b",
        recursive=False,
        in_folder=True,
        limit_extensions=False,
        px_size=32,
        processes=1,
        search={"similarity": 2, "rotate": False, "same_dim": False, "processes": 1, "chunksize": 3},
    )
    assert got["results"] == found.result
    assert got["lower_quality"] == found.lower_quality
    assert without_timings(got["stats"]) == without_timings(found.stats)


def test_search_subcommand_moves_and_undo_restores(folders):
    before = files(folders)
    done = dupflow_cmd(folders, "search", "a", "b", "-mv", "quarantine", *QUICK)
    assert done.returncode == 0, done.stderr
    moved = ["a/p1_copy.png", "a/p2_r90.png", "a/sub/p1.png", "b/p1.png"]
    assert outputs(folders)["lower_quality"] == moved  # written before the move, as difPy does
    assert outputs(folders)["results"] == {  # the oldest file of equal pixels is kept
        "a/p1.png": [["a/p1_copy.png", 0.0], ["a/sub/p1.png", 0.0], ["b/p1.png", 0.0]],
        "a/p2.png": [["a/p2_r90.png", 0.0]],
    }
    after = files(folders)
    assert not any(name in after for name in moved)
    quarantine = {k: v for k, v in after.items() if k.startswith("quarantine")}
    assert len(quarantine) == 4  # the two p1.png kept apart, nothing overwritten
    assert sorted(quarantine.values()) == sorted(before[name] for name in moved)
    assert {k: v for k, v in after.items() if not k.startswith("quarantine")} == {
        k: v for k, v in before.items() if k not in moved
    }
    journal = re.search(r"journal: (.+?\.jsonl)\)", done.stdout).group(1)
    assert os.path.isfile(journal) and journal.startswith(str(folders / "state"))

    undone = dupflow_cmd(folders, "undo", journal)
    assert undone.returncode == 0, undone.stderr
    assert "restored 4 file(s)" in undone.stdout
    assert {k: v for k, v in files(folders).items() if not k.startswith("quarantine")} == before
    assert os.listdir(folders / "quarantine") == []


def test_delete_asks_then_deletes_silently(folders):
    before = files(folders)
    asked = dupflow_cmd(folders, "a", "b", "-d", "true", *QUICK)  # nobody answers on stdin: nothing goes
    assert asked.returncode == 0, asked.stderr
    assert "cannot be undone" in asked.stdout and "canceled" in asked.stdout
    assert files(folders) == before

    done = dupflow_cmd(folders, "a", "b", "-d", "true", "-sd", "true", *QUICK)
    assert done.returncode == 0, done.stderr
    assert "Deleted 4 file(s)" in done.stdout
    assert files(folders) == {
        k: v
        for k, v in before.items()
        if k not in ("a/p1_copy.png", "a/p2_r90.png", "a/sub/p1.png", "b/p1.png")
    }


@pytest.fixture
def quiet_logger():
    """main() configures the "dupflow" logger; put it back afterwards."""
    logger = logging.getLogger("dupflow")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers, logger.propagate = saved[0], saved[2]
    logger.setLevel(saved[1])


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["-s", "abc"],
            'Invalid value for "similarity" parameter: must be "duplicates", "similar" or of type INT',
        ),
        (["-proc", "0"], 'Invalid value for "processes" parameter: must be >= 1.'),
        (["-ch", "x"], 'Invalid value for "chunksize" parameter: must be of type INT or None.'),
        (["-mv", "a/notes.txt"], 'Invalid value for "move_to" parameter: "a/notes.txt" is not a directory.'),
    ],
)
def test_usage_errors_come_before_any_work(folders, monkeypatch, capsys, quiet_logger, args, message):
    """Checked in-process: the error is reported before anything is listed, decoded or started."""
    monkeypatch.chdir(folders)
    monkeypatch.setattr(dupflow.api, "build", lambda *a, **k: pytest.fail("build must not run"))
    assert cli.main(["a", *QUICK, *args]) == 2  # the last -proc wins
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_undo_usage_errors(tmp_path, capsys, quiet_logger):
    assert cli.main(["undo", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "other.jsonl").write_text("hello\n")
    assert cli.main(["undo", str(tmp_path / "other.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a dupflow journal" in err


def test_logging_handler_is_installed_once(tmp_path, capsys, quiet_logger):
    for _ in range(3):
        cli.main(["undo", str(tmp_path / "missing.jsonl")])
    assert [h.get_name() for h in logging.getLogger("dupflow").handlers].count("dupflow-cli") == 1


def test_keep_newest_keeps_the_latest_copy(folders):
    done = dupflow_cmd(folders, "a", "b", "--keep", "newest", "-Z", "out", *QUICK)
    assert done.returncode == 0, done.stderr
    results = outputs(folders / "out")["results"]
    # a/sub/p1.png and b/p1.png are the newest (a tie, equal bytes): the smaller path wins
    assert results["a/sub/p1.png"] == [["a/p1.png", 0.0], ["a/p1_copy.png", 0.0], ["b/p1.png", 0.0]]
    assert results["a/p2_r90.png"] == [["a/p2.png", 0.0]]


def test_formats_summary_and_exclusive_names(folders):
    """--format csv,parquet: one row per match; the summary states invalid files and bytes reclaimable."""
    import pyarrow.parquet as pq

    done = dupflow_cmd(folders, "a", "b", "-s", "2", "-Z", "out", "--format", "csv,parquet", *QUICK)
    assert done.returncode == 0, done.stderr
    got = outputs(folders / "out")
    [csv_path] = glob.glob(str(folders / "out" / "dupflow_*_matches.csv"))
    [parquet_path] = glob.glob(str(folders / "out" / "dupflow_*_matches.parquet"))
    assert csv_path[: -len("_matches.csv")] == parquet_path[: -len("_matches.parquet")]
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(__import__("csv").DictReader(handle))
    table = pq.read_table(parquet_path).to_pylist()
    expected = [
        (primary, match, mse) for primary, matches in got["results"].items() for match, mse in matches
    ]
    assert [(r["primary"], r["match"], float(r["mse"])) for r in rows] == expected
    assert [(r["primary"], r["match"], r["mse"]) for r in table] == expected
    assert list(rows[0]) == ["primary", "match", "mse", "width", "height", "bytes", "folder"]
    for row in table:
        assert row["bytes"] == os.path.getsize(folders / row["match"])
        assert (row["width"], row["height"]) in ((96, 72), (72, 96))
        assert row["folder"] == os.path.dirname(row["match"])
    # the summary: searched, invalid, found, and the bytes the lower-quality files take
    reclaim = sum(os.path.getsize(folders / p) for p in got["lower_quality"])
    searched = got["stats"]["process"]["search"]["files_searched"]
    line = done.stdout.splitlines()[0]
    assert line.startswith(f"{searched} images searched, 1 invalid files: ")
    assert f"({reclaim / 1024:.1f} KiB reclaimable)" in line


def test_runs_in_the_same_second_never_overwrite(tmp_path):
    """Exclusive creation: runs sharing a timestamp get distinct prefixes, even at the same moment."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime

    from dupflow.outputs import find_run, write_outputs

    frozen = lambda: datetime(2026, 1, 2, 3, 4, 5)  # noqa: E731
    rows = [{"primary": "a", "match": "b", "mse": 0.0, "width": 1, "height": 1, "bytes": 1, "folder": "."}]

    def one(k):
        return write_outputs(
            str(tmp_path), {f"p{k}": [["m", 0.0]]}, [f"m{k}"], {"run": k}, rows, ("json", "csv")
        )

    with ThreadPoolExecutor(8) as pool:  # 24 runs at once, most of them within one second
        runs = list(pool.map(one, range(24)))
    frozen_runs = [
        write_outputs(str(tmp_path / "same"), {"p": [[f"m{k}", 0.0]]}, [], {"k": k}, now=frozen)
        for k in range(5)
    ]
    assert [r.prefix for r in frozen_runs] == ["dupflow_20260102030405"] + [
        f"dupflow_20260102030405_{k}" for k in range(1, 5)
    ]
    names = sorted(os.listdir(tmp_path / "same"))
    assert len(names) == 15  # 5 runs x 3 files, none overwritten
    for k, run in enumerate(frozen_runs):
        with open(tmp_path / "same" / f"{run.prefix}_stats.json", encoding="utf-8") as handle:
            assert json.load(handle) == {"k": k}
    assert find_run(str(tmp_path / "same"))["stats"].endswith("dupflow_20260102030405_4_stats.json")
    assert len({run.prefix for run in runs}) == 24
    assert len(glob.glob(str(tmp_path / "dupflow_*_matches.csv"))) == 24


def test_output_folder_that_is_a_file_fails_before_the_search(folders, monkeypatch, capsys, quiet_logger):
    (folders / "taken").write_text("a file")
    monkeypatch.chdir(folders)
    monkeypatch.setattr(dupflow.api, "build", lambda *a, **k: pytest.fail("build must not run"))
    assert cli.main(["a", "-Z", "taken", *QUICK]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and '"taken" is a file, not a folder' in err
    assert cli.main(["a", "--format", "csv,xml", *QUICK]) == 2
    assert "unknown output format 'xml'" in capsys.readouterr().err


def test_undo_of_nothing_exits_1_and_the_prompt_counts_files_and_bytes(folders):
    done = dupflow_cmd(folders, "a", "b", "-mv", "q", *QUICK)
    journal = re.search(r"journal: (.+?\.jsonl)\)", done.stdout).group(1)
    assert outputs(folders)["journals"] == [journal]  # for `dupflow report` on this folder
    first = dupflow_cmd(folders, "undo", journal)
    assert first.returncode == 0 and "restored 4 file(s)" in first.stdout
    again = dupflow_cmd(folders, "undo", journal)  # everything is back already: nothing to restore
    assert again.returncode == 1 and "restored 0 file(s)" in again.stdout
    assert "nothing was restored" in again.stderr
    lower = outputs(folders)["lower_quality"]
    size = sum(os.path.getsize(folders / p) for p in lower)
    asked = dupflow_cmd(folders, "a", "b", "-d", "true", "-Z", "asked", *QUICK)
    assert f"delete {len(lower)} lower quality matched image(s) ({size / 1024:.1f} KiB)?" in asked.stdout


def test_file_facts_are_gathered_for_the_named_files_only(tmp_path):
    """The tables and summary describe the files a result names: their facts (and only theirs) come back,
    the same as from the whole build's, and a file that did not decode has none."""
    from imagegen import make_photo_set

    from dupflow.outputs import FileFacts, file_facts, named_paths

    make_photo_set(tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    with dupflow.build(str(tmp_path / "photos"), show_progress=False, catalog=str(tmp_path / "cat")) as dif:
        found = dupflow.search(dif, show_progress=False, similarity="similar")
        files, images = dif.files, dif.images
        every = {
            path: FileFacts(int(images.width[k]), int(images.height[k]), int(files.size[k]), files.mtime[k])
            for k, path in enumerate(files.path)
            if images.shard[k] >= 0
        }
        named = named_paths(found.result, found.lower_quality)
        some = file_facts(files, images, named | {str(tmp_path / "photos" / "broken.jpg")})
    assert found.lower_quality and named < set(every)  # some decoded files are named, not all
    assert some == {path: every[path] for path in named}

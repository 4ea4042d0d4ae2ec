"""The scheduled hygiene job on real folders and a real S3 endpoint (moto over HTTP): reports, quarantine,
idempotent reruns, the claim that keeps two overlapping runs (two real processes) from both acting,
undo, purge, and config errors that name the key before anything runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest
from imagegen import make_photo_set, photo, save
from stores import Bucket  # the moto S3 server fixture `endpoint` is in conftest

from dupflow import claim as claims
from dupflow import cli
from dupflow.hygiene import ConfigError, load_config, main, run
from dupflow.hygiene.run import EXIT_CODES, STATE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_config(folder, **keys) -> str:
    """A TOML config file from keyword values (lists, strings, numbers, booleans, one inline table)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    path = os.path.join(folder, "job.toml")
    with open(path, "w") as handle:
        handle.writelines(f"{k} = {value(v)}\n" for k, v in keys.items())
    return path


def hygiene(config: str, *extra: str, timeout: float = 120) -> tuple[int, dict | None, str]:
    """Run the job as a scheduler does: a process, one JSON line on stdout, an exit code."""
    proc = subprocess.run(
        [sys.executable, "-m", "dupflow.hygiene", config, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) <= 1, proc.stdout
    return proc.returncode, json.loads(lines[0]) if lines else None, proc.stderr


def files_under(folder) -> set[str]:
    found = set()
    for base, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.update(os.path.relpath(os.path.join(base, n), folder) for n in names if not n.startswith("."))
    return found


def report_folders(reports) -> list[str]:
    return sorted(n for n in os.listdir(reports) if not n.startswith(".")) if os.path.isdir(reports) else []


@pytest.fixture
def job(tmp_path):
    """A local job: incoming photos with planted copies, quarantine action, an embedded cluster."""
    incoming = tmp_path / "incoming"
    planted = make_photo_set(incoming, n_unrelated=4, seed=5)
    config = write_config(
        tmp_path,
        sources=["incoming"],
        reports="reports",
        similarity="similar",
        action="quarantine",
        quarantine="quarantine",
    )
    return tmp_path, config, planted


# 1. a run: dated report with difPy's JSON files, quarantine journaled; a rerun changes nothing


def test_run_reports_quarantines_and_a_rerun_changes_nothing(job):
    tmp, config, planted = job
    before = files_under(tmp / "incoming")
    code, summary, err = hygiene(config)
    assert code == 0 and summary["status"] == "done", err
    (folder,) = report_folders(tmp / "reports")
    assert summary["report"] == str(tmp / "reports" / folder)
    names = os.listdir(tmp / "reports" / folder)
    by_suffix = {n.rsplit("_", 1)[-1]: n for n in names}
    results = json.load(open(tmp / "reports" / folder / by_suffix["results.json"]))
    lower = json.load(open(tmp / "reports" / folder / by_suffix["quality.json"]))
    stats = json.load(open(tmp / "reports" / folder / by_suffix["stats.json"]))
    assert {"matches.csv", "matches.parquet", "report.html"} <= set(by_suffix)  # tables and the HTML report
    html = open(tmp / "reports" / folder / "report.html").read()
    assert all(os.path.basename(p) in html for p in lower)
    written = json.load(open(tmp / "reports" / folder / "summary.json"))
    assert {**written, "seconds": 0} == {**summary, "seconds": 0}  # the same line, but for the final time
    # what was reported is exactly what was moved, and every primary stayed
    moved_away = before - files_under(tmp / "incoming")
    assert moved_away == {os.path.relpath(p, tmp / "incoming") for p in lower}
    assert len(files_under(tmp / "quarantine")) == len(lower) == summary["quarantined"] > 0
    assert all(os.path.exists(p) for p in results)
    planted_copies = set(planted["copy"] + planted["rot90"] + planted["rot180"] + planted["rot270"])
    assert planted_copies <= moved_away | {os.path.relpath(p, tmp / "incoming") for p in results}
    assert stats["process"]["search"]["files_searched"] == summary["images"] == len(before)
    assert summary["groups"] == len(results) and summary["lower_quality"] == len(lower)
    # the journal beside the report is a real journal: every planned move is done
    journal = tmp / "reports" / folder / os.path.basename(summary["journal"])
    ops = [json.loads(line).get("op") for line in open(journal)]
    assert ops.count("done") == ops.count("plan") == len(lower)

    # nothing new: nothing searched, written or moved, and it says so
    snapshot = (files_under(tmp / "incoming"), files_under(tmp / "quarantine"))
    code, again, err = hygiene(config)
    assert code == 0 and again["status"] == "unchanged", err
    assert again["report"] == summary["report"] and again["quarantined"] == 0
    assert report_folders(tmp / "reports") == [folder]
    assert (files_under(tmp / "incoming"), files_under(tmp / "quarantine")) == snapshot

    # one new upload that copies a kept image: the next run moves that one file only
    kept = sorted(results)[0]
    shutil.copy(kept, tmp / "incoming" / "new_upload.png")
    time.sleep(1.1)  # a new dated folder (second resolution)
    code, third, err = hygiene(config)
    assert code == 0 and third["status"] == "done" and third["quarantined"] == 1, err
    assert third["decoded"] == 1  # the catalog beside the data: only the new file is decoded
    assert len(report_folders(tmp / "reports")) == 2
    assert "new_upload.png" not in files_under(tmp / "incoming")
    assert "new_upload.png" in files_under(tmp / "quarantine")


def test_undo_restores_a_quarantine_from_the_report_journal(job, capsys):
    tmp, config, _ = job
    before = files_under(tmp / "incoming")
    summary = run(config)
    assert summary.status == "done" and summary.quarantined > 0
    assert files_under(tmp / "incoming") != before
    assert cli.main(["undo", summary.journal]) == 0
    assert f"restored {summary.quarantined} file(s)" in capsys.readouterr().out
    assert files_under(tmp / "incoming") == before and not files_under(tmp / "quarantine")


def test_report_action_moves_nothing(tmp_path, client):
    make_photo_set(tmp_path / "incoming", n_unrelated=3, seed=8)
    before = files_under(tmp_path / "incoming")
    config = write_config(
        tmp_path, sources=["incoming"], reports="out", similarity=0, cluster=client.scheduler.address
    )
    summary = run(config)
    assert summary.status == "done" and summary.lower_quality > 0 and summary.quarantined == 0
    assert files_under(tmp_path / "incoming") == before
    assert summary.journal is None and len(report_folders(tmp_path / "out")) == 1


# 2. two overlapping runs of one config never both act


def test_a_held_claim_makes_a_run_stand_down_and_an_expired_one_is_taken_over(job):
    tmp, config, _ = job
    state = str(tmp / "reports" / STATE)
    held = claims.acquire(state, 600, {})
    assert held is not None and claims.acquire(state, 600, {}) is None
    before = files_under(tmp / "incoming")
    code, summary, _ = hygiene(config)
    assert code == EXIT_CODES["busy"] == 3 and summary["status"] == "busy"
    assert files_under(tmp / "incoming") == before and not report_folders(tmp / "reports")
    # a claim whose run died (expired) is taken over; the dead run can no longer act on it
    claims.release(held, {})
    stale = claims.acquire(state, 60, {}, now=time.time() - 3600)
    assert stale is not None and claims.holder(state, {}) is None
    code, summary, err = hygiene(config)
    assert code == 0 and summary["status"] == "done", err
    assert not claims.still_held(stale, {})


def _overlapping_runs(config: str, claim_file: str, exists) -> list[tuple[int, dict, str]]:
    """Two real processes of the job: the second, already started and imported, runs its job the moment
    the first one's claim appears, so the two overlap however fast the first one is."""
    argv = [sys.executable, "-m", "dupflow.hygiene", config]
    waiting = [
        sys.executable,
        "-c",
        "import sys; from dupflow.hygiene import main; sys.stdin.readline(); sys.exit(main(sys.argv[1:]))",
        config,
    ]
    second = subprocess.Popen(
        waiting, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 60
    while not exists(claim_file) and time.time() < deadline:
        time.sleep(0.005)
    second.stdin.write("go\n")
    second.stdin.flush()
    out = []
    for proc in (first, second):
        stdout, stderr = proc.communicate(timeout=120)
        out.append((proc.returncode, json.loads(stdout.strip() or "null"), stderr))
    return out


def test_two_overlapping_processes_never_both_act_on_a_folder(job):
    tmp, config, _ = job
    claim = str(tmp / "reports" / STATE / "claim-00000001.json")
    (c1, s1, e1), (c2, s2, e2) = _overlapping_runs(config, claim, os.path.exists)
    assert (c1, s1["status"]) == (0, "done"), e1
    assert (c2, s2["status"]) == (3, "busy"), e2
    assert len(report_folders(tmp / "reports")) == 1
    assert len(files_under(tmp / "quarantine")) == s1["quarantined"] > 0
    # started at the same instant, whichever wins: one acts, the other stands down or finds nothing new
    make_photo_set(tmp / "incoming" / "batch2", n_unrelated=3, seed=9)
    argv = [sys.executable, "-m", "dupflow.hygiene", config]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    statuses = sorted(json.loads(p.communicate(timeout=120)[0])["status"] for p in procs)
    assert statuses in (["busy", "done"], ["done", "unchanged"])
    assert len(report_folders(tmp / "reports")) == 2


# 3. purge: only journaled moves, only old enough, only unchanged files inside the quarantine


def test_purge_removes_only_old_journaled_unchanged_quarantined_files(job):
    tmp, config, _ = job
    summary = run(config)
    assert summary.quarantined >= 3
    quarantined = sorted(files_under(tmp / "quarantine"))
    stray = save(photo(77), tmp / "quarantine" / "not_from_a_journal.png")  # nobody moved it here
    changed = tmp / "quarantine" / quarantined[0]
    with open(changed, "ab") as handle:
        handle.write(b"edited since")
    # not asked: nothing purged; asked with 30 days, moves of today are kept
    text = open(config).read()
    with open(config, "w") as handle:
        handle.write(text + "purge_after_days = 30\n")
    assert run(config).purged == 0 and len(files_under(tmp / "quarantine")) == len(quarantined) + 1
    # the same journal, dated 40 days back: its unchanged files go, the edited one and the stray stay
    registry = tmp / "reports" / STATE / "journals"
    (name,) = os.listdir(registry)
    records = [json.loads(line) for line in open(registry / name)]
    records[0]["created"] = (datetime.now() - timedelta(days=40)).isoformat()
    with open(registry / name, "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    purge = run(config)
    assert purge.purged == len(quarantined) - 1
    assert files_under(tmp / "quarantine") == {quarantined[0], "not_from_a_journal.png"}
    assert os.path.exists(stray)
    ops = [
        json.loads(line)
        for line in open(tmp / "reports" / STATE / "purges" / os.path.basename(purge.purge_journal))
    ]
    assert ops[0]["action"] == "purge" and sum(r.get("op") == "done" for r in ops) == purge.purged
    assert run(config).purged == 0  # nothing left to purge


# 4. bad config: one clear error naming the key, before anything runs


@pytest.mark.parametrize(
    "keys, named",
    [
        ({"reports": "r"}, "sources"),
        ({"sources": ["in"]}, "reports"),
        ({"sources": [], "reports": "r"}, "sources"),
        ({"sources": ["in"], "reports": "r", "similarty": 5}, "similarty"),
        ({"sources": ["in"], "reports": "r", "similarity": -1}, "similarity"),
        ({"sources": ["in"], "reports": "r", "action": "delete"}, "action"),
        ({"sources": ["in"], "reports": "r", "action": "quarantine"}, "quarantine"),
        ({"sources": ["in"], "reports": "r", "action": "quarantine", "quarantine": "in/q"}, "quarantine"),
        ({"sources": ["in"], "reports": "r", "reference": ["in/lake"]}, "reference"),
        ({"sources": ["in"], "reports": "r", "px_size": 5}, "px_size"),
        ({"sources": ["in"], "reports": "r", "rotate": "yes"}, "rotate"),
        ({"sources": ["in"], "reports": "r", "keep": "best"}, "keep"),
        ({"sources": ["in"], "reports": "r", "purge_after_days": 0, "quarantine": "q"}, "purge_after_days"),
        ({"sources": ["in"], "reports": "r", "purge_after_days": 30}, "purge_after_days"),
        ({"sources": ["in"], "reports": "r", "claim_minutes": 0}, "claim_minutes"),
        ({"sources": ["in"], "reports": "r", "cluster": "mainframe"}, "cluster"),
        ({"sources": ["in"], "reports": "r", "cluster": {"name": "slurm", "workers": 0}}, "cluster"),
        ({"sources": ["in"], "reports": "r", "cluster": 8786}, "cluster"),
    ],
)
def test_bad_config_names_the_key_and_nothing_runs(tmp_path, capsys, keys, named):
    config = write_config(tmp_path, **keys)
    with pytest.raises(ConfigError, match=f'"{named}"'):
        load_config(config)
    code = main([config])  # the command, in this process (one case below runs it as a process)
    out, err = capsys.readouterr()
    assert code == EXIT_CODES["bad_config"] == 2 and not out
    assert len(err.strip().splitlines()) == 1 and f'"{named}"' in err
    assert sorted(os.listdir(tmp_path)) == ["job.toml"]  # no report, claim or catalog was made


def test_unreadable_config_files_are_one_line_errors(tmp_path):
    bad = write_config(tmp_path, sources=["in"], reports="r", action="delete")
    code, summary, err = hygiene(bad)  # as a scheduler runs it: a process, stdout empty, one line on stderr
    assert code == 2 and summary is None and '"action"' in err and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["job.toml"]
    broken = tmp_path / "broken.toml"
    broken.write_text("sources = [\n")
    for path, words in ((broken, "not valid TOML"), (tmp_path / "missing.toml", "does not exist")):
        code, summary, err = hygiene(str(path))
        assert code == 2 and summary is None and words in err and len(err.strip().splitlines()) == 1


def test_the_example_config_is_valid_and_documents_every_key():
    example = os.path.join(ROOT, "pipelines", "hygiene.example.toml")
    config = load_config(example)
    assert config.action == "report" and config.reference and config.sources
    from dupflow.hygiene.config import KEYS

    text = open(example).read()
    assert all(f"{key} =" in text or f"[{key}]" in text for key in KEYS)


def test_a_failed_run_says_why_and_exits_1(tmp_path):
    save(photo(1), tmp_path / "incoming" / "a.png")
    config = write_config(tmp_path, sources=["incoming"], reports="out", catalog="incoming/a.png/cat")
    code, summary, err = hygiene(config)
    assert code == 1 and summary["status"] == "failed" and summary["message"], err
    assert claims.holder(str(tmp_path / "out" / STATE), {}) is None  # the claim is released


# 5. the same job on a bucket (moto's S3 server over HTTP): report, quarantine, undo, rerun, overlap


def bucket_job(tmp_path, endpoint: str, seed: int, **keys) -> tuple[Bucket, str, set[str]]:
    """A fresh bucket with photos (planted copies) under incoming/, and a quarantine job over it whose
    catalog, reports and quarantine are in the bucket too; returns the bucket, config and uploaded keys."""
    bucket = Bucket(endpoint)
    make_photo_set(tmp_path / "photos", n_unrelated=4, seed=seed)
    bucket.fs.put(str(tmp_path / "photos"), f"{bucket.name}/incoming", recursive=True)
    config = write_config(
        tmp_path,
        sources=[bucket.url("incoming")],
        reports=bucket.url("reports"),
        catalog=bucket.url(".dupflow-catalog"),
        action="quarantine",
        quarantine=bucket.url("quarantine"),
        storage_options=bucket.options,
        **keys,
    )
    return bucket, config, set(bucket.keys("incoming"))


def test_bucket_job_reports_quarantines_undoes_and_never_runs_twice(tmp_path, endpoint, capsys):
    bucket, config, uploaded = bucket_job(tmp_path, endpoint, 12, similarity="similar")
    claim_key = f"{bucket.name}/reports/{STATE}/claim-00000001.json"
    exists = lambda key: bucket.fs.invalidate_cache() or bucket.fs.exists(key)  # noqa: E731
    (c1, s1, e1), (c2, s2, e2) = _overlapping_runs(config, claim_key, exists)
    assert (c1, s1["status"]) == (0, "done"), e1
    assert (c2, s2["status"]) == (3, "busy"), e2
    assert s1["report"].startswith(bucket.url("reports/")) and s1["journal"].startswith("s3://")
    assert "testing" not in json.dumps(s1)  # no credential in the summary
    report = s1["report"][len(f"s3://{bucket.name}/") :]
    written = bucket.keys(report)
    assert {n.rsplit("_", 1)[-1] for n in written} >= {
        "results.json",
        "quality.json",
        "stats.json",
        "summary.json",
    }
    lower = json.loads(next(v for k, v in written.items() if k.endswith("_lower_quality.json")))
    left = set(bucket.keys("incoming"))
    assert len(lower) == s1["quarantined"] == len(bucket.keys("quarantine")) > 0
    assert uploaded - left == {p[len(bucket.url("incoming")) + 1 :] for p in lower}
    # nothing new: nothing written or moved
    code, again, err = hygiene(config)
    assert (code, again["status"]) == (0, "unchanged"), err
    assert bucket.keys(report) == written and set(bucket.keys("incoming")) == left
    # undo straight from the journal kept beside the report in the bucket
    opts = json.dumps(bucket.options)
    assert cli.main(["undo", s1["journal"], "--storage-options", opts]) == 0
    assert f"restored {s1['quarantined']} file(s)" in capsys.readouterr().out
    assert set(bucket.keys("incoming")) == uploaded and not bucket.keys("quarantine")

"""The Airflow DAG in pipelines/airflow/, run for real with `airflow dags test` (Airflow 3, its own virtual
environment) against a local folder and against a bucket on a local moto S3 server.

Airflow lives in a virtual environment of its own, cached under ~/.cache/dupflow-ci/ and keyed by the pinned
Airflow version and dupflow's dependencies, so its pins never constrain dupflow's. dupflow is installed into
it from this working tree (editable) when it points elsewhere. Measured on the 2-core machine: cold, Airflow
installs in 76 s and dupflow's dependencies in 70 s (under load); warm, this file takes 43 s on a quiet
machine (`airflow db migrate` 6 s, each `airflow dags test` 7-14 s), up to 8 minutes on a saturated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from imagegen import make_photo_set
from test_pipeline_hygiene import bucket_job, write_config

from dupflow import claim as claims
from dupflow.hygiene.run import STATE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

AIRFLOW_VERSION = "3.3.2"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAGS = os.path.join(ROOT, "pipelines", "airflow")


def _cache_key() -> str:
    """The pinned Airflow version and dupflow's dependency list: a change makes a new environment."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        text = handle.read().decode()
    dependencies = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M).group(1)
    return hashlib.sha256(f"{AIRFLOW_VERSION}|{dependencies}".encode()).hexdigest()[:12]


def _pip(venv: str, *args: str) -> None:
    subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", *args], check=True)


@pytest.fixture(scope="session")
def airflow(tmp_path_factory):
    """`airflow` of a cached virtual environment (created when missing) with dupflow from this tree, and
    an environment for it: a fresh AIRFLOW_HOME (SQLite metadata database, migrated) and our DAGs folder."""
    cache = os.environ.get("DUPFLOW_CI_CACHE") or os.path.expanduser("~/.cache/dupflow-ci")
    venv = os.path.join(cache, f"airflow-{AIRFLOW_VERSION}-{_cache_key()}")
    if not os.path.exists(os.path.join(venv, ".complete")):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        _pip(venv, f"apache-airflow=={AIRFLOW_VERSION}", "s3fs>=2024.2", "-e", ROOT)
        open(os.path.join(venv, ".complete"), "w").close()
    python = os.path.join(venv, "bin", "python")
    where = subprocess.run(
        [python, "-c", "import dupflow, os; print(os.path.dirname(os.path.dirname(dupflow.__file__)))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if where != ROOT:  # dupflow from this working tree, whatever checkout made the environment
        _pip(venv, "--no-deps", "-e", ROOT)
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": DAGS,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "NO_PROXY": "*",
    }
    command = os.path.join(venv, "bin", "airflow")
    subprocess.run([command, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return command, env


def dags_test(airflow, config: str, date: str) -> tuple[int, str, list[dict]]:
    """`airflow dags test dupflow_hygiene DATE` with the job's config; its exit code, log and summaries."""
    command, env = airflow
    proc = subprocess.run(
        [command, "dags", "test", "dupflow_hygiene", date],
        env={**env, "DUPFLOW_HYGIENE_CONFIG": config},
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    summaries = [json.loads(line) for line in re.findall(r'^(\{"status": .*\})$', log, re.M)]
    return proc.returncode, log, summaries


def test_dag_runs_the_job_on_a_folder_and_skips_when_the_job_is_claimed(airflow, tmp_path):
    planted = make_photo_set(tmp_path / "incoming", n_unrelated=4, seed=31)
    config = write_config(
        tmp_path, sources=["incoming"], reports="reports", action="quarantine", quarantine="q"
    )
    code, log, summaries = dags_test(airflow, config, "2026-12-01")
    assert code == 0 and "state=success" in log, log[-3000:]
    (summary,) = summaries
    assert summary["status"] == "done" and summary["quarantined"] > 0
    moved = set(os.listdir(tmp_path / "q"))
    assert {os.path.basename(p) for p in planted["copy"] + planted["rot180"]} <= moved
    assert len(moved) == summary["quarantined"] and os.path.isdir(summary["report"])
    # the next night, with another run holding the job: the task is skipped and nothing changes
    held = claims.acquire(str(tmp_path / "reports" / STATE), 30 * 60, {})
    code, log, summaries = dags_test(airflow, config, "2026-12-02")
    assert code == 0 and "new_state=skipped" in log, log[-3000:]
    assert summaries and summaries[0]["status"] == "busy"
    assert set(os.listdir(tmp_path / "q")) == moved
    claims.release(held, {})


def test_dag_runs_the_job_on_a_bucket(airflow, tmp_path, endpoint):
    bucket, config, before = bucket_job(tmp_path, endpoint, 32)
    code, log, summaries = dags_test(airflow, config, "2026-12-03")
    assert code == 0 and "state=success" in log, log[-3000:]
    (summary,) = summaries
    assert summary["status"] == "done" and summary["report"].startswith(bucket.url("reports"))
    quarantined = set(bucket.keys("quarantine"))
    assert len(quarantined) == summary["quarantined"] > 0
    assert len(before - set(bucket.keys("incoming"))) == len(quarantined)
    report = summary["report"][len(f"s3://{bucket.name}/") :]
    assert any(name.endswith("_results.json") for name in bucket.keys(report))
    assert "testing" not in json.dumps(summary)  # no credential in what Airflow keeps (XCom)

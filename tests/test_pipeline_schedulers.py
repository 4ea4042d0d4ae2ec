"""The cron line and the systemd service + timer in pipelines/: checked by the tools that read them
(`systemd-analyze verify`), and their commands run exactly as written against a real job."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from imagegen import make_photo_set
from test_pipeline_hygiene import write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = os.path.join(ROOT, "pipelines")
VENV = os.path.dirname(os.path.dirname(sys.executable))  # the environment running these tests


@pytest.fixture
def srv(tmp_path):
    """A stand-in for /srv/dupflow: the virtual environment (a link to ours) and a job over real photos."""
    folder = tmp_path / "srv"
    folder.mkdir()
    os.symlink(VENV, folder / ".venv")
    make_photo_set(folder / "incoming", n_unrelated=3, seed=41)
    os.rename(write_config(folder, sources=["incoming"], reports="reports"), folder / "hygiene.toml")
    return folder


def _last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def test_cron_line_runs_the_job(srv):
    lines = open(os.path.join(PIPELINES, "cron", "dupflow-hygiene.crontab")).read().splitlines()
    entries = [line for line in lines if line and not line.startswith("#")]
    variables = dict(line.split("=", 1) for line in entries if re.match(r"^[A-Z_]+=", line))
    (job,) = [line for line in entries if not re.match(r"^[A-Z_]+=", line)]
    fields = job.split(None, 5)
    assert fields[:5] == ["0", "2", "*", "*", "*"]  # every night at 02:00
    assert variables == {"DUPFLOW": "/srv/dupflow"}
    # cron runs the command with /bin/sh and the crontab's variables: here DUPFLOW points at the stand-in
    env = {**os.environ, "DUPFLOW": str(srv)}
    done = subprocess.run(["/bin/sh", "-c", fields[5]], env=env, timeout=300)
    assert done.returncode == 0
    summary = _last_json(open(srv / "hygiene.log").read())
    assert summary["status"] == "done" and summary["lower_quality"] > 0 and summary["exit_code"] == 0
    assert os.path.isdir(summary["report"])


def test_systemd_units_verify_and_their_command_runs(srv, tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    for name in ("dupflow-hygiene.service", "dupflow-hygiene.timer"):
        text = open(os.path.join(PIPELINES, "systemd", name)).read()
        (units / name).write_text(text.replace("/srv/dupflow", str(srv)).replace("User=dupflow\n", ""))
    verify = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(units / "dupflow-hygiene.service"),
            str(units / "dupflow-hygiene.timer"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stderr
    calendar = subprocess.run(
        ["systemd-analyze", "calendar", "*-*-* 02:00:00"], capture_output=True, text=True, timeout=60
    )
    assert calendar.returncode == 0 and "02:00:00" in calendar.stdout
    service = (units / "dupflow-hygiene.service").read_text()
    command = shlex.split(re.search(r"^ExecStart=(.*)$", service, re.M).group(1))
    env = re.search(r"^Environment=(\w+)=(.*)$", service, re.M).groups()
    done = subprocess.run(
        command,
        cwd=re.search(r"^WorkingDirectory=(.*)$", service, re.M).group(1),
        env={**os.environ, env[0]: env[1]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert _last_json(done.stdout)["status"] == "done"
    assert "SuccessExitStatus=3" in service  # "another run holds the job" is not a failed unit

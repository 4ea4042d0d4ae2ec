"""deploy/: the SLURM and PBS jobqueue YAML render valid job scripts through dupflow's own cluster options,
and the batch scripts are valid bash. (The SLURM batch script also runs for real in test_slurm.py.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from dupflow import cluster
from dupflow.cluster import Placement

DEPLOY = os.path.join(os.path.dirname(__file__), os.pardir, "deploy")


def _site_config(kind: str, **overrides):
    """dask config with deploy/<kind>/jobqueue.yaml loaded over dask-jobqueue's defaults (as Dask would
    read it from DASK_CONFIG), plus overrides such as a site's queue and account."""
    import dask
    import yaml

    cluster._cluster_class(kind)  # imported as dupflow does (lazily): loads dask-jobqueue's defaults
    with open(os.path.join(DEPLOY, kind, "jobqueue.yaml")) as handle:
        ours = yaml.safe_load(handle)["jobqueue"][kind]
    unknown = set(ours) - set(dask.config.get(f"jobqueue.{kind}"))
    assert not unknown, f"keys dask-jobqueue does not know: {unknown}"
    return dask.config.set({f"jobqueue.{kind}": {**dask.config.get(f"jobqueue.{kind}"), **ours, **overrides}})


def _render(kind: str, **overrides) -> str:
    with _site_config(kind, **overrides):
        made = cluster.make_cluster(
            Placement(cluster=kind, workers=2, lifetime="110m", lifetime_stagger="5m")
        )
        try:
            return made.job_script()
        finally:
            made.close()


def _directives(script: str, prefix: str) -> list[list[str]]:
    return [shlex.split(line[len(prefix) :]) for line in script.splitlines() if line.startswith(prefix)]


def _worker_command(script: str) -> list[str]:
    line = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    assert len(line) == 1, script
    return shlex.split(line[0])


def _bash_syntax_ok(script: str, tmp_path) -> None:
    path = tmp_path / "job.sh"
    path.write_text(script)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


PBS_OPTIONS = {"-N", "-q", "-A", "-l", "-j", "-o", "-e", "-m", "-M", "-V", "-W", "-S", "-P"}


def test_pbs_yaml_renders_a_valid_job_script(tmp_path):
    script = _render("pbs", queue="workq", account="proj123")
    _bash_syntax_ok(script, tmp_path)
    directives = _directives(script, "#PBS ")
    assert directives and all(d[0] in PBS_OPTIONS for d in directives), directives
    flat = {d[0]: [] for d in directives}
    for d in directives:
        flat[d[0]].append(" ".join(d[1:]))
    assert flat["-N"] == ["dupflow-worker"] and flat["-q"] == ["workq"] and flat["-A"] == ["proj123"]
    resources = flat["-l"]
    assert "walltime=02:00:00" in resources
    select = [r for r in resources if r.startswith("select=")]
    # PBS Pro's chunk syntax: select=N:ncpus=C:mem=M, memory in a unit qsub accepts
    assert len(select) == 1 and re.fullmatch(r"select=1:ncpus=4:mem=\d+(\.\d+)?[KMGT]B", select[0]), select
    command = _worker_command(script)
    assert command[0] == sys.executable
    assert command[command.index("--nthreads") + 1] == "4"
    assert command[command.index("--lifetime") + 1] == "110m"
    assert command[command.index("--lifetime-stagger") + 1] == "5m"


def test_slurm_yaml_renders_a_valid_job_script(tmp_path):
    script = _render("slurm", queue="compute", account="proj123")
    _bash_syntax_ok(script, tmp_path)
    directives = {d[0].split("=")[0]: d for d in _directives(script, "#SBATCH ")}
    assert directives["-J"] == ["-J", "dupflow-worker"]
    assert directives["-p"] == ["-p", "compute"] and directives["-A"] == ["-A", "proj123"]
    assert directives["--cpus-per-task"] == ["--cpus-per-task=4"]
    assert directives["-t"] == ["-t", "02:00:00"]
    assert re.fullmatch(r"--mem=\d+G", directives["--mem"][0])
    command = _worker_command(script)
    assert command[command.index("--lifetime") + 1] == "110m"


@pytest.mark.parametrize("path", ["slurm/dupflow-search.sbatch", "pbs/dupflow-search.pbs"])
def test_batch_scripts_are_valid_bash_and_run_dupflow_on_the_queue(path):
    full = os.path.join(DEPLOY, path)
    assert os.access(full, os.X_OK)
    done = subprocess.run(["bash", "-n", full], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = open(full).read()
    kind = path.split("/")[0]
    assert f"--cluster {kind}" in text and "--lifetime" in text and "DASK_CONFIG" in text

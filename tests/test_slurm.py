"""A real SLURM on localhost: munged, slurmctld and slurmd started by the tests (as root, CI's user) with a
minimal configuration in a temporary folder, and stopped afterwards.

`--cluster slurm` submits worker jobs through dask-jobqueue (squeue shows them), the search gives the
embedded answer, one job cancelled mid-run (scancel) changes nothing, and no job is left afterwards, also
when the command is interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from clusterkit import answer, large_photos, wait_for

import dupflow

pytestmark = pytest.mark.skipif(
    shutil.which("slurmctld") is None, reason="slurmctld is not installed (CI installs Debian's slurm-wlm)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """\
ClusterName=dupflowci
SlurmctldHost={host}
AuthType=auth/munge
AuthInfo=socket={dir}/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _daemon(args: list[str], log) -> subprocess.Popen:
    """A daemon in the foreground, in its own session (so it and what it spawns are stopped together)."""
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _squeue() -> list[tuple[str, str]]:
    """(job id, state) of every job in the queue."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %t"], capture_output=True, text=True, check=True).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """munged + slurmctld + slurmd on this host; SLURM_CONF points sbatch/squeue/scancel at them."""
    folder = tmp_path_factory.mktemp("slurm")
    (folder / "state").mkdir()
    (folder / "spool").mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname()
    conf = folder / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(host=host, dir=folder, ctld_port=_free_port(), slurmd_port=_free_port())
    )
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    log = open(folder / "daemons.log", "ab")
    daemons = [
        _daemon(
            ["munged", "-F", "-f", f"--socket={folder}/munge.sock", f"--key-file={key}"]
            + [f"--log-file={folder}/munged.log", f"--pid-file={folder}/munged.pid"]
            + [f"--seed-file={folder}/munged.seed"],
            log,
        )
    ]
    try:
        wait_for(lambda: (folder / "munge.sock").exists(), 30, "munged")
        daemons.append(_daemon(["slurmctld", "-D", "-i", "-f", str(conf)], log))
        wait_for(
            lambda: subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0, 60, "slurmctld"
        )
        daemons.append(_daemon(["slurmd", "-D", "-f", str(conf)], log))
        wait_for(
            lambda: (
                subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip()
                == "idle"
            ),
            60,
            "the node to be idle",
        )
        yield folder
    finally:
        if _squeue_safe():
            subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True)
        for daemon in reversed(daemons):  # slurmd, slurmctld, munged
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(timeout=10)
        log.close()
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
    for daemon in daemons:
        assert daemon.poll() is not None


def _squeue_safe() -> bool:
    try:
        return bool(_squeue())
    except (subprocess.CalledProcessError, OSError):
        return False


@pytest.fixture(scope="module")
def jobqueue_config(slurm):
    """dask-jobqueue's SLURM settings as a site would put them in jobqueue.yaml: small jobs on this host."""
    import dask

    from dupflow import cluster

    # dask-jobqueue's defaults first: a dask.config.set made before they exist would drop them on exit
    cluster._cluster_class("slurm")
    settings = {
        "jobqueue.slurm.cores": 1,
        "jobqueue.slurm.processes": 1,
        "jobqueue.slurm.memory": "1GB",
        "jobqueue.slurm.walltime": "00:30:00",
        "jobqueue.slurm.python": sys.executable,
        "jobqueue.slurm.scheduler-options": {"host": "127.0.0.1"},
        "jobqueue.slurm.log-directory": str(slurm / "joblogs"),
        "jobqueue.slurm.local-directory": str(slurm / "work"),
    }
    with dask.config.set(settings):
        yield settings


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Large enough photos that decoding lasts a few seconds; planted byte copies and re-encodes."""
    return large_photos(tmp_path_factory.mktemp("slurm-photos"), 24, copy_every=3, reencode_every=4)


@pytest.fixture(scope="module")
def embedded(photos, tmp_path_factory):
    with dupflow.build(photos, show_progress=False, catalog=str(tmp_path_factory.mktemp("e") / "c")) as dif:
        expected = answer(dupflow.search(dif, show_progress=False, similarity="similar"))
    assert expected[0]
    return expected


@pytest.mark.slow
def test_slurm_jobs_do_the_search_and_a_cancelled_job_changes_nothing(
    slurm, jobqueue_config, photos, embedded, tmp_path
):
    catalog = tmp_path / "cat"
    seen: dict = {"running": [], "cancelled": None}

    def cancel_one_mid_run():
        """Once both worker jobs run and the first shard is written (decoding is under way), scancel one."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jobs = [job for job, state in _squeue() if state == "R"]
            if len(jobs) >= 2:
                seen["running"] = jobs
            shards = list(catalog.glob("*/shards/*.parquet"))
            if len(seen["running"]) >= 2 and shards:
                subprocess.run(["scancel", seen["running"][0]], check=True)
                seen["cancelled"] = seen["running"][0]
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=cancel_one_mid_run)
    watcher.start()
    dif = dupflow.build(
        photos, show_progress=False, catalog=str(catalog), cluster={"name": "slurm", "workers": 2}
    )
    try:
        watcher.join(200)
        assert seen["cancelled"] is not None, "the worker jobs never ran together while decoding"
        assert dif.stats["dupflow"]["build"]["cluster"]["kind"] == "slurm"
        assert dif.stats["dupflow"]["build"]["decoded"] == len(os.listdir(photos))
        assert answer(dupflow.search(dif, show_progress=False, similarity="similar")) == embedded
        assert seen["cancelled"] not in [job for job, state in _squeue() if state == "R"]
    finally:
        dif.close()
    wait_for(lambda: not _squeue(), 60, "an empty queue after close")


@pytest.mark.slow
def test_cli_cluster_slurm_interrupted_leaves_no_job(slurm, jobqueue_config, photos, embedded, tmp_path):
    """The command line with --cluster slurm: the same answer; interrupted mid-run, it cancels its jobs."""
    config = tmp_path / "dask-config"
    config.mkdir()
    (config / "jobqueue.yaml").write_text(json.dumps({"jobqueue": {"slurm": _nested(jobqueue_config)}}))
    env = {**os.environ, "DASK_CONFIG": str(config)}
    command = [sys.executable, "-m", "dupflow.cli", photos, "-s", "similar", "-p", "false"]
    command += ["--cluster", "slurm", "--workers", "1", "--catalog", str(tmp_path / "cat")]
    done = subprocess.run(
        command + ["-Z", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    results = [name for name in os.listdir(tmp_path / "out") if name.endswith("_results.json")]
    assert json.loads((tmp_path / "out" / results[0]).read_text()) == embedded[0]
    wait_for(lambda: not _squeue(), 60, "an empty queue after the command")

    # interrupted (Ctrl-C, or SIGTERM as from a cancelled batch job) while its worker job runs
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            command[:-1] + [str(tmp_path / f"cat-{sig.name}"), "-Z", str(tmp_path / "out2")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: [job for job, state in _squeue() if state == "R"], 120, "a running worker job")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        wait_for(lambda: not _squeue(), 60, f"an empty queue after {sig.name}")


def _nested(settings: dict) -> dict:
    """{"jobqueue.slurm.cores": 1} -> {"cores": 1}, for a jobqueue.yaml (JSON is valid YAML)."""
    return {key.rsplit(".", 1)[1]: value for key, value in settings.items()}


@pytest.mark.slow
def test_deploy_batch_script_runs_the_search_as_one_job_that_starts_its_workers(
    slurm, photos, embedded, tmp_path
):
    """deploy/slurm/dupflow-search.sbatch, submitted as is (this test host only shrinks the jobs)."""
    deploy = os.path.join(os.path.dirname(__file__), os.pardir, "deploy", "slurm")
    script = os.path.join(deploy, "dupflow-search.sbatch")
    report = tmp_path / "report"
    env = {
        **os.environ,
        "DUPFLOW": os.path.join(os.path.dirname(sys.executable), "dupflow"),
        "DUPFLOW_DEPLOY": deploy,
        "DUPFLOW_CATALOG": str(tmp_path / "cat"),
        "DUPFLOW_WORKERS": "1",
        # the jobs of deploy/slurm/jobqueue.yaml, shrunk to this 2-core test node
        "DASK_JOBQUEUE__SLURM__CORES": "1",
        "DASK_JOBQUEUE__SLURM__MEMORY": "1GB",
        "DASK_JOBQUEUE__SLURM__LOG_DIRECTORY": str(tmp_path / "joblogs"),
        "DASK_JOBQUEUE__SLURM__SCHEDULER_OPTIONS": "{'host': '127.0.0.1'}",
    }
    env.pop("DASK_CONFIG", None)
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--mem=500M",
            f"--output={tmp_path}/search-%j.log",
            script,
            photos,
            str(report),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    search_job = submitted.stdout.strip().split(";")[0]
    names: set[str] = set()

    def finished():
        out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout
        names.update(line.split()[1] for line in out.splitlines() if line.strip())
        return not any(line.split()[0] == search_job for line in out.splitlines() if line.strip())

    wait_for(finished, 300, "the search job to end")
    log = (tmp_path / f"search-{search_job}.log").read_text()
    assert {"dupflow-search", "dupflow-worker"} <= names, (names, log)  # the job started its worker job
    results = (
        [name for name in os.listdir(report) if name.endswith("_results.json")] if report.exists() else []
    )
    assert results, log
    assert json.loads((report / results[0]).read_text()) == embedded[0]
    wait_for(lambda: not _squeue(), 60, "an empty queue after the search job")

"""A separately started cluster: `dask scheduler` and two `dask worker --nanny` processes on 127.0.0.1.

dupflow reaches it by address, by scheduler file and by DASK_SCHEDULER_ADDRESS and gives the embedded
run's answer; a worker SIGKILLed mid-decode or mid-compare changes nothing and leaves no half-written
shard; a worker that cannot see the catalog stops the build before anything is decoded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
import pyarrow.parquet as pq
import pytest
from clusterkit import answer, large_photos, wait_for

import dupflow
from dupflow.cluster import WorkersCannotSeeCatalog

DASK = os.path.join(os.path.dirname(sys.executable), "dask")


def _start(args: list[str], **kwargs) -> subprocess.Popen:
    """A dask process in its own session, so that it and its children can be stopped together."""
    return subprocess.Popen(
        [DASK, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        **kwargs,
    )


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop the processes these tests started (each one's own process group), workers first."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class DaskProcesses:
    """A scheduler and its workers, each a separate OS process; `client` watches them from the test."""

    def __init__(self, folder, workers: int = 2, worker_prefix: tuple[str, ...] = ()):
        self.scheduler_file = str(folder / "scheduler.json")
        self.procs = [
            _start(
                [
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    self.scheduler_file,
                ]
            )
        ]
        wait_for(lambda: os.path.exists(self.scheduler_file), 60, "the scheduler file")
        with open(self.scheduler_file) as handle:
            self.address = json.load(handle)["address"]
        for k in range(workers):
            self.add_worker(f"w{k}", worker_prefix)
        from distributed import Client

        self.client = Client(self.address, set_as_default=False)
        self.client.wait_for_workers(workers, timeout=60)

    def add_worker(self, name: str, prefix: tuple[str, ...] = ()) -> None:
        args = ["worker", self.address, "--nanny", "--nthreads", "1", "--host", "127.0.0.1"]
        args += ["--no-dashboard", "--name", name, "--death-timeout", "60"]
        if prefix:
            command = " ".join([*prefix, DASK, *args])
            self.procs.append(
                subprocess.Popen(
                    ["sh", "-c", command],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        else:
            self.procs.append(_start(args))

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> pid of the worker process (the nanny's child)."""
        return self.client.run(os.getpid)

    def close(self) -> None:
        self.client.close()
        _stop(self.procs[1:] + self.procs[:1])


@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory):
    cluster = DaskProcesses(tmp_path_factory.mktemp("dask"))
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """40 large photos (decoding lasts seconds, so a worker can be killed mid-decode) with byte copies,
    lossless quarter turns and re-encodes."""
    return large_photos(tmp_path_factory.mktemp("photos"), 40, copy_every=4, turn_every=5, reencode_every=6)


SIMILAR = {"similarity": "similar", "same_dim": False}


@pytest.fixture(scope="module")
def embedded(photos, tmp_path_factory):
    """The embedded run's answers (duplicates, and similar without same_dim) and its catalog."""
    catalog = str(tmp_path_factory.mktemp("embedded") / "cat")
    with dupflow.build(photos, show_progress=False, catalog=catalog) as dif:
        assert dif.stats["dupflow"]["build"]["cluster"]["kind"].startswith("local")
        duplicates = answer(dupflow.search(dif, show_progress=False))
        similar = answer(dupflow.search(dif, show_progress=False, **SIMILAR))
    assert duplicates[0] and similar[0] and similar[0] != duplicates[0]  # both find something, not the same
    return {"duplicates": duplicates, "similar": similar, "catalog": catalog}


def _shards_are_whole(catalog: str) -> int:
    """Every published shard reads whole (checksums verified) and every index row's shard exists; returns
    the number of shards."""
    namespaces = [os.path.join(catalog, d) for d in os.listdir(catalog) if not d.startswith(".")]
    count = 0
    for ns in namespaces:
        shards = os.path.join(ns, "shards")
        published = {name for name in os.listdir(shards) if not name.startswith(".")}
        for name in published:
            pq.ParquetFile(os.path.join(shards, name), page_checksum_verification=True).read()
        for name in os.listdir(os.path.join(ns, "index")):
            if name.startswith("."):
                continue
            index = pq.read_table(os.path.join(ns, "index", name))
            referenced = {s for s in index.column("shard").to_pylist() if s}
            assert referenced <= published, f"index {name} names shards that are not there"
        count += len(published)
    return count


def test_address_scheduler_file_and_environment_reach_it_with_the_embedded_answer(
    dask_processes, photos, embedded, tmp_path
):
    workers = set(dask_processes.worker_pids())
    by_address = dupflow.build(
        photos, show_progress=False, catalog=str(tmp_path / "a"), scheduler=dask_processes.address
    )
    with by_address:
        assert by_address.stats["dupflow"]["build"]["cluster"] == {"kind": "address", "threads": 2}
        assert set(by_address._engine.client.scheduler_info()["workers"]) == workers
        assert answer(dupflow.search(by_address, show_progress=False)) == embedded["duplicates"]
        assert answer(dupflow.search(by_address, show_progress=False, **SIMILAR)) == embedded["similar"]

    by_file = dupflow.build(
        photos, show_progress=False, catalog=str(tmp_path / "f"), scheduler_file=dask_processes.scheduler_file
    )
    with by_file:
        assert by_file.stats["dupflow"]["build"]["cluster"] == {"kind": "scheduler file", "threads": 2}
        assert answer(dupflow.search(by_file, show_progress=False, **SIMILAR)) == embedded["similar"]

    # the command line, with nothing but DASK_SCHEDULER_ADDRESS in its environment (as a DaskJob pod has)
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": dask_processes.address}
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "dupflow.cli", photos, "-s", "similar", "-dim", "false", "-p", "false"]
        + ["--catalog", str(tmp_path / "e"), "-Z", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    files = {name.split("_", 2)[2]: out / name for name in os.listdir(out) if name.endswith(".json")}
    stats = json.loads(files["stats.json"].read_text())
    assert stats["dupflow"]["build"]["cluster"] == {"kind": "address", "threads": 2}
    assert json.loads(files["results.json"].read_text()) == embedded["similar"][0]
    assert json.loads(files["lower_quality.json"].read_text()) == embedded["similar"][1]
    assert set(dask_processes.worker_pids()) == workers  # nobody closed or restarted the user's cluster


def _kill_when(dask_processes, marker: str, work) -> tuple[int, object]:
    """Run `work` in a thread; SIGKILL the worker process running a task whose key holds `marker` as soon
    as one is seen; return the killed pid and what `work` returned."""
    pids = dask_processes.worker_pids()
    out: dict = {}

    def target():
        try:
            out["value"] = work()
        except BaseException as exc:  # re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        for worker, keys in dask_processes.client.processing().items():
            if worker in pids and any(marker in str(key) for key in keys):
                killed = pids[worker]
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.005)
    thread.join(300)
    if "error" in out:
        raise out["error"]
    assert killed is not None, f"no task with {marker!r} was ever seen running"
    return killed, out["value"]


def _restarted(dask_processes, killed: int) -> None:
    """The killed worker is gone and its nanny started a new one."""
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    dask_processes.client.wait_for_workers(2, timeout=60)
    assert killed not in dask_processes.worker_pids().values()


@pytest.mark.slow
def test_a_worker_killed_mid_decode_changes_nothing(dask_processes, photos, embedded, tmp_path):
    catalog = str(tmp_path / "cat")

    def work():
        with dupflow.build(
            photos, show_progress=False, catalog=catalog, scheduler=dask_processes.address
        ) as dif:
            return dif.stats["dupflow"]["build"], answer(dupflow.search(dif, show_progress=False, **SIMILAR))

    killed, (build_stats, got) = _kill_when(dask_processes, "decode", work)
    assert got == embedded["similar"]
    assert build_stats["decoded"] == len(os.listdir(photos))
    _restarted(dask_processes, killed)
    assert _shards_are_whole(catalog) >= 1
    # a rerun trusts what was written, and decodes nothing
    with dupflow.build(
        photos, show_progress=False, catalog=catalog, scheduler=dask_processes.address
    ) as again:
        assert again.stats["dupflow"]["build"]["decoded"] == 0
        assert answer(dupflow.search(again, show_progress=False, **SIMILAR)) == embedded["similar"]


@pytest.mark.slow
def test_a_worker_killed_mid_compare_changes_nothing(dask_processes, photos, embedded):
    """The catalog is built (the embedded run's); a worker dies while band pairs are being bounded."""
    with dupflow.build(
        photos, show_progress=False, catalog=embedded["catalog"], scheduler=dask_processes.address
    ) as dif:
        assert dif.stats["dupflow"]["build"]["decoded"] == 0
        killed, got = _kill_when(
            dask_processes,
            "dupflow-bound",
            lambda: answer(dupflow.search(dif, show_progress=False, chunksize=2, **SIMILAR)),
        )
    assert got == embedded["similar"]
    _restarted(dask_processes, killed)
    assert _shards_are_whole(embedded["catalog"]) >= 1


def _private_mount_works() -> bool:
    done = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    return done.returncode == 0


def test_workers_that_cannot_see_the_catalog_stop_the_build_before_any_decode(photos, tmp_path):
    """A worker in its own mount namespace, with an empty tmpfs over the catalog's parent folder, sees
    another folder at the same path: the build fails at once, in one line, and decodes nothing."""
    if not _private_mount_works():
        pytest.skip("unshare --mount needs root (CI runs as root)")
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    catalog = hidden / "cat"
    prefix = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "'mount -t tmpfs none")
    prefix += (f'{hidden} && exec "$0" "$@"\'',)
    cluster = DaskProcesses(tmp_path, workers=1, worker_prefix=prefix)
    try:
        with pytest.raises(WorkersCannotSeeCatalog) as info:
            dupflow.build(photos, show_progress=False, catalog=str(catalog), scheduler=cluster.address)
        message = str(info.value)
        assert str(catalog) in message and "shared" in message and "bucket" in message
        assert "\n" not in message
        # nothing was decoded: no shard, no index row (only the namespace folder the probe went into)
        written = [os.path.join(d, f) for d, _, files in os.walk(catalog) for f in files]
        assert written == []
        # the command line says the same in one line, exit status 1
        done = subprocess.run(
            [sys.executable, "-m", "dupflow.cli", photos, "-p", "false", "--catalog", str(catalog)]
            + ["--scheduler", cluster.address, "-Z", str(tmp_path / "report")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot see the catalog" in lines[0] and str(catalog) in lines[0]
        # an input folder the workers cannot see is named the same way, before anything is decoded
        hidden_input = hidden / "photos"
        shutil.copytree(photos, hidden_input)
        with pytest.raises(WorkersCannotSeeCatalog, match="cannot see the input") as info:
            dupflow.build(
                str(hidden_input),
                show_progress=False,
                catalog=str(tmp_path / "c2"),
                scheduler=cluster.address,
            )
        assert str(hidden_input) in str(info.value) and "bucket" in str(info.value)
        assert not [f for _, _, files in os.walk(tmp_path / "c2") for f in files]
        # a catalog every worker shares works on the same cluster
        with dupflow.build(
            photos, show_progress=False, catalog=str(tmp_path / "shared"), scheduler=cluster.address
        ) as dif:
            assert dif.stats["dupflow"]["build"]["decoded"] > 0
    finally:
        cluster.close()

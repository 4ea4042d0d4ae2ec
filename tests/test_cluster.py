"""The embedded default: with no scheduler, dupflow starts a local distributed cluster and closes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil
import pytest
from clusterkit import answer, wait_for
from imagegen import photo, save

import dupflow
from dupflow import cluster


def _folder(tmp_path, n=6):
    for k in range(n):
        save(photo(k % 3, 40, 30), tmp_path / "imgs" / f"{k}.png")
    return str(tmp_path / "imgs")


def test_small_job_runs_on_local_threads_and_closes(tmp_path):
    folder = _folder(tmp_path)
    dif = dupflow.build(folder, show_progress=False, catalog=str(tmp_path / "cat"))
    found = dupflow.search(dif, show_progress=False)
    assert dif.stats["dupflow"]["build"]["cluster"]["kind"] == "local threads"
    assert found.stats["process"]["search"]["matches_found"]["duplicates"] == 3
    client = dif._engine.client
    dif.close()
    assert client.status == "closed"


def _worker_processes(before: set) -> list:
    """Children started since `before` that are Dask workers (not multiprocessing's resource tracker)."""
    found = []
    for proc in set(psutil.Process().children(recursive=True)) - before:
        try:
            if "resource_tracker" not in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def _buffer_faults() -> int:
    """Minor page faults of 20 rounds of writing and freeing a 40 MB buffer, in the calling process."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        buffer = b"\1" * (40 << 20)
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_big_job_runs_on_local_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "PROCESS_MIN_IMAGES", 1)  # make this small job count as big
    monkeypatch.setattr(cluster, "PROCESS_MIN_WORKERS", 2)  # and this machine as one with many cores
    folder = _folder(tmp_path)
    before = set(psutil.Process().children(recursive=True))
    with dupflow.build(folder, show_progress=False, processes=2, catalog=str(tmp_path / "cat")) as dif:
        workers = _worker_processes(before)
        assert dif.stats["dupflow"]["build"]["cluster"] == {"kind": "local processes", "threads": 2}
        assert len(workers) >= 2  # real worker processes
        # they decode: their malloc keeps freed image buffers (a 40 MB buffer faults in only once)
        faults = dif._engine.client.run(_buffer_faults)
        assert len(faults) == 2 and all(f < 2 * (40 << 20) // 4096 for f in faults.values()), faults
        found = dupflow.search(dif, show_progress=False)
        assert found.stats["process"]["search"]["matches_found"]["duplicates"] == 3
    psutil.wait_procs(workers, timeout=20)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]


def test_a_script_without_main_guard_works(tmp_path):
    """difPy users' scripts have no `if __name__ == "__main__":`; spawned workers must not re-run them."""
    folder = _folder(tmp_path)
    script = tmp_path / "plain_script.py"
    script.write_text(
        textwrap.dedent(f"""
        import dupflow
        from dupflow import cluster
        cluster.PROCESS_MIN_IMAGES = 1
        cluster.PROCESS_MIN_WORKERS = 1
        dif = dupflow.build({folder!r}, show_progress=False, catalog={str(tmp_path / "cat")!r})
        found = dupflow.search(dif, show_progress=False)
        print("KIND", dif.stats["dupflow"]["build"]["cluster"]["kind"])
        print("GROUPS", len(found.result))
    """)
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "KIND local processes" in done.stdout and "GROUPS 3" in done.stdout
    assert done.stdout.count("GROUPS") == 1  # the script body ran once, not once per worker


# ---- the embedded cluster: loopback only, no HTTP, quiet -------------------------------------------


def _listening(pids: list[int]) -> list[tuple[str, int]]:
    """(ip, port) of every listening TCP socket of these processes."""
    found = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found += [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def _answers_http(ip: str, port: int) -> bool:
    """True if the socket answers a plain HTTP request like a web server."""
    import socket

    with socket.create_connection((ip, port), timeout=2) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
        sock.settimeout(2)
        try:
            return sock.recv(16).startswith(b"HTTP/")
        except (TimeoutError, ConnectionError):
            return False


def _process_tree() -> list[int]:
    me = psutil.Process()
    return [me.pid] + [p.pid for p in me.children(recursive=True)]


def test_embedded_threads_open_no_socket(tmp_path):
    """Threads talk in-process: the embedded default listens on nothing at all."""
    before = set(_listening(_process_tree()))
    with dupflow.build(_folder(tmp_path), show_progress=False, catalog=str(tmp_path / "cat")) as dif:
        assert dif._engine is not None and dif._engine.kind == "local threads"
        opened = set(_listening(_process_tree())) - before
        assert opened == set()


def test_embedded_processes_listen_on_loopback_only_without_http(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "PROCESS_MIN_IMAGES", 1)
    monkeypatch.setattr(cluster, "PROCESS_MIN_WORKERS", 2)
    before = set(_listening(_process_tree()))
    with dupflow.build(
        _folder(tmp_path), show_progress=False, processes=2, catalog=str(tmp_path / "cat")
    ) as dif:
        assert dif._engine.kind == "local processes"
        opened = set(_listening(_process_tree())) - before
        # the scheduler, two nannies and two workers: each on 127.0.0.0/8, none speaking HTTP
        assert len(opened) >= 5
        assert all(ip.startswith("127.") for ip, _ in opened), opened
        assert [addr for addr in opened if _answers_http(*addr)] == []


def test_dashboard_is_served_on_loopback_and_its_link_printed(tmp_path, capsys):
    with dupflow.build(
        _folder(tmp_path), show_progress=False, catalog=str(tmp_path / "cat"), dashboard=True
    ) as dif:
        link = dif._engine.dashboard_link
        assert f"Dask dashboard at {link}" in capsys.readouterr().err
        host_port = link.split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert _answers_http(host, int(port))


QUIET_SCRIPT = """
import gc, logging, sys
logging.basicConfig(level=logging.INFO)  # an application that logs at INFO: distributed's lines would show
import dupflow
from dupflow import cluster
cluster.PROCESS_MIN_IMAGES = 1
cluster.PROCESS_MIN_WORKERS = 1
dif = dupflow.build({folder!r}, show_progress=False, processes=2, catalog={catalog!r} + sys.argv[1])
found = dupflow.search(dif, show_progress=False)
print("KIND", dif.stats["dupflow"]["build"]["cluster"]["kind"], "GROUPS", len(found.result))
if sys.argv[1] == "gc":
    del dif, found
    gc.collect()
    print("COLLECTED")
elif sys.argv[1] == "close":
    dif.close()
# "exit": the interpreter closes the build's cluster on its way out
"""


def test_closing_is_quiet(tmp_path):
    """No distributed log lines, whether the build is closed, garbage-collected, or left to exit, even
    with the application's logging at INFO (where distributed's start, retire and close lines showed)."""
    script = tmp_path / "quiet.py"
    script.write_text(QUIET_SCRIPT.format(folder=_folder(tmp_path), catalog=str(tmp_path / "cat")))
    for how in ("close", "gc", "exit"):
        done = subprocess.run(
            [sys.executable, str(script), how], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "KIND local processes GROUPS 3" in done.stdout
        assert "distributed" not in done.stderr, (how, done.stderr)


# ---- scheduler= accepts any cluster object, a Client, an address; dask config is honoured ------------


def _embedded_answer(folder: str, tmp_path, **search) -> tuple:
    with dupflow.build(folder, show_progress=False, catalog=str(tmp_path / "embedded-cat")) as dif:
        return answer(dupflow.search(dif, show_progress=False, **search))


def test_a_cluster_object_is_used_and_left_running(tmp_path):
    from distributed import Client, LocalCluster

    folder = _folder(tmp_path)
    expected = _embedded_answer(folder, tmp_path, similarity="similar")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as user:
        dif = dupflow.build(folder, show_progress=False, catalog=str(tmp_path / "cat"), scheduler=user)
        found = dupflow.search(dif, show_progress=False, similarity="similar")
        assert dif.stats["dupflow"]["build"]["cluster"]["kind"] == "cluster"
        assert answer(found) == expected
        ours = dif._engine.client
        dif.close()
        assert ours.status == "closed"  # our own connection to it is closed ...
        assert user.status.name == "running"  # ... the user's cluster is not
        with Client(user, set_as_default=False) as check:
            assert check.submit(sum, [1, 2]).result() == 3


def test_a_client_is_used_and_left_open(tmp_path, client):
    folder = _folder(tmp_path)
    dif = dupflow.build(folder, show_progress=False, catalog=str(tmp_path / "cat"), scheduler=client)
    found = dupflow.search(dif, show_progress=False)
    dif.close()
    assert client.status == "running"
    assert answer(found) == _embedded_answer(folder, tmp_path)


def test_dask_config_scheduler_address_is_honoured(tmp_path, client):
    import dask

    folder = _folder(tmp_path)
    with dask.config.set({"scheduler-address": client.scheduler.address}):
        with dupflow.build(folder, show_progress=False, catalog=str(tmp_path / "cat")) as dif:
            assert dif._engine.kind == "address"
            addresses = {w["id"] for w in client.scheduler_info()["workers"].values()}
            seen = dif._engine.client.scheduler_info()["workers"]
            assert {w["id"] for w in seen.values()} == addresses  # the same workers: the same cluster
            found = dupflow.search(dif, show_progress=False)
    assert client.status == "running"
    assert answer(found) == _embedded_answer(folder, tmp_path)


def test_named_local_cluster_with_lifetime_retires_workers_and_answers_the_same(tmp_path):
    """--cluster local with a worker lifetime: workers retire gracefully mid-run and are replaced."""
    folder = _folder(tmp_path, n=60)
    expected = _embedded_answer(folder, tmp_path, similarity="similar")
    spec = {"name": "local", "workers": 2, "lifetime": "3s", "lifetime_stagger": "1s"}
    dif = dupflow.build(folder, show_progress=False, catalog=str(tmp_path / "cat"), cluster=spec)
    engine = dif._engine
    assert engine.kind == "local"
    engine.client.wait_for_workers(2, timeout=120)
    first = set(engine.client.scheduler_info()["workers"])

    def replaced():
        now = set(engine.client.scheduler_info()["workers"])
        return len(now) == 2 and not now & first

    wait_for(replaced, 180, "both first workers to retire and be replaced")
    found = dupflow.search(dif, show_progress=False, similarity="similar")
    assert answer(found) == expected
    cluster_object = engine._cluster
    dif.close()
    assert cluster_object.status.name == "closed"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"scheduler": 42}, "must be None (local cluster), an address"),
        ({"scheduler": "tcp://x:1", "cluster": "local"}, "mutually exclusive"),
        ({"scheduler_file": 3}, '"scheduler_file" parameter: must be a path'),
        ({"cluster": "yarn"}, "must be one of local, slurm, pbs, sge, kubernetes"),
        ({"cluster": 5}, 'must be a name (STRING) or a dict with "name"'),
        ({"cluster": {"name": "slurm", "cores": 4}}, 'Unknown key "cores"'),
        ({"cluster": {"name": "slurm", "workers": 0}}, "must be >= 1"),
        ({"cluster": {"name": "slurm", "adapt": (5, 2)}}, "0 <= minimum <= maximum"),
        ({"cluster": {"name": "slurm", "lifetime": "soon"}}, 'must be a duration such as "55m"'),
        ({"cluster": {"name": "slurm", "lifetime_stagger": "5m"}}, "needs a lifetime"),
        ({"dashboard": "yes"}, '"dashboard" parameter: must be of type BOOL'),
    ],
)
def test_placement_errors_say_what_is_accepted(tmp_path, options, message):
    from dupflow.params import ParameterError, ParameterTypeError

    with pytest.raises((ParameterError, ParameterTypeError)) as info:
        dupflow.build(_folder(tmp_path), show_progress=False, catalog=str(tmp_path / "cat"), **options)
    assert message in str(info.value)


def test_cli_cluster_flags(tmp_path):
    from dupflow.cli import UsageError, _placement, search_parser

    args = search_parser().parse_args(["x", "--cluster", "slurm", "--adapt", "2:8", "--lifetime", "55m"])
    assert _placement(args)["cluster"] == {"name": "slurm", "adapt": (2, 8), "lifetime": "55m"}
    with pytest.raises(UsageError, match="MIN:MAX"):
        _placement(search_parser().parse_args(["x", "--cluster", "slurm", "--adapt", "8"]))
    with pytest.raises(UsageError, match="need --cluster"):
        _placement(search_parser().parse_args(["x", "--workers", "3"]))

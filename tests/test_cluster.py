"""The embedded default: with no scheduler, dupflow starts a local distributed cluster and closes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil
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


def test_big_job_runs_on_local_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "PROCESS_MIN_IMAGES", 1)  # make this small job count as big
    monkeypatch.setattr(cluster, "PROCESS_MIN_WORKERS", 2)  # and this machine as one with many cores
    folder = _folder(tmp_path)
    before = set(psutil.Process().children(recursive=True))
    with dupflow.build(folder, show_progress=False, processes=2, catalog=str(tmp_path / "cat")) as dif:
        workers = _worker_processes(before)
        assert dif.stats["dupflow"]["build"]["cluster"] == {"kind": "local processes", "threads": 2}
        assert len(workers) >= 2  # real worker processes
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

"""Shared fixtures: real distributed clusters (worker processes, or threads that see memory://), a real S3
endpoint (moto's server over HTTP), private cache/state folders."""

from __future__ import annotations

import logging
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory):
    """Keep the default catalog and journals out of the user's real cache and state folders."""
    base = tmp_path_factory.mktemp("home")
    old = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "XDG_STATE_HOME")}
    os.environ["XDG_CACHE_HOME"] = str(base / "cache")
    os.environ["XDG_STATE_HOME"] = str(base / "state")
    yield base
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _shared_cluster(**kwargs):
    """A real LocalCluster and its Client for the whole session."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(dashboard_address=None, **kwargs)
    with Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="session")
def client():
    """One real LocalCluster (2 worker processes) shared by the tests that pass scheduler=client."""
    yield from _shared_cluster(n_workers=2, threads_per_worker=1, processes=True)


@pytest.fixture(scope="session")
def threads():
    """One real LocalCluster of threads in this process: its workers see memory:// files."""
    yield from _shared_cluster(n_workers=1, threads_per_worker=2, processes=False)


@pytest.fixture(scope="session")
def endpoint():
    """moto's S3 server on 127.0.0.1 and a free port, for the whole session (workers reach it over HTTP)."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    werkzeug.setLevel(level)


@pytest.fixture
def catalog(tmp_path):
    """A fresh catalog folder for one test."""
    return str(tmp_path / "catalog")


@pytest.fixture
def run(client, catalog):
    """build + search on the shared cluster with a fresh catalog: run(paths, build_kw..., search=dict)."""
    import dupflow

    def _run(*paths, search=None, **build_kw):
        build_kw.setdefault("show_progress", False)
        build_kw.setdefault("catalog", catalog)
        dif = dupflow.build(*paths, scheduler=client, **build_kw)
        found = dupflow.search(dif, show_progress=False, **(search or {}))
        return dif, found

    return _run

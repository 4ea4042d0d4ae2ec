"""Shared fixtures: a real distributed cluster with worker processes, private cache/state folders."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


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


@pytest.fixture(scope="session")
def client():
    """One real LocalCluster (2 worker processes) shared by the tests that pass scheduler=client."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with Client(cluster) as c:
        yield c
    cluster.close()


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

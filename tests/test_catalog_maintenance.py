"""`dupflow catalog info|verify|gc` on real catalogs, in a folder and in a bucket (moto's S3 server over HTTP):
gc removes unreferenced shards once past their grace period and rows of files absent long enough, and stays
safe while a build writes into the same catalog; verify finds damaged and foreign shards."""

from __future__ import annotations

import glob
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
from imagegen import photo, save

import dupflow
from dupflow import catalog_maintenance as maintenance
from dupflow import cli
from dupflow.catalog import CatalogRef


def _photos(folder, n, seed=0):
    for k in range(n):
        save(photo(seed * 1000 + k, 48, 36), folder / f"p_{k:03d}.png")
    return str(folder)


def _build(folder, catalog, client=None, **kw):
    return dupflow.build(folder, catalog=catalog, scheduler=client, show_progress=False, **kw)


def _figures(dif):
    ours = dif.stats["dupflow"]["build"]
    return ours["decoded"], ours["reused"]


def _ref(dif, options=None):
    return CatalogRef(dif.stats["dupflow"]["build"]["catalog"], options or {})


def _shards(catalog):
    return set(glob.glob(f"{catalog}/*/shards/*.parquet"))


def test_gc_drops_rows_of_files_absent_long_enough_then_their_shards(tmp_path, client, catalog):
    keep = _photos(tmp_path / "keep", 10)
    _build(keep, catalog, client)
    kept_shards = _shards(catalog)
    gone = _photos(tmp_path / "gone", 6, seed=1)
    _build(gone, catalog, client)
    gone_shards = _shards(catalog) - kept_shards
    assert gone_shards
    os.rename(tmp_path / "gone", tmp_path / "away")  # moved away for a while
    first = maintenance.gc(catalog, grace=0, absent_for=1.0)
    assert (first["files_absent"], first["files_dropped"], first["rows_removed"]) == (6, 0, 0)
    assert _shards(catalog) == kept_shards | gone_shards  # still referenced: kept
    os.rename(tmp_path / "away", tmp_path / "gone")  # and back (same size and mtime): its rows stay useful
    time.sleep(1.1)
    back = maintenance.gc(catalog, grace=0, absent_for=1.0)
    assert (back["files_absent"], back["rows_removed"]) == (0, 0)
    assert _figures(_build(gone, catalog, client)) == (0, 6)
    for name in os.listdir(tmp_path / "gone"):
        os.remove(tmp_path / "gone" / name)
    assert maintenance.gc(catalog, grace=0, absent_for=1.0)["files_dropped"] == 0  # absence starts now
    time.sleep(1.1)
    later = maintenance.gc(catalog, grace=0, absent_for=1.0)
    assert (later["files_dropped"], later["rows_removed"], later["shards_removed"]) == (
        6,
        6,
        len(gone_shards),
    )
    assert later["bytes_freed"] > 0
    assert _shards(catalog) == kept_shards
    assert _figures(_build(keep, catalog, client)) == (0, 10)  # nothing still needed was touched
    summary = maintenance.info(catalog)["namespaces"][0]
    assert (summary["files"], summary["rows"], summary["unreferenced_shards"]) == (10, 10, 0)


def test_gc_keeps_young_unreferenced_shards_and_removes_old_temporaries(tmp_path, client, catalog):
    dif = _build(_photos(tmp_path / "imgs", 4), catalog, client)
    ref = _ref(dif)
    # a running build's fresh shard, its index file not yet written
    fresh = ref.write_shard(["x.png"], np.zeros((1, 3 * 50 * 50), np.uint8), np.zeros((1, 75), np.int32))
    old = f"{time.time_ns() - 2 * 86400 * 10**9:020d}-{uuid.uuid4().hex}.parquet"
    left = tmp_path / "catalog" / os.path.basename(ref.url) / "shards" / f".tmp-{old}"
    left.write_bytes(b"half a shard from a killed run")
    report = maintenance.gc(catalog, grace=3600, absent_for=0)
    assert (report["shards_removed"], report["temporaries_removed"]) == (0, 1)
    assert not left.exists() and fresh in ref.shard_names()
    assert maintenance.gc(catalog, grace=3600, dry_run=True)["shards_removed"] == 0
    assert maintenance.gc(catalog, grace=0, dry_run=True)["shards_removed"] == 1
    assert fresh in ref.shard_names()  # a dry run removes nothing
    assert maintenance.gc(catalog, grace=0)["shards_removed"] == 1
    assert fresh not in ref.shard_names()
    assert _figures(_build(str(tmp_path / "imgs"), catalog, client)) == (0, 4)


GC_LOOP = textwrap.dedent("""
    import sys, time
    from dupflow import catalog_maintenance as maintenance
    rounds, deadline = 0, time.time() + 120
    open(sys.argv[2], "w").write("ready")
    while time.time() < deadline:
        report = maintenance.gc(sys.argv[1], grace=30, absent_for=0)
        rounds += 1
        if open(sys.argv[2]).read() == "done":
            break
    print("ROUNDS", rounds)
""")


@pytest.mark.slow
def test_gc_is_safe_while_a_build_writes_into_the_catalog(tmp_path, client, catalog):
    gone = _photos(tmp_path / "gone", 20, seed=2)
    _build(gone, catalog, client)
    for name in os.listdir(gone):
        os.remove(os.path.join(gone, name))  # rows for gc to drop while the build runs
    folder = _photos(tmp_path / "imgs", 300)
    flag = tmp_path / "flag"
    flag.write_text("running")
    script = tmp_path / "gc_loop.py"
    script.write_text(GC_LOOP)
    loop = subprocess.Popen(
        [sys.executable, str(script), catalog, str(flag)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    while flag.read_text() != "ready" and loop.poll() is None:
        time.sleep(0.01)
    try:
        dif = _build(folder, catalog, processes=1)  # its own local cluster, several partitions
    finally:
        flag.write_text("done")
        out, err = loop.communicate(timeout=180)
    assert loop.returncode == 0, err.decode()[-1500:]
    assert int(out.split()[-1]) >= 2  # gc really ran alongside
    assert _figures(dif) == (300, 0)
    again = _build(folder, catalog, client)
    assert _figures(again) == (0, 300)  # every row and shard the build wrote survived
    fresh = _build(folder, str(tmp_path / "fresh"), client)
    assert (
        dupflow.search(again, show_progress=False).result == dupflow.search(fresh, show_progress=False).result
    )


def test_verify_finds_damaged_and_foreign_shards(tmp_path, client, catalog, capsys):
    dif = _build(_photos(tmp_path / "imgs", 12), catalog, client)
    assert cli.main(["catalog", "verify", "--catalog", catalog]) == 0
    shards = sorted(_shards(catalog))
    assert len(shards) >= 3
    with open(shards[0], "r+b") as handle:  # flip bytes inside the tensor pages
        handle.seek(os.path.getsize(shards[0]) // 2)
        handle.write(b"\xff" * 64)
    other = tmp_path / "other"
    _build(_photos(tmp_path / "other_imgs", 12, seed=5), str(other), client)
    os.replace(sorted(_shards(str(other)))[0], shards[1])  # a valid shard holding other files
    capsys.readouterr()
    assert cli.main(["catalog", "verify", "--catalog", catalog, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    space = os.path.basename(_ref(dif).url)
    names = [f"{space}/{os.path.basename(s)}" for s in shards]
    assert set(report["damaged"]) == set(names[:2]) and report["sound"] == len(shards) - 2
    assert report["damaged"][names[0]].startswith("damaged")
    assert report["damaged"][names[1]].startswith("foreign")
    assert cli.main(["catalog", "verify", "--catalog", catalog, "--set-aside"]) == 1
    assert _shards(catalog) == set(shards[2:])
    capsys.readouterr()
    assert cli.main(["catalog", "verify", "--catalog", catalog, "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["missing"]) == sorted(names[:2])  # index rows remain
    dropped = maintenance.gc(catalog)["rows_removed"]
    assert dropped > 0  # rows of set-aside shards are dropped
    assert maintenance.verify(catalog)["missing"] == []
    capsys.readouterr()
    assert cli.main(["catalog", "info", "--catalog", catalog, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shards"] == len(shards) - 2 and summary["namespaces"][0]["files"] == 12 - dropped
    assert summary["namespaces"][0]["unreferenced_shards"] == 0


def test_cli_usage_errors(tmp_path, capsys):
    assert cli.main(["catalog", "gc", "--catalog", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["catalog", "gc", "--catalog", str(tmp_path), "--grace", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seconds >= 0"):
        maintenance.gc(str(tmp_path), absent_for=-1)


# the same on a bucket

pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free localhost port, and storage options for it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
    }
    server.stop()


@pytest.mark.slow
def test_catalog_maintenance_in_a_bucket(tmp_path, s3, client):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3)
    bucket = f"dupflow-{uuid.uuid4().hex[:12]}"
    fs.call_s3("create_bucket", Bucket=bucket)
    for k in range(8):
        save(photo(700 + k, 48, 36), tmp_path / f"p{k}.png")
        fs.put_file(str(tmp_path / f"p{k}.png"), f"{bucket}/photos/keep/p{k}.png")
        fs.put_file(str(tmp_path / f"p{k}.png"), f"{bucket}/photos/gone/q{k}.png")
    catalog = f"s3://{bucket}/catalog"
    options = dict(storage_options=s3)
    _build(f"s3://{bucket}/photos/keep", catalog, client, **options)
    dif = _build(f"s3://{bucket}/photos/gone", catalog, client, **options)
    ref = _ref(dif, s3)
    before = maintenance.info(catalog, s3)["namespaces"][0]
    assert (before["files"], before["unreferenced_shards"]) == (16, 0)
    with ref.maintenance_claim() as held:  # the claim is a conditional PUT: a second holder is refused
        assert held
        with ref.maintenance_claim() as again:
            assert not again
        assert not ref.compact_index(most=0)  # another process holds it: compaction is left alone
    assert ref.compact_index(most=0)
    fs.rm(f"{bucket}/photos/gone", recursive=True)
    report = maintenance.gc(catalog, s3, grace=0, absent_for=0)
    assert (report["files_dropped"], report["rows_removed"]) == (8, 8)
    assert report["shards_removed"] >= 1
    after = maintenance.info(catalog, s3)["namespaces"][0]
    assert (after["files"], after["unreferenced_shards"]) == (8, 0)
    assert after["shard_bytes"] < before["shard_bytes"]
    checked = maintenance.verify(catalog, s3)
    assert checked["sound"] == checked["shards"] == after["shards"] and not checked["missing"]
    assert _figures(_build(f"s3://{bucket}/photos/keep", catalog, client, **options)) == (0, 8)


COMPACT = textwrap.dedent("""
    import json, sys, time
    from dupflow.catalog import CatalogRef
    ref = CatalogRef(sys.argv[1], json.loads(sys.argv[3]))
    while time.time() < float(sys.argv[2]):  # both processes start compacting at the same moment
        time.sleep(0.0005)
    print("MERGED", ref.compact_index(most=4))
""")


@pytest.mark.slow
def test_two_processes_compacting_a_bucket_catalog_at_once(tmp_path, s3, client):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3)
    bucket = f"dupflow-{uuid.uuid4().hex[:12]}"
    fs.call_s3("create_bucket", Bucket=bucket)
    folder = _photos(tmp_path / "imgs", 20, seed=3)
    ref = _ref(_build(folder, f"s3://{bucket}/catalog", client, storage_options=s3), s3)
    rows = ref.read_index()
    for _ in range(2):  # every row twice, one index file each, as if from many runs
        for k in range(rows.num_rows):
            ref.write_index(rows.slice(k, 1))
    script = tmp_path / "compact.py"
    script.write_text(COMPACT)
    start = str(time.time() + 4)
    jobs = [
        subprocess.Popen(
            [sys.executable, str(script), ref.url, start, json.dumps(s3)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outs = [job.communicate(timeout=120) for job in jobs]
    assert all(job.returncode == 0 for job in jobs), [err.decode()[-1500:] for _, err in outs]
    assert sorted(out.decode().split()[-1] for out, _ in outs) == ["False", "True"]
    assert len(ref.index_files()) == 1
    index = ref.read_index()
    assert index.num_rows == 20 == len(set(index.column("url").to_pylist()))
    assert _figures(_build(folder, f"s3://{bucket}/catalog", client, storage_options=s3)) == (0, 20)

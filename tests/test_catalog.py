"""The incremental Parquet catalog: reuse, invalidation, crash safety, damage and concurrent runs."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest
from imagegen import photo, save

import dupflow
from dupflow.claim import hold, holder


def _photos(root, n, seed=0):
    for k in range(n):
        save(photo(seed * 1000 + k % (n // 2 or 1), 48, 36), f"{root}/p_{k:03d}.png")
    return str(root)


def _build(folder, catalog, client, **kw):
    return dupflow.build(folder, show_progress=False, scheduler=client, catalog=catalog, **kw)


def _figures(dif):
    ours = dif.stats["dupflow"]["build"]
    return ours["decoded"], ours["reused"], ours["removed"]


def test_rerun_decodes_only_what_changed(tmp_path, client, catalog):
    folder = _photos(tmp_path / "imgs", 40)
    first = _build(folder, catalog, client)
    assert _figures(first) == (40, 0, 0)
    assert _figures(_build(folder, catalog, client)) == (0, 40, 0)
    for k in range(10):  # 10 new files -> 10 decodes
        save(photo(500 + k, 48, 36), tmp_path / "imgs" / f"new_{k}.png")
    assert _figures(_build(folder, catalog, client)) == (10, 40, 0)
    save(photo(900, 48, 36), tmp_path / "imgs" / "p_000.png")  # changed content and size
    os.remove(tmp_path / "imgs" / "p_001.png")  # removed
    again = _build(folder, catalog, client)
    assert _figures(again) == (1, 48, 1)
    found = dupflow.search(again, show_progress=False)
    everything = set(found.result) | {m for ms in found.result.values() for m, _ in ms}
    assert f"{folder}/p_001.png" not in everything
    fresh = dupflow.search(_build(folder, str(tmp_path / "fresh"), client), show_progress=False)
    assert found.result == fresh.result  # reuse never changes the answer


def test_a_touched_file_is_decoded_again(tmp_path, client, catalog):
    folder = _photos(tmp_path / "imgs", 4)
    _build(folder, catalog, client)
    st = os.stat(tmp_path / "imgs" / "p_002.png")
    os.utime(tmp_path / "imgs" / "p_002.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _figures(_build(folder, catalog, client)) == (1, 3, 0)


def test_incompatible_settings_never_share_rows(tmp_path, client, catalog):
    folder = _photos(tmp_path / "imgs", 6)
    _build(folder, catalog, client)
    assert _figures(_build(folder, catalog, client, px_size=32))[0] == 6
    assert _figures(_build(folder, catalog, client, decode="fast"))[0] == 6
    assert _figures(_build(folder, catalog, client, px_size=32))[0] == 0
    spaces = sorted(os.path.basename(p) for p in glob.glob(f"{catalog}/*"))
    assert len(spaces) == 3 and all(s.startswith("v1-px") for s in spaces)


def _shards(catalog):
    return sorted(glob.glob(f"{catalog}/*/shards/*.parquet"))


def test_damaged_or_foreign_shards_are_rebuilt(tmp_path, client, catalog):
    folder = _photos(tmp_path / "imgs", 12)
    reference = dupflow.search(_build(folder, catalog, client), show_progress=False).result
    shards = _shards(catalog)
    assert shards
    with open(shards[0], "r+b") as handle:  # flip bytes in the middle
        handle.seek(os.path.getsize(shards[0]) // 2)
        handle.write(b"\xff" * 64)
    dif = _build(folder, catalog, client)
    assert _figures(dif)[0] > 0  # the damaged rows were decoded again
    assert dupflow.search(dif, show_progress=False).result == reference
    # a foreign shard: another valid Parquet file under the same name
    other = _photos(tmp_path / "other_imgs", 12, seed=7)
    _build(other, str(tmp_path / "other"), client)
    victim = _shards(catalog)[-1]
    os.replace(_shards(str(tmp_path / "other"))[0], victim)
    dif = _build(folder, catalog, client)
    assert _figures(dif)[0] > 0
    assert dupflow.search(dif, show_progress=False).result == reference


def test_a_missing_shard_is_rebuilt(tmp_path, client, catalog):
    folder = _photos(tmp_path / "imgs", 8)
    reference = dupflow.search(_build(folder, catalog, client), show_progress=False).result
    for shard in _shards(catalog):
        os.remove(shard)
    dif = _build(folder, catalog, client)
    assert _figures(dif) == (8, 0, 0)
    assert dupflow.search(dif, show_progress=False).result == reference


SCRIPT = textwrap.dedent("""
    import sys, dupflow
    dif = dupflow.build(sys.argv[1], catalog=sys.argv[2], show_progress=False, processes=1)
    found = dupflow.search(dif, show_progress=False)
    print("DECODED", dif.stats["dupflow"]["build"]["decoded"], "GROUPS", len(found.result))
""")


def _kill_once_written(tmp_path, folder, catalog, pattern):
    """Run a build + search job and SIGKILL it, workers included, as soon as `pattern` matches a file."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    job = subprocess.Popen(
        [sys.executable, str(script), folder, catalog],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while not glob.glob(pattern) and time.time() < deadline and job.poll() is None:
        time.sleep(0.005)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert b"DECODED" not in job.stdout.read()  # it really died before finishing


def test_a_run_killed_mid_write_leaves_a_usable_catalog(tmp_path, client):
    folder = _photos(tmp_path / "imgs", 400)
    catalog = str(tmp_path / "cat")
    _kill_once_written(tmp_path, folder, catalog, f"{catalog}/*/shards/*.parquet")  # mid-run
    dif = _build(folder, catalog, client)
    decoded, reused, _ = _figures(dif)
    assert decoded + reused == 400
    found = dupflow.search(dif, show_progress=False)
    assert (
        found.result
        == dupflow.search(_build(folder, str(tmp_path / "fresh"), client), show_progress=False).result
    )


def test_concurrent_runs_share_one_catalog(tmp_path):
    folder = _photos(tmp_path / "imgs", 60)
    catalog = str(tmp_path / "cat")
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    jobs = [
        subprocess.Popen(
            [sys.executable, str(script), folder, catalog],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [job.communicate(timeout=180) for job in jobs]
    assert all(job.returncode == 0 for job in jobs), [o[1][-1500:] for o in outs]
    groups = {line.split()[-1] for out, _ in outs for line in out.splitlines() if line.startswith("DECODED")}
    assert groups == {"30"}
    third = subprocess.run(
        [sys.executable, str(script), folder, catalog], capture_output=True, text=True, timeout=180
    )
    assert "DECODED 0 GROUPS 30" in third.stdout, third.stderr[-1500:]
    assert not glob.glob(f"{catalog}/*/*/.tmp-*")  # no half-written files left behind


def test_index_files_are_merged_as_runs_add_them(tmp_path, client, catalog):
    from dupflow.catalog import CatalogRef, namespace

    folder = tmp_path / "imgs"
    ref = None
    for k in range(6):
        save(photo(300 + k, 40, 30), folder / f"{k}.png")
        dif = _build(str(folder), catalog, client)
        ref = ref or CatalogRef(dif.stats["dupflow"]["build"]["catalog"], {})
    assert len(ref.index_files()) == 6
    ref.compact_index(most=4)
    assert len(ref.index_files()) == 1
    assert _figures(_build(str(folder), catalog, client)) == (0, 6, 0)
    assert ref.url == namespace(catalog, 50, "exact")


def test_damage_found_while_searching_a_bucket_catalog_is_never_trusted(tmp_path):
    """On object stores a build only lists shards; pages are checksummed as the search reads them,
    and a damaged shard is set aside and its images decoded again within the same search."""
    import uuid

    import fsspec

    folder = _photos(tmp_path / "imgs", 12)  # six pairs of identical images
    catalog = f"memory://cat-{uuid.uuid4().hex}"
    reference = dupflow.search(
        dupflow.build(folder, catalog=catalog, show_progress=False), show_progress=False
    ).result
    fs = fsspec.filesystem("memory")
    shard = next(p for p in fs.find(catalog) if "/shards/" in p)
    data = bytearray(fs.cat_file(shard))
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # inside the (uncompressed) tensor pages
    fs.pipe_file(shard, bytes(data))
    dif = dupflow.build(folder, catalog=catalog, show_progress=False)
    assert _figures(dif)[0] == 0  # one listing: the shard is there
    found = dupflow.search(dif, show_progress=False)
    assert found.result == reference
    assert found.stats["dupflow"]["search"]["shards_repaired"] == 1
    assert not fs.exists(shard)  # set aside, never read again
    again = dupflow.build(folder, catalog=catalog, show_progress=False)
    assert _figures(again) == (0, 12, 0)  # the repair was recorded in the catalog


def _indexed_urls(catalog):
    """Every url the catalog's index files record, read straight from the files."""
    import pyarrow.parquet as pq

    return {u for p in glob.glob(f"{catalog}/*/index/*.parquet") for u in pq.read_table(p)["url"].to_pylist()}


@pytest.mark.slow
def test_an_interrupted_first_build_keeps_the_partitions_it_finished(tmp_path, client):
    folder = _photos(tmp_path / "imgs", 600)
    catalog = str(tmp_path / "cat")
    _kill_once_written(tmp_path, folder, catalog, f"{catalog}/*/index/*.parquet")  # one partition committed
    kept = _indexed_urls(catalog)
    assert 0 < len(kept) < 600
    dif = _build(folder, catalog, client)
    assert _figures(dif) == (600 - len(kept), len(kept), 0)  # only the rest is decoded
    fresh = _build(folder, str(tmp_path / "fresh"), client)
    assert (
        dupflow.search(dif, show_progress=False).result == dupflow.search(fresh, show_progress=False).result
    )


COMPACT = textwrap.dedent("""
    import sys, time
    from dupflow.catalog import CatalogRef
    ref = CatalogRef(sys.argv[1], {})
    while time.time() < float(sys.argv[2]):  # both processes start compacting at the same moment
        time.sleep(0.0005)
    print("MERGED", ref.compact_index(most=4))
""")


def _many_index_files(tmp_path, client, catalog, copies):
    """A real catalog of 33 files whose index rows are spread over one file per row, `copies` times over."""
    from dupflow.catalog import CatalogRef

    folder = _photos(tmp_path / "imgs", 33)
    dif = _build(folder, catalog, client)
    ref = CatalogRef(dif.stats["dupflow"]["build"]["catalog"], {})
    rows = ref.read_index()
    for name in ref.index_files():
        os.remove(name)
    for _ in range(copies):
        for k in range(rows.num_rows):
            ref.write_index(rows.slice(k, 1))
    return folder, ref, rows


def test_two_processes_compacting_at_once(tmp_path, client, catalog):
    folder, ref, rows = _many_index_files(tmp_path, client, catalog, copies=4)
    assert len(ref.index_files()) == 132
    script = tmp_path / "compact.py"
    script.write_text(COMPACT)
    start = str(time.time() + 3)
    jobs = [
        subprocess.Popen(
            [sys.executable, str(script), ref.url, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [job.communicate(timeout=120) for job in jobs]
    assert all(job.returncode == 0 for job in jobs), [err.decode()[-1500:] for _, err in outs]
    merged = sorted(out.decode().split()[-1] for out, _ in outs)
    assert merged == ["False", "True"]  # one claimed the compaction, the other left it alone
    assert len(ref.index_files()) == 1
    index = ref.read_index()
    assert index.num_rows == 33 == len(set(index.column("url").to_pylist()))  # duplicates merged
    assert _figures(_build(folder, catalog, client)) == (0, 33, 0)
    assert holder(ref.maintenance_folder) is None  # given back


def test_compaction_tolerates_files_vanishing_under_it(tmp_path, client, catalog):
    folder, ref, rows = _many_index_files(tmp_path, client, catalog, copies=1)
    names = ref.index_files()
    tables, read, _ = ref.read_index_files(names)  # a compaction that lost its lease midway, say
    assert ref.compact_index(most=4)  # another one merges and removes those files meanwhile
    ref.replace_index(tables, read)  # the first finishes on files already gone: no error, no row lost
    assert ref.read_index().num_rows == 66  # every row twice, in two merged files: harmless
    assert _figures(_build(folder, catalog, client)) == (0, 33, 0)
    assert ref.compact_index(most=1)  # the next compaction merges the duplicates
    assert ref.read_index().num_rows == 33


DIE_HOLDING = textwrap.dedent("""
    import os, sys
    from dupflow.claim import hold
    with hold(sys.argv[1], seconds=float(sys.argv[2])) as held:
        print("HELD", held, flush=True)
        os._exit(0)  # dies holding it, as a killed job would
""")


def test_a_claim_left_by_a_dead_process_expires(tmp_path):
    folder = str(tmp_path / "maintenance")
    out = subprocess.run([sys.executable, "-c", DIE_HOLDING, folder, "1.5"], capture_output=True, text=True)
    assert "HELD True" in out.stdout, out.stderr[-1500:]
    assert holder(folder) is not None
    with hold(folder) as held:
        assert not held  # still within its time
    time.sleep(1.6)
    with hold(folder) as held:
        assert held  # expired: taken over, under the next number
        assert holder(folder)["pid"] == os.getpid()
    assert holder(folder) is None  # and given back
    assert sorted(os.listdir(folder)) == [
        "claim-00000001.json",
        "claim-00000002.json",
        "claim-00000002.released",
    ]


def test_compaction_leaves_a_big_base_file_alone(tmp_path, client, catalog):
    folder, ref, rows = _many_index_files(tmp_path, client, catalog, copies=0)
    others = [  # rows of many other files, as a merged index of a big catalog holds
        rows.set_column(0, "url", pa.array([f"/elsewhere/{k}/{u}" for u in rows.column("url").to_pylist()]))
        for k in range(300)  # one row group compresses well: 300 copies to outweigh 5 small files
    ]
    base = ref.write_index(pa.concat_tables([rows, *others]))  # as an earlier compaction left it
    for k in range(5):  # then five runs' partitions
        ref.write_index(rows.slice(k, 1))
    assert ref.compact_index(most=4)
    files = ref.index_files()
    assert len(files) == 2 and files[0].endswith(base)  # the base kept, the small files merged beside it
    assert _figures(_build(folder, catalog, client)) == (0, 33, 0)
    for k in range(400):  # many more small files, now outweighing the base: everything merges
        ref.write_index(rows.slice(k % 33, 1))
    assert ref.compact_index(most=4) and len(ref.index_files()) == 1
    assert ref.read_index().num_rows == 33 * 301


TAKE_OVER = textwrap.dedent("""
    import sys, time
    from dupflow.claim import acquire
    while time.time() < float(sys.argv[2]):  # all processes take the expired claim over at the same moment
        time.sleep(0.0005)
    print("WON", acquire(sys.argv[1], 60) is not None)
""")


def test_processes_taking_over_an_expired_claim_at_once_cannot_both_win(tmp_path):
    from dupflow.claim import acquire

    folder = str(tmp_path / "maintenance")
    assert acquire(folder, 60, now=time.time() - 3600) is not None  # its holder died long ago
    start = str(time.time() + 3)
    jobs = [
        subprocess.Popen([sys.executable, "-c", TAKE_OVER, folder, start], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    won = [job.communicate(timeout=60)[0].split()[-1] for job in jobs]
    assert sorted(won) == ["False"] * 5 + ["True"]
    assert holder(folder) is not None


def test_every_decode_partition_gets_a_share_of_every_folder(tmp_path, client, catalog):
    """A folder of big files next to one of small ones must not become one long partition that the rest
    of the workers wait on: each partition (one shard) takes every count-th file of the listing."""
    from dupflow.catalog import CatalogRef

    for name in ("big", "small"):
        _photos(tmp_path / "imgs" / name, 16, seed=1 if name == "big" else 2)
    dif = _build(str(tmp_path / "imgs"), catalog, client)
    index = CatalogRef(dif.stats["dupflow"]["build"]["catalog"], {}).read_index().to_pydict()
    folders_per_shard: dict[str, set] = {}
    for url, shard in zip(index["url"], index["shard"]):
        folders_per_shard.setdefault(shard, set()).add(os.path.basename(os.path.dirname(url)))
    assert len(folders_per_shard) > 2  # 2 workers: at least 4 partitions
    assert all(folders == {"big", "small"} for folders in folders_per_shard.values())
    fresh = dupflow.build(str(tmp_path / "imgs"), show_progress=False, scheduler=client)  # no catalog
    found = dupflow.search(dif, show_progress=False).result
    assert found == dupflow.search(fresh, show_progress=False).result
    assert len(found) == 16  # every photo twice in each folder

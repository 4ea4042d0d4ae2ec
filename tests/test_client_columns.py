"""The lean client (issue 10): the listing and the decoded table are columns, reuse is a join over them,
and a shard verified whole once is not read again while its file and rows are unchanged."""

from __future__ import annotations

import logging
import os
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from imagegen import photo, save

import dupflow
from dupflow import verified
from dupflow.catalog import INDEX_SCHEMA, CatalogRef
from dupflow.columns import StringColumn
from dupflow.ingest import HASH_DTYPE, Decoded
from dupflow.reuse import candidates
from dupflow.sources import NOT_UTF8, UNSUPPORTED, list_files


def _build(folder, catalog, client, **kw):
    return dupflow.build(str(folder), show_progress=False, scheduler=client, catalog=catalog, **kw)


def _figures(dif):
    ours = dif.stats["dupflow"]["build"]
    return ours["decoded"], ours["reused"]


# ---- the listing ------------------------------------------------------------------------------------


def test_listing_columns_keep_order_owners_and_subsets(tmp_path):
    """Overlapping inputs: each file once, in input then path order, owned by its most specific input;
    columns read back as str / numbers, and subset() keeps them aligned."""
    root = tmp_path / "photos"
    for name in ["b.png", "a0.png", "a/c.png", "a/b/d.png", "a/notes.txt", "z/e.jpg"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * (len(name) + 3))
    os.utime(root / "b.png", ns=(1, 1_700_000_000_123_456_789))
    listing = list_files([str(root), str(root / "a")], True, True)
    names = [os.path.relpath(p, root) for p in listing.path]
    # Python's own sort of the paths (code points), as the listing always ordered them
    assert names == sorted(names) == ["a/b/d.png", "a/c.png", "a0.png", "b.png", "z/e.jpg"]
    assert isinstance(listing.path, StringColumn) and listing.path == list(listing.path)
    assert [listing.owner(i) for i in range(len(listing))] == [1, 1, 0, 0, 0]  # a/ is more specific
    assert listing.size.tolist() == [len(n) + 3 for n in names]
    assert listing.stamp[3] == "1700000000123456789" and listing.mtime[3] == pytest.approx(1_700_000_000.123)
    assert listing.invalid == {str(root / "a" / "notes.txt"): UNSUPPORTED}
    assert not listing.reference.any()
    part = listing.subset([4, 0])
    assert list(part.path) == [listing.path[4], listing.path[0]] and part.url[1] == listing.url[0]
    assert part.size.tolist() == [listing.size[4], listing.size[0]] and part.owners.tolist() == [0, 1]
    with_reference = list_files([str(root / "z")], True, True, reference=[str(root)])
    assert with_reference.reference.tolist() == [False, True, True, True, True]


def test_a_name_that_is_not_utf8_is_refused_and_the_rest_searched(tmp_path, client, catalog):
    """A local name with bytes that are not UTF-8 cannot be stored in the catalog: it is refused with that
    reason (before: the whole build failed in pyarrow), and every other file is searched."""
    folder = tmp_path / "imgs"
    save(photo(1, 40, 30), folder / "a.png")
    save(photo(1, 40, 30), folder / "b.png")
    odd = os.path.join(os.fsencode(folder), b"c\xff.png")
    save(photo(2, 40, 30), odd.decode("utf-8", "surrogateescape"))
    with _build(folder, catalog, client) as dif:
        found = dupflow.search(dif, show_progress=False)
        assert dif.stats["invalid_files"]["logs"] == {os.fsdecode(odd): NOT_UTF8}
    assert found.result == {str(folder / "a.png"): [[str(folder / "b.png"), 0.0]]}


def test_a_listing_costs_bytes_per_file_not_python_objects(tmp_path):
    """20,000 files: the listing the build keeps takes under 200 bytes a file (Python lists of str, ints
    and floats took about 500), and the listing's Python objects are gone once it is made."""
    root = tmp_path / "many"
    for k in range(20_000):
        sub = root / f"folder_{k // 1000:03d}"
        if k % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"IMG_{k:06d}_from_the_camera_roll.jpg").touch()
    arrow0 = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        listing = list_files([str(root)], True, True)
        python_bytes = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    arrow_bytes = pa.total_allocated_bytes() - arrow0
    numpy_bytes = (
        listing.size.nbytes + listing.mtime.nbytes + listing.owners.nbytes + listing.reference.nbytes
    )
    assert len(listing) == 20_000 and listing.path is listing.url  # paths shown are the URLs: one column
    per_file = (python_bytes + arrow_bytes) / len(listing)
    assert per_file < 200, (python_bytes, arrow_bytes, numpy_bytes)
    assert python_bytes < 2_000_000  # no per-file Python object survives (numpy arrays counted, ~0.4 MB)


# ---- the decoded table ----------------------------------------------------------------------------------


def test_decoded_replace_merges_shard_names_and_errors():
    """replace() takes fresh rows in place: shard names merged (old ones kept), errors moved by position."""
    old = Decoded.empty(5, decoded=5)
    old.shards = ["s1.parquet", "s2.parquet"]
    old.shard[:] = [0, 1, 0, -1, 1]
    old.row[:] = [0, 0, 1, -1, 1]
    old.hash[:] = [b"a" * 16, b"b" * 16, b"c" * 16, b"", b"d" * 16]
    old.error[3] = "broken"
    fresh = Decoded.empty(3, decoded=3)
    fresh.shards = ["s3.parquet", "s2.parquet"]
    fresh.shard[:] = [0, -1, 1]
    fresh.row[:] = [7, -1, 9]
    fresh.width[:] = [10, 0, 30]
    fresh.hash[:] = [b"e" * 16, b"", b"f" * 16]
    fresh.sums[:] = [[1, 2, 3], [0, 0, 0], [4, 5, 6]]
    fresh.error[1] = "gone"
    old.replace(np.array([1, 2, 3]), fresh)
    assert old.shards == ["s1.parquet", "s2.parquet", "s3.parquet"]
    assert [old.shard_name(p) for p in range(5)] == [
        "s1.parquet",
        "s3.parquet",
        None,
        "s2.parquet",
        "s2.parquet",
    ]
    assert old.error == {2: "gone"}
    assert old.valid().tolist() == [0, 1, 3, 4]
    assert old.positions_in("s2.parquet").tolist() == [3, 4] and old.positions_in("nope").tolist() == []
    assert old.row.tolist() == [0, 7, -1, 9, 1] and old.width.tolist() == [0, 10, 0, 30, 0]
    assert old.hash.dtype == HASH_DTYPE and old.hash.tolist() == [
        b"a" * 16,
        b"e" * 16,
        b"",
        b"f" * 16,
        b"d" * 16,
    ]
    assert old.sums[3].tolist() == [4, 5, 6]


def test_reuse_candidates_are_exact_key_matches_newest_first(tmp_path):
    """Index rows match a listed file only on (url, size, stamp) exactly and never without a stamp;
    a file's rows come newest (last written) first."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in "abc":
        (folder / f"{name}.png").write_bytes(b"12345")
    listing = list_files([str(folder)], True, True)
    url, stamp = listing.url, listing.stamp
    rows = [
        (url[0], 5, stamp[0]),  # 0: a, matches
        (url[1], 6, stamp[1]),  # 1: b, other size
        (url[2], 5, stamp[2]),  # 2: c, matches
        (url[0], 5, stamp[0]),  # 3: a again, newer
        (url[1], 5, stamp[1] + "0"),  # 4: b, other stamp
        (str(folder / "gone.png"), 5, stamp[0]),  # 5: not listed
        (url[1], 5, stamp[1]),  # 6: b, matches
    ]
    index = pa.Table.from_pylist([dict(zip(["url", "size", "stamp"], r)) for r in rows], schema=INDEX_SCHEMA)
    position, row = candidates(index, listing)
    assert list(zip(position.tolist(), row.tolist())) == [(0, 3), (0, 0), (1, 6), (2, 2)]
    no_stamp = index.set_column(2, "stamp", pa.array([""] * len(rows), pa.string()))
    assert len(candidates(no_stamp, listing)[0]) == 0


# ---- verified shards ------------------------------------------------------------------------------


def _read_bytes() -> int:
    """Bytes this process has read through read(2) and friends so far (/proc/self/io rchar)."""
    with open("/proc/self/io") as handle:
        return int(next(line for line in handle if line.startswith("rchar:")).split()[1])


def _shards(dif) -> list[str]:
    base = dif.stats["dupflow"]["build"]["catalog"]
    return sorted(os.path.join(base, "shards", n) for n in os.listdir(os.path.join(base, "shards")))


@pytest.fixture
def built(tmp_path, client, catalog):
    """40 photos (20 pairs) built at px_size 200 (8 shards, 4.8 MB in all), then reused once, which
    verifies the shard whole and marks it."""
    folder = tmp_path / "imgs"
    for k in range(40):
        save(photo(k % 20, 64, 48), folder / f"p_{k:02d}.png")
    first = _build(folder, catalog, client, px_size=200)
    assert _figures(first) == (40, 0)
    shards = _shards(first)
    assert len(shards) >= 1 and not os.path.exists(os.path.join(os.path.dirname(shards[0]), "..", "verified"))
    before = _read_bytes()
    second = _build(folder, catalog, client, px_size=200)
    read = _read_bytes() - before
    assert _figures(second) == (0, 40)
    total = sum(os.path.getsize(s) for s in shards)
    assert read >= total  # read whole (and checksummed) once
    ref = CatalogRef(second.stats["dupflow"]["build"]["catalog"], {})
    assert set(verified.read_marks(ref)) == {os.path.basename(s) for s in shards}
    return folder, second, shards, total, dupflow.search(second, show_progress=False).result


def test_a_verified_shard_is_not_read_again(built, client, catalog):
    """Unchanged files, unchanged shards: nothing of the shards is read (the index and marks are); once a
    file is gone, its shard's url column only is read to check the other rows, and that set is marked."""
    folder, _, shards, total, result = built
    before = _read_bytes()
    third = _build(folder, catalog, client, px_size=200)
    read = _read_bytes() - before
    assert _figures(third) == (0, 40)
    assert read < total / 20, (read, total)  # the index files and the marks
    assert dupflow.search(third, show_progress=False).result == result
    os.remove(folder / "p_00.png")
    before = _read_bytes()
    assert _figures(_build(folder, catalog, client, px_size=200)) == (0, 39)
    fewer = _read_bytes() - before
    assert read + 60_000 < fewer < total / 4, (read, fewer, total)  # + one shard's footer and url column
    before = _read_bytes()
    assert _figures(_build(folder, catalog, client, px_size=200)) == (0, 39)
    assert _read_bytes() - before < fewer - 60_000  # that shard's new set of rows was marked


def test_a_shard_changed_after_verification_is_caught(built, client, catalog, caplog):
    """Bytes changed in place with size and mtime put back (a marker of size + mtime alone would trust
    it): the file's ctime moved, so the shard is read whole, its checksums fail, and its images are
    decoded again; the answer is unchanged."""
    folder, _, shards, _, result = built
    shard = shards[0]
    group = pq.ParquetFile(shard).metadata.row_group(0)
    chunk = next(c for c in map(group.column, range(group.num_columns)) if c.path_in_schema == "tensor")
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    at = start + chunk.total_compressed_size // 2  # amid the tensors' bytes
    st = os.stat(shard)
    with open(shard, "r+b") as handle:
        handle.seek(at)
        byte = handle.read(1)
        handle.seek(at)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.path.getsize(shard), os.stat(shard).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with caplog.at_level(logging.WARNING, logger="dupflow"):
        again = _build(folder, catalog, client, px_size=200)
    rows = pq.ParquetFile(shard).metadata.num_rows
    assert _figures(again) == (rows, 40 - rows)
    assert any(
        os.path.basename(shard) in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records
    )
    assert dupflow.search(again, show_progress=False).result == result


def test_marks_are_merged_and_stale_ones_dropped(tmp_path):
    """Each build that verified something adds one mark file; above MOST_FILES they merge into one that
    keeps only the marks still matching their shard's state."""
    ref = CatalogRef(str(tmp_path / "ns"), {})
    os.makedirs(tmp_path / "ns" / "shards")
    states = {f"s{k}.parquet": f"{k}:1:1:1" for k in range(verified.MOST_FILES + 1)}
    for k, name in enumerate(states):
        verified.remember(ref, {name: (states[name] if k else "stale", f"rows{k}")}, states)
    files = os.listdir(tmp_path / "ns" / verified.FOLDER)
    assert len(files) == 1
    marks = verified.read_marks(ref)
    assert marks == {name: (state, f"rows{k}") for k, (name, state) in enumerate(states.items()) if k}
    assert verified.rows_digest([2, 0], ["b", "a"]) == verified.rows_digest([0, 2], ["a", "b"])
    assert verified.rows_digest([0, 2], ["a", "b"]) != verified.rows_digest([0, 2], ["b", "a"])


def test_catalog_verify_marks_the_sound_shards(tmp_path, client, catalog):
    """`dupflow catalog verify` reads every shard whole: the sound ones are marked, so the next build
    does not read them again; a build right after decoding has marked nothing (workers wrote them)."""
    from dupflow import catalog_maintenance

    folder = tmp_path / "imgs"
    for k in range(40):
        save(photo(k, 64, 48), folder / f"p_{k:02d}.png")
    first = _build(folder, catalog, client, px_size=200)
    ref = CatalogRef(first.stats["dupflow"]["build"]["catalog"], {})
    assert verified.read_marks(ref) == {}
    report = catalog_maintenance.verify(catalog)
    shards = _shards(first)
    assert report["sound"] == len(shards) and set(verified.read_marks(ref)) == {
        os.path.basename(s) for s in shards
    }
    before = _read_bytes()
    assert _figures(_build(folder, catalog, client, px_size=200)) == (0, 40)
    assert _read_bytes() - before < sum(os.path.getsize(s) for s in shards) / 4


def test_compaction_rewrites_an_index_base_of_small_row_groups(tmp_path):
    """An index written in 128-row groups (older versions) is rewritten by the next compaction even as
    its big base, into one row group; a base already in one row group is left alone."""
    ref = CatalogRef(str(tmp_path / "ns"), {})
    rows = pa.Table.from_pylist(
        [{"url": f"/photos/{k:05d}.png", "size": k, "stamp": "1", "error": "x"} for k in range(3000)],
        schema=INDEX_SCHEMA,
    )
    os.makedirs(tmp_path / "ns" / "index")
    pq.write_table(rows, tmp_path / "ns" / "index" / "00000000000000000001-old.parquet", row_group_size=128)
    for k in range(3):
        ref.write_index(rows.slice(k, 1))
    assert ref.compact_index(most=2)
    files = ref.index_files()
    assert len(files) == 1 and pq.ParquetFile(files[0]).metadata.num_row_groups == 1
    assert ref.read_index().num_rows == 3000
    for k in range(3):
        ref.write_index(rows.slice(k, 1))
    assert ref.compact_index(most=2) and ref.index_files()[0] == files[0]  # the new base stays

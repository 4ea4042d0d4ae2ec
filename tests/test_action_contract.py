"""One contract for move_to, delete and undo, run against every store (fsspec's AbstractCopyTests style):
a local folder, a local folder on another filesystem (/dev/shm), memory:// and a bucket on a real S3
endpoint (moto's server over HTTP). Each scenario runs a real build and search on a real cluster."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import warnings

import fsspec
import pytest
from imagegen import photo
from stores import Bucket, Store

import dupflow

SHM = "/dev/shm"
THEIRS = b"someone else's file"
MODE = 0o640  # not the default umask's 0o644: a copy that drops permissions shows
MTIME_NS = 1_500_000_000_123_456_789  # an old modification time: a fresh copy would show today's


def png(seed: int, w: int = 96, h: int = 72) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(photo(seed, w, h)).save(buffer, "PNG")
    return buffer.getvalue()


PLANTED = {
    "z_best.png": png(5),
    "a/img.png": png(5),  # byte copies: two of the three go, whichever ranks lower
    "b/img.png": png(5),
    "other.png": png(6, 80, 80),  # matches nothing
}
TWINS = ("z_best.png", "a/img.png", "b/img.png")


def other_filesystem(tmp_path) -> str:
    """A folder on another filesystem than tmp_path (so moves there copy), or skip where there is none."""
    if not os.path.isdir(SHM) or os.stat(SHM).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip(f"{SHM} is not another filesystem here")
    folder = os.path.join(SHM, f"dupflow-{os.getpid()}-{tmp_path.name}")
    os.makedirs(folder)
    return folder


@pytest.fixture
def make_store(tmp_path, request):
    """make_store(kind, name) -> a fresh Store of that kind; every one is removed after the test."""
    made: list[Store] = []

    def make(kind: str, name: str) -> Store:
        if kind == "local":
            store = Store.local(tmp_path / name)
        elif kind == "shm":
            store = Store.local(os.path.join(other_filesystem(tmp_path), name), kind="shm")
        elif kind == "memory":
            store = Store.memory()
        else:
            store = Store.s3(Bucket(request.getfixturevalue("endpoint")))
        made.append(store)
        return store

    yield make
    for store in made:
        store.cleanup()
        if store.kind == "shm":
            shutil.rmtree(os.path.dirname(store.base), ignore_errors=True)


def plant(store: Store) -> None:
    """The planted files, with an unusual mode and an old modification time where the store keeps them."""
    for name, data in PLANTED.items():
        store.put(f"photos/{name}", data)
        if store.is_local:
            path = store.url(f"photos/{name}")
            os.chmod(path, MODE)
            os.utime(path, ns=(MTIME_NS, MTIME_NS))


def search(store: Store, client, catalog: str, options: dict):
    dif = dupflow.build(
        store.url("photos"), catalog=catalog, storage_options=options, scheduler=client, show_progress=False
    )
    return dupflow.search(dif, show_progress=False)


def records(journal: str) -> list[dict]:
    with open(journal, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def metadata(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_mtime_ns


def both(a: Store, b: Store) -> dict:
    """Storage options that reach both stores (only S3 needs any)."""
    return a.options or b.options


MOVES = [
    ("local", "local"),
    ("local", "shm"),  # another filesystem: copy, never a rename
    ("local", "memory"),
    ("local", "s3"),
    ("memory", "memory"),
    ("memory", "local"),
    ("s3", "s3"),
    ("s3", "local"),
]


@pytest.mark.parametrize("source_kind, dest_kind", MOVES)
def test_move_never_overwrites_lists_new_paths_and_undoes(
    make_store, threads, catalog, source_kind, dest_kind
):
    source, dest = make_store(source_kind, "source"), make_store(dest_kind, "dest")
    plant(source)
    dest.put("q/img.png", THEIRS)
    options = both(source, dest)
    found = search(source, threads, catalog, options)
    twins = {source.url(f"photos/{name}") for name in TWINS}
    assert len(found.result) == 1
    ((primary, matches),) = found.result.items()
    assert {primary} | {m for m, _ in matches} == twins
    low = sorted(twins - {primary})
    assert found.lower_quality == low

    found.move_to(dest.url("q"))

    # the file already there is untouched; both img.png survive under distinct new names
    landed = dest.tree("q")
    assert landed.pop("img.png") == THEIRS
    assert len(landed) == 2 and all(data == PLANTED["a/img.png"] for data in landed.values())
    assert found.lower_quality == sorted(dest.url(f"q/{name}") for name in landed)
    assert all(dest.exists(path) for path in found.lower_quality)
    left = source.tree("photos")
    assert sorted(left) == sorted({"other.png"} | {p.rsplit("photos/", 1)[1] for p in {primary}})
    assert all(left[name] == PLANTED[name] for name in left)
    if source.is_local and dest.is_local:  # shutil.copy2 semantics, across filesystems too
        assert all(metadata(p) == (MODE, MTIME_NS) for p in found.lower_quality)

    # the journal: each move planned (source, destination, size, stamp) before any is done
    recs = records(found.journal)
    plans = [r for r in recs if r.get("op") == "plan"]
    done = [r for r in recs if r.get("op") == "done"]
    assert recs[0]["journal"] == "dupflow" and recs[0]["action"] == "move"
    assert (
        sorted(r["source"] for r in plans)
        == sorted(r["source"] for r in done)
        == [os.path.abspath(p) if source.is_local else p for p in low]
    )
    assert all(r["size"] == len(PLANTED["a/img.png"]) and r["stamp"] for r in plans)
    assert max(recs.index(r) for r in plans) < min(recs.index(r) for r in done)

    # undo puts everything back, with its permissions and modification time, and leaves theirs alone
    assert dupflow.undo(found.journal, options) == {"restored": 2, "skipped": 0, "not_restorable": 0}
    assert source.tree("photos") == PLANTED
    assert dest.tree("q") == {"img.png": THEIRS}
    if source.is_local:
        assert all(metadata(p) == (MODE, MTIME_NS) for p in low)
    assert dupflow.undo(found.journal, options)["restored"] == 0  # nothing left to restore
    assert source.tree("photos") == PLANTED


@pytest.mark.parametrize("kind", ["local", "memory", "s3"])
def test_changed_files_are_skipped_by_move_and_delete(make_store, threads, catalog, kind):
    store = make_store(kind, "source")
    plant(store)
    found = search(store, threads, catalog, store.options)
    changed, same = found.lower_quality
    if store.is_local:  # the same bytes, only a new modification time, is a change too
        os.utime(changed, ns=(MTIME_NS, MTIME_NS + 5_000_000_000))
    else:
        store.put(changed.rsplit(store.base + "/", 1)[1], PLANTED["a/img.png"] + b"changed")
    kept = store.tree("photos")[changed.rsplit("photos/", 1)[1]]

    found.delete(silent_del=True)
    assert store.exists(changed) and not store.exists(same)
    assert store.tree("photos")[changed.rsplit("photos/", 1)[1]] == kept
    recs = records(found.journal)
    assert [r["source"] for r in recs if r.get("op") == "done"] == [_journal_url(store, same)]
    assert [r["reason"] for r in recs if r.get("op") == "skip"] == ["it changed since the scan"]
    assert dupflow.undo(found.journal, store.options) == {"restored": 0, "skipped": 0, "not_restorable": 1}
    assert sorted(store.tree("photos")) == sorted(PLANTED.keys() - {same.rsplit("photos/", 1)[1]})

    found.move_to(store.url("q"))  # the same rule for a move; the deleted one is simply gone
    assert store.exists(changed) and store.tree("q") == {}
    reasons = sorted(r["reason"] for r in records(found.journal) if r.get("op") == "skip")
    assert reasons == ["it changed since the scan", "it no longer exists"]


def _journal_url(store: Store, url: str) -> str:
    """How a journal names a file: local paths absolute, URLs as listed."""
    return os.path.abspath(url) if store.is_local else url


def blind_checks(monkeypatch, dest: Store) -> None:
    """dupflow's existence checks at dest see nothing: as if each file there appeared after its check.

    (Not for memory://: its exclusive create is itself an existence check, so there is nothing to race.)
    """
    if dest.is_local:
        monkeypatch.setattr(os.path, "lexists", lambda path: False)
        return
    ours = fsspec.core.url_to_fs(dest.url(), **dest.options)[0]  # dupflow's own client (cached)

    def info(path, **kwargs):
        raise FileNotFoundError(path)

    monkeypatch.setattr(ours, "info", info)
    monkeypatch.setattr(ours, "exists", lambda *a, **k: False)


@pytest.mark.parametrize("kind", ["local", "shm", "s3"])
def test_a_name_taken_after_the_check_is_never_overwritten(make_store, threads, catalog, monkeypatch, kind):
    """A file appears at the chosen destination name between the name check and the move: the move
    itself refuses to replace it (local: a hard link or O_EXCL; S3: a PUT with If-None-Match: *)."""
    source, dest = make_store("local", "source"), make_store(kind, "dest")
    plant(source)
    found = search(source, threads, catalog, dest.options)
    low = list(found.lower_quality)
    names = {p.rsplit("/", 1)[1] for p in low}
    theirs = {n: THEIRS for n in names | {n.replace(".", "_1.") for n in names}}  # every name the plan picks
    for name, data in theirs.items():
        dest.put(f"q/{name}", data)
    blind_checks(monkeypatch, dest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found.move_to(dest.url("q"))
    monkeypatch.undo()
    print(
        "LOW", low, "TREE", {k: v[:12] for k, v in dest.tree("q").items()}, [str(w.message) for w in caught]
    )
    assert sum("Could not move file" in str(w.message) for w in caught) == 2
    assert dest.tree("q") == theirs  # never replaced
    assert source.tree("photos") == PLANTED and found.lower_quality == low
    planned = {r["destination"].rsplit("/", 1)[1] for r in records(found.journal) if r.get("op") == "plan"}
    assert len(planned) == 2 and planned <= set(theirs)  # the checks really were blind: names were taken
    assert not [r for r in records(found.journal) if r.get("op") == "done"]


def test_a_copy_to_another_filesystem_is_synced_before_its_source_goes(
    make_store, threads, catalog, monkeypatch
):
    source, dest = make_store("local", "source"), make_store("shm", "dest")
    plant(source)
    found = search(source, threads, catalog, {})
    events: list[tuple[str, str]] = []
    fsync, unlink = os.fsync, os.unlink

    def spy_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def spy_unlink(path, *args, **kwargs):
        events.append(("unlink", os.fspath(path)))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "unlink", spy_unlink)
    low = [os.path.abspath(p) for p in found.lower_quality]
    found.move_to(dest.url("q"))
    monkeypatch.undo()
    for source_path, target in zip(low, found.lower_quality):
        assert events.index(("fsync", target)) < events.index(("unlink", source_path))
        assert metadata(target) == (MODE, MTIME_NS)


class FailingRead(io.BytesIO):
    """A source whose second read fails: the copy has started (and written) when it breaks."""

    def read(self, n=-1):
        if self.tell():
            raise OSError("read failed")
        return super().read(n)


@pytest.mark.parametrize(
    "source_kind, dest_kind", [("local", "s3"), ("s3", "local"), ("local", "memory"), ("local", "shm")]
)
def test_a_copy_that_fails_half_way_leaves_no_partial_file(
    make_store, threads, catalog, monkeypatch, source_kind, dest_kind
):
    source, dest = make_store(source_kind, "source"), make_store(dest_kind, "dest")
    plant(source)
    options = both(source, dest)
    found = search(source, threads, catalog, options)
    low = list(found.lower_quality)
    if source.is_local and dest.is_local:  # another filesystem: a plain file copy

        def half_copy(src, dst, length=0):
            dst.write(src.read(100))
            raise OSError("read failed")

        monkeypatch.setattr(shutil, "copyfileobj", half_copy)
    else:  # through fsspec: dupflow's own filesystem instance for the source
        reader = fsspec.core.url_to_fs(source.url(), **options)[0]
        if source.is_local:
            reader = type(reader)
        monkeypatch.setattr(reader, "open", lambda *a, **k: FailingRead(PLANTED["a/img.png"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found.move_to(dest.url("q"))
    monkeypatch.undo()
    assert sum("read failed" in str(w.message) for w in caught) == 2
    assert dest.tree("q") == {}  # no partial copy, under any name
    assert source.tree("photos") == PLANTED and found.lower_quality == low
    assert not [r for r in records(found.journal) if r.get("op") == "done"]

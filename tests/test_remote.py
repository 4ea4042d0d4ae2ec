"""Remote storage against a real S3 endpoint over HTTP (moto's server) through s3fs, plus memory:// and a
gs:// stand-in: listing, batched reads, the catalog on S3, and no leaked credentials. move_to, delete and
undo across stores are one contract suite: test_action_contract.py."""

from __future__ import annotations

import glob
import hashlib
import importlib
import io
import json
import logging
import os
import time
import traceback
import uuid

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import fsspec  # noqa: E402
from fsspec.spec import AbstractFileSystem  # noqa: E402
from imagegen import make_photo_set, photo, save  # noqa: E402
from stores import Bucket  # noqa: E402

import dupflow  # noqa: E402
from dupflow import cli  # noqa: E402
from dupflow.catalog import CatalogRef  # noqa: E402
from dupflow.fetch import read_batch  # noqa: E402
from dupflow.partition import decode_partition  # noqa: E402
from dupflow.sources import current_state, list_files, remote_stamp  # noqa: E402


def png(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


@pytest.fixture
def bucket(endpoint):
    return Bucket(endpoint)


def search(paths, catalog, client, options, similarity="duplicates", **search_kw):
    dif = dupflow.build(
        *paths, catalog=catalog, storage_options=options, scheduler=client, show_progress=False
    )
    return dif, dupflow.search(dif, similarity=similarity, show_progress=False, **search_kw)


def relative(found, prefix: str):
    """A search's result, lower_quality and pairs with `prefix` cut off every path."""
    cut = lambda p: p[len(prefix) :] if p.startswith(prefix) else pytest.fail(f"{p} not under {prefix}")  # noqa: E731
    result = {cut(k): [[cut(m), mse] for m, mse in v] for k, v in found.result.items()}
    return result, [cut(p) for p in found.lower_quality], [(cut(a), cut(b), mse) for a, b, mse in found.pairs]


def partition(found, prefix: str):
    """A search's pairs, groups (as sets) and lower_quality size, with `prefix` cut off every path."""
    result, low, pairs = relative(found, prefix)
    groups = sorted(sorted([primary] + [m for m, _ in matches]) for primary, matches in result.items())
    return groups, len(low), pairs


# 1. the same photos in a bucket and on disk give the same answers


def test_bucket_search_matches_local_search(client, bucket, tmp_path):
    local = tmp_path / "photos"
    planted = make_photo_set(local, n_unrelated=6, seed=3)
    bucket.fs.put(str(local), f"{bucket.name}/photos", recursive=True)
    on_disk = sorted(os.path.relpath(p, local) for p in glob.glob(f"{local}/**/*.*", recursive=True))
    assert sorted(bucket.keys("photos")) == on_disk

    remote = bucket.url("photos")
    for kw in ({}, {"similarity": 50, "same_dim": False}):
        _, here = search([str(local)], str(tmp_path / f"cat_local{len(kw)}"), client, {}, **kw)
        dif, there = search([remote], str(tmp_path / f"cat_s3{len(kw)}"), client, bucket.options, **kw)
        # the same pairs and the same groups; a group's primary may differ, as the store's LastModified
        # is not the file's modification time
        assert partition(there, remote + "/") == partition(here, str(local) + "/")
        assert there.result and all(k.startswith(f"s3://{bucket.name}/photos/") for k in there.result)
        assert there.stats["directory"] == [remote]
        assert there.stats["total_files"] == here.stats["total_files"] == len(on_disk)
        assert (
            there.stats["process"]["search"]["matches_found"]
            == here.stats["process"]["search"]["matches_found"]
        )
        assert dif.stats["dupflow"]["build"]["decoded"] == len(on_disk)
    # the planted byte copies and quarter turns are in the bucket's duplicate groups
    _, dup = search([remote], str(tmp_path / "cat_s30"), client, bucket.options)
    grouped = {p[len(remote) + 1 :] for k, v in dup.result.items() for p in [k] + [m for m, _ in v]}
    assert set(planted["copy"]) | set(planted["rot90"]) <= grouped


# 2. one search over a local folder, an S3 prefix and a memory:// folder


def test_mixed_local_s3_and_memory_inputs(bucket, tmp_path, catalog):
    twin = photo(42, 96, 72)
    local_copy = save(twin, tmp_path / "disk" / "twin.png")
    save(photo(43, 96, 72), tmp_path / "disk" / "other.png")
    bucket.fs.pipe(
        {
            f"{bucket.name}/lake/deep/twin.png": png(twin, compress_level=1),  # other bytes, same pixels
            f"{bucket.name}/lake/unrelated.png": png(photo(44, 96, 72)),
        }
    )
    memory, folder = fsspec.filesystem("memory"), f"dupflow-{uuid.uuid4().hex[:8]}"  # memory://folder
    memory.pipe(
        {f"/{folder}/twin.png": png(twin, compress_level=9), f"/{folder}/x/y.png": png(photo(45, 80, 80))}
    )
    try:
        # memory:// lives in this process only: the default scheduler (threads here, for a small job) sees it
        dif = dupflow.build(
            str(tmp_path / "disk"),
            bucket.url("lake"),
            f"memory://{folder}",
            catalog=catalog,
            storage_options=bucket.options,
            show_progress=False,
        )
        with dif:
            found = dupflow.search(dif, show_progress=False)
        twins = {local_copy, bucket.url("lake/deep/twin.png"), f"memory://{folder}/twin.png"}
        assert dif.stats["total_files"] == 6 and dif.stats["invalid_files"]["count"] == 0
        assert len(found.result) == 1
        ((primary, matches),) = found.result.items()
        assert {primary} | {m for m, _ in matches} == twins and all(mse == 0.0 for _, mse in matches)
        assert found.lower_quality == sorted(twins - {primary})
        found.delete(silent_del=True)  # each copy is under its input, unchanged: both go, across stores
        assert [current_state(p, bucket.options) is None for p in sorted(twins)] == [
            p != primary for p in sorted(twins)
        ]
    finally:
        memory.rm(f"/{folder}", recursive=True)


def test_memory_files_unseen_by_worker_processes_get_a_clear_reason(client, tmp_path, catalog):
    memory, folder = fsspec.filesystem("memory"), f"dupflow-{uuid.uuid4().hex[:8]}"  # memory://folder
    memory.pipe({f"/{folder}/a.png": png(photo(1))})
    try:
        dif = dupflow.build(f"memory://{folder}", catalog=catalog, scheduler=client, show_progress=False)
    finally:
        memory.rm(f"/{folder}", recursive=True)
    assert list(dif.stats["invalid_files"]["logs"]) == [f"memory://{folder}/a.png"]
    assert (
        "memory:// files exist only in the process"
        in dif.stats["invalid_files"]["logs"][f"memory://{folder}/a.png"]
    )


# 3. the catalog itself on S3: reruns decode only what is new or changed


def test_catalog_on_s3_reuses_and_tracks_changes(client, bucket, tmp_path):
    photos = {f"p{k}.png": png(photo(100 + k, 64, 48)) for k in range(5)}
    photos["copy_of_p0.png"] = photos["p0.png"]
    bucket.fs.pipe({f"{bucket.name}/photos/{name}": data for name, data in photos.items()})
    catalog, source = bucket.url("cat"), bucket.url("photos")

    def rerun():
        return search([source], catalog, client, bucket.options)

    ours = fsspec.core.url_to_fs(catalog, **bucket.options)[0]  # dupflow's client-side s3fs instance
    ours.ls(bucket.name)
    operations, deleted = [], []

    def hook(model, params, **_):  # must return None: a value would stand in for S3's answer
        operations.append(model.name)
        if model.name == "DeleteObject":
            deleted.append(params.get("Key", ""))

    ours.s3.meta.events.register("before-call.s3", hook)
    try:
        dif, found = rerun()
    finally:
        ours.s3.meta.events.unregister("before-call.s3", hook)
    assert "PutObject" in operations and "CopyObject" not in operations  # written in place, never renamed
    assert not [key for key in deleted if "/shards/" in key or "/index/" in key]  # nothing of the catalog
    figures = dif.stats["dupflow"]["build"]
    assert (figures["decoded"], figures["reused"], figures["removed"]) == (6, 0, 0)
    assert figures["catalog"].startswith(catalog + "/")
    assert partition(found, source + "/")[0] == [["copy_of_p0.png", "p0.png"]]
    stored = bucket.keys("cat")
    assert any("/shards/" in k for k in stored) and any("/index/" in k for k in stored)
    assert not any(k.rsplit("/", 1)[-1].startswith(".") for k in stored)  # written in place: no temporaries

    dif, again = rerun()
    assert (dif.stats["dupflow"]["build"]["decoded"], dif.stats["dupflow"]["build"]["reused"]) == (0, 6)
    assert again.result == found.result

    bucket.fs.pipe_file(f"{bucket.name}/photos/new/p1_again.png", photos["p1.png"])  # one new object
    dif, found = rerun()
    assert (dif.stats["dupflow"]["build"]["decoded"], dif.stats["dupflow"]["build"]["reused"]) == (1, 6)
    assert ["new/p1_again.png", "p1.png"] in partition(found, source + "/")[0]

    old = current_state(f"{source}/copy_of_p0.png", bucket.options)
    bucket.fs.pipe_file(f"{bucket.name}/photos/copy_of_p0.png", png(photo(999, 64, 48)))  # other bytes
    assert current_state(f"{source}/copy_of_p0.png", bucket.options)[1] != old[1]  # new ETag
    dif, found = rerun()
    assert (dif.stats["dupflow"]["build"]["decoded"], dif.stats["dupflow"]["build"]["reused"]) == (1, 6)
    assert partition(found, source + "/")[0] == [["new/p1_again.png", "p1.png"]]

    bucket.fs.rm_file(f"{bucket.name}/photos/new/p1_again.png")
    dif, found = rerun()
    figures = dif.stats["dupflow"]["build"]
    assert (figures["decoded"], figures["reused"], figures["removed"]) == (0, 6, 1)
    assert found.result == {} and dif.stats["total_files"] == 6


# 4. credentials never show


def test_credentials_never_appear(client, endpoint, tmp_path, caplog, capsys):
    secret = f"SeCrEt-{uuid.uuid4().hex}"
    key = f"AKIA{uuid.uuid4().hex[:16].upper()}"
    b = Bucket(endpoint, key=key, secret=secret)
    twin = photo(7, 64, 48)
    b.fs.pipe(
        {
            f"{b.name}/photos/a.png": png(twin),
            f"{b.name}/photos/b.png": png(twin, compress_level=1),
            f"{b.name}/photos/broken.jpg": b"not an image at all",
        }
    )
    catalog = b.url("cat")
    seen: list[str] = []

    caplog.set_level(logging.DEBUG)
    dif, found = search([b.url("photos")], catalog, client, b.options)
    seen += [
        json.dumps(found.stats),
        json.dumps(found.result),
        json.dumps(found.lower_quality),
        repr(dif.stats),
    ]
    assert found.stats["invalid_files"]["count"] == 1 and len(found.lower_quality) == 1
    found.move_to(b.url("quarantine"))
    seen.append(open(found.journal, encoding="utf-8").read())
    assert dupflow.undo(found.journal, b.options)["restored"] == 1
    for missing in (b.url("no/such/prefix"), f"s3://{b.name}-missing/photos"):
        with pytest.raises(FileNotFoundError) as info:
            dupflow.build(
                missing, catalog=catalog, storage_options=b.options, scheduler=client, show_progress=False
            )
        assert missing in str(info.value)
        seen.append("".join(traceback.format_exception(info.value)))
    with pytest.raises(FileNotFoundError) as info:  # fails inside a worker process; the error travels back
        dupflow.build(
            b.url("photos"),
            catalog=f"s3://{b.name}-no-bucket/cat",
            storage_options=b.options,
            scheduler=client,
            show_progress=False,
        )
    assert f"{b.name}-no-bucket" in str(info.value)
    seen.append("".join(traceback.format_exception(info.value)))
    # every log record, DEBUG included, is free of the secret; the key id (not a secret: SigV4 sends it in
    # clear) shows only in botocore's DEBUG dump of request headers, never in dupflow's records or above DEBUG
    assert secret not in caplog.text
    seen += [
        r.getMessage() for r in caplog.records if r.name.startswith("dupflow") or r.levelno > logging.DEBUG
    ]
    assert any("broken.jpg" in text for text in seen)  # the log did record the run's warnings

    logger = logging.getLogger("dupflow")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        report = tmp_path / "report"
        cli_args = [
            "--storage-options",
            json.dumps(b.options),
            "--catalog",
            catalog,
            "--scheduler",
            client.scheduler.address,
            "-p",
            "false",
            "-Z",
            str(report),
        ]
        assert cli.main([b.url("photos"), *cli_args, "-mv", b.url("cli_quarantine")]) == 0
        assert cli.main([b.url("nothing/here"), *cli_args]) == 2
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])
    out, err = capsys.readouterr()
    assert "nothing/here" in err
    written = sorted(glob.glob(f"{report}/*"))
    kinds = {os.path.basename(p).split("_", 2)[2] for p in written}  # dupflow_<stamp>_<kind>
    assert {"results.json", "lower_quality.json", "stats.json"} <= kinds
    assert len(b.keys("cli_quarantine")) == 1 and "journal" in out
    journals = glob.glob(os.path.join(os.environ["XDG_STATE_HOME"], "dupflow", "journals", "*.jsonl"))
    seen += [out, err] + [open(p, encoding="utf-8").read() for p in written + journals]
    for text in seen:
        assert secret not in text and key not in text


# 5. batched reads: one cat_ranges round per batch, and a missing object is that object's error only


def test_read_batch_is_one_round_with_per_file_errors(bucket, endpoint, tmp_path, monkeypatch):
    images = {f"{bucket.name}/batch/img_{k:02d}.png": png(photo(200 + k, 40, 30)) for k in range(15)}
    bucket.fs.pipe(images)
    urls = [f"s3://{path}" for path in images] + [bucket.url("batch/gone.png")]
    fs = fsspec.core.url_to_fs(urls[0], **bucket.options)[0]
    fs.ls(bucket.name)  # the client exists, so we can watch its calls
    calls, operations = [], []
    real = fs.cat_ranges  # async filesystems mirror it onto each instance: spy on this one
    monkeypatch.setattr(
        fs, "cat_ranges", lambda paths, *a, **k: calls.append(len(paths)) or real(paths, *a, **k)
    )
    hook = lambda model, **_: operations.append(model.name)  # noqa: E731
    fs.s3.meta.events.register("before-call.s3", hook)
    try:
        got = read_batch(urls, bucket.options)
    finally:
        fs.s3.meta.events.unregister("before-call.s3", hook)
    assert calls == [16]
    assert sorted(operations) == ["GetObject"] * 16  # one GET per object, no HEAD or LIST
    assert all(got[f"s3://{path}"] == data for path, data in images.items())
    assert isinstance(got[urls[-1]], FileNotFoundError) and "after it was listed" in str(got[urls[-1]])

    catalog = CatalogRef(str(tmp_path / "cat"), {})
    rows = decode_partition([(u, 1, "s") for u in urls], catalog, bucket.options, 16, "exact")
    assert [r["url"] for r in rows] == urls
    assert all(r["error"] is None and r["shard"] for r in rows[:-1])
    assert (
        rows[-1]["error"] == "File not found: deleted or moved after it was listed" and not rows[-1]["cache"]
    )


# 6. listing thousands of objects, skipping hidden ones


@pytest.mark.slow
def test_listing_2000_objects_skips_hidden_ones(bucket):
    objects = {f"{bucket.name}/many/f{k // 100:02d}/img_{k:04d}.jpg": b"x" for k in range(2000)}
    hidden = [".hidden/a.jpg", ".dotfile.jpg", "f00/.secret/b.jpg", "f01/.dot.png"]
    objects.update({f"{bucket.name}/many/{name}": b"h" for name in hidden})
    objects[f"{bucket.name}/many/f02/"] = b""  # a folder marker, as consoles make
    objects[f"{bucket.name}/many/notes.txt"] = b"t"
    objects[f"{bucket.name}/many2/img.jpg"] = b"sibling prefix"  # not under many/
    bucket.fs.pipe(objects)

    start = time.perf_counter()
    listing = list_files([bucket.url("many")], True, True, bucket.options)
    took = time.perf_counter() - start
    assert took < 30, f"listing 2,000 objects took {took:.1f} s"
    assert len(listing) == 2000 and listing.path == sorted(listing.path)
    assert listing.path[0] == bucket.url("many/f00/img_0000.jpg") and listing.url == listing.path
    assert not any("/." in p for p in listing.path)
    assert listing.invalid == {bucket.url("many/notes.txt"): "Unsupported file type"}
    assert all(s == 1 and len(t) == 32 for s, t in zip(listing.size, listing.stamp))  # size, plain ETag

    flat = list_files([bucket.url("many")], False, True, bucket.options)
    assert len(flat) == 0 and list(flat.invalid) == [bucket.url("many/notes.txt")]
    bucket.fs.pipe_file(f"{bucket.name}/many/top.jpg", b"new")  # another client adds one
    flat = list_files([bucket.url("many")], False, True, bucket.options)
    assert flat.path == [bucket.url("many/top.jpg")]
    one = list_files([bucket.url("many/f00/img_0007.jpg")], True, True, bucket.options)
    assert one.path == [bucket.url("many/f00/img_0007.jpg")] and one.roots == one.path


def test_current_state_takes_file_urls(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"abc")
    st = os.stat(path)
    assert current_state(f"file://{path}", {}) == current_state(str(path), {}) == (3, str(st.st_mtime_ns))
    assert current_state(f"file://{tmp_path}/gone.png", {}) is None


# gs:// cannot be served here; an in-process stand-in with gcsfs's listing fields takes the same path


class FakeGCS(AbstractFileSystem):
    """Objects with gcsfs-style metadata: `generation` changes with content, `etag` also with metadata."""

    protocol = ("gs", "gcs")
    cachable = False
    objects: dict[str, list] = {}  # path -> [bytes, generation, metageneration]

    def _meta(self, path: str) -> dict:
        data, generation, meta = self.objects[path]
        return {
            "name": path,
            "type": "file",
            "size": len(data),
            "generation": str(generation),
            "metageneration": str(meta),
            "etag": f"C{generation}{meta}=",
            "md5Hash": hashlib.md5(data).hexdigest(),
            "updated": f"2024-01-01T00:00:{generation % 60:02d}Z",
        }

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path).rstrip("/")
        out = {}
        for key in self.objects:
            if key.startswith(path + "/"):
                head = key[len(path) + 1 :].split("/", 1)
                name = f"{path}/{head[0]}"
                out[name] = (
                    self._meta(key) if len(head) == 1 else {"name": name, "type": "directory", "size": 0}
                )
        if not out and path in self.objects:
            out = {path: self._meta(path)}
        if not out:
            raise FileNotFoundError(path)
        return list(out.values()) if detail else sorted(out)

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        if path not in self.objects:
            raise FileNotFoundError(path)
        return self.objects[path][0][start:end]


def test_gs_urls_take_the_same_path_with_generation_stamps(monkeypatch, tmp_path, catalog):
    registry = importlib.import_module("fsspec.registry")._registry  # what register_implementation fills
    monkeypatch.setitem(registry, "gs", FakeGCS)
    monkeypatch.setitem(registry, "gcs", FakeGCS)
    monkeypatch.setattr(FakeGCS, "objects", {})
    twin = photo(77, 64, 48)
    FakeGCS.objects.update(
        {
            "lake/raw/a.png": [png(twin), 1, 1],
            "lake/raw/sub/b.png": [png(twin, compress_level=1), 5, 1],
            "lake/raw/.hidden.png": [b"h", 1, 1],
            "lake/raw/c.png": [png(photo(78, 64, 48)), 9, 1],
        }
    )

    assert remote_stamp(FakeGCS()._meta("lake/raw/a.png")) == "1"
    assert remote_stamp({"ETag": '"abc"', "LastModified": "x"}) == "abc"
    assert current_state("gs://lake/raw/sub/b.png", {}) == (
        len(FakeGCS.objects["lake/raw/sub/b.png"][0]),
        "5",
    )

    def run():  # default scheduler: threads in this process, which sees the stand-in
        dif = dupflow.build("gs://lake/raw", catalog=catalog, show_progress=False)
        with dif:
            return dif, dupflow.search(dif, show_progress=False)

    dif, found = run()
    assert found.result == {"gs://lake/raw/a.png": [["gs://lake/raw/sub/b.png", 0.0]]}  # a is older
    assert dif.stats["dupflow"]["build"]["decoded"] == 3 and dif.stats["total_files"] == 3
    FakeGCS.objects["lake/raw/a.png"][2] += 1  # metadata only: etag changes, generation does not
    dif, _ = run()
    assert dif.stats["dupflow"]["build"]["decoded"] == 0
    FakeGCS.objects["lake/raw/c.png"] = [png(twin, compress_level=3), 10, 1]  # rewritten: new generation
    dif, found = run()
    assert dif.stats["dupflow"]["build"]["decoded"] == 1
    assert found.lower_quality == ["gs://lake/raw/c.png", "gs://lake/raw/sub/b.png"]  # a, oldest, kept

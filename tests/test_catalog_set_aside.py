"""A shard is set aside only on proof (checksum, not a shard, foreign rows), never on a transient read error:
an fsspec filesystem that really fails once stands in for a flaky disk or network."""

from __future__ import annotations

import errno
import glob
import os

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from imagegen import photo, save

import dupflow


class FlakyFileSystem(LocalFileSystem):
    """The local disk, except that each shard's next read fails once with EIO while armed."""

    protocol = "flaky"
    root_marker = "/"
    armed = False
    failed: set[str] = set()

    @classmethod
    def _strip_protocol(cls, path):
        path = path[len("flaky://") :] if isinstance(path, str) and path.startswith("flaky://") else path
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        path = self._strip_protocol(path)
        if FlakyFileSystem.armed and "r" in mode and "/shards/" in path and path not in self.failed:
            FlakyFileSystem.failed.add(path)
            raise OSError(errno.EIO, "Input/output error", path)
        return super()._open(path, mode, **kwargs)


@pytest.fixture
def flaky(tmp_path):
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    FlakyFileSystem.armed, FlakyFileSystem.failed = False, set()
    yield f"flaky://{tmp_path}/catalog"
    FlakyFileSystem.armed = False


def _photos(folder, n):
    for k in range(n):
        save(photo(k % (n // 2), 48, 36), folder / f"p_{k:03d}.png")  # pairs of identical images
    return str(folder)


def _shards(tmp_path):
    return sorted(glob.glob(f"{tmp_path}/catalog/*/shards/*.parquet"))


def _build(folder, catalog):
    return dupflow.build(folder, catalog=catalog, show_progress=False)  # local threads: one process


def test_a_transient_read_error_never_sets_a_shard_aside(tmp_path, flaky):
    folder = _photos(tmp_path / "imgs", 12)
    reference = dupflow.search(_build(folder, flaky), show_progress=False).result
    shards = _shards(tmp_path)
    assert shards and len(reference) == 6
    dif = _build(folder, flaky)
    assert dif.stats["dupflow"]["build"]["decoded"] == 0
    FlakyFileSystem.armed = True  # the search's reads of each shard fail once
    found = dupflow.search(dif, show_progress=False)
    assert FlakyFileSystem.failed  # the failure really happened
    assert found.stats["dupflow"]["search"]["shards_repaired"] >= 1
    assert found.result == reference  # answered from images decoded again
    assert _shards(tmp_path)[: len(shards)] == shards  # and every good shard is still there
    FlakyFileSystem.armed, FlakyFileSystem.failed = True, set()  # a build's trust check fails once too
    again = _build(folder, flaky)
    assert all(os.path.exists(s) for s in shards)
    FlakyFileSystem.armed = False
    assert _build(folder, flaky).stats["dupflow"]["build"]["decoded"] == 0
    assert again.stats["dupflow"]["build"]["decoded"] + again.stats["dupflow"]["build"]["reused"] == 12


def test_proof_still_sets_a_shard_aside(tmp_path, flaky):
    from dupflow.catalog import CatalogRef

    folder = _photos(tmp_path / "imgs", 12)
    dif = _build(folder, flaky)
    ref = CatalogRef(dif.stats["dupflow"]["build"]["catalog"], {})
    damaged, good = _shards(tmp_path)[:2]
    with open(damaged, "r+b") as handle:  # flip bytes inside the tensor pages
        handle.seek(os.path.getsize(damaged) // 2)
        handle.write(b"\xff" * 64)
    FlakyFileSystem.armed = True
    assert not ref.set_aside(os.path.basename(damaged))  # unreadable right now: no proof, kept
    assert os.path.exists(damaged)
    assert ref.set_aside(os.path.basename(damaged))  # read whole: its checksum fails
    assert not os.path.exists(damaged)
    assert not ref.set_aside(os.path.basename(good)) and os.path.exists(good)  # sound: kept

"""HEIC/HEIF: listed as supported only when pillow-heif's opener is registered, and then decoded by every
worker (worker processes included); without pillow-heif, `.heic` is an unsupported file type."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest
from imagegen import photo, save

import dupflow

pillow_heif = pytest.importorskip("pillow_heif")  # in the test extra


def _heic(array, path):
    """A real HEIC file, encoded by pillow-heif (libheif)."""
    pillow_heif.from_bytes(mode="RGB", size=(array.shape[1], array.shape[0]), data=array.tobytes()).save(
        str(path), quality=90
    )


def test_heic_files_are_decoded_on_worker_processes(tmp_path, client, catalog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _heic(photo(1, 64, 48), folder / "a.heic")
    shutil.copy(folder / "a.heic", folder / "a_copy.HEIC")
    _heic(photo(2, 64, 48), folder / "b.heif")
    save(photo(3, 64, 48), folder / "c.png")
    dif = dupflow.build(str(folder), catalog=catalog, scheduler=client, show_progress=False)
    assert dif.stats["invalid_files"]["count"] == 0, dif.stats["invalid_files"]
    assert dif.stats["total_files"] == 4
    found = dupflow.search(dif, show_progress=False)
    pair = sorted([str(folder / "a.heic"), str(folder / "a_copy.HEIC")])
    assert sorted([*found.result, *(m for ms in found.result.values() for m, _ in ms)]) == pair


NO_HEIF = textwrap.dedent("""
    import sys
    sys.modules["pillow_heif"] = None  # as if pillow-heif were not installed
    import dupflow
    options = dict(catalog=sys.argv[2], show_progress=False, processes=1, limit_extensions=sys.argv[3] == "1")
    dif = dupflow.build(sys.argv[1], **options)
    print(dif.stats["invalid_files"]["logs"])
""")


def test_without_pillow_heif_heic_is_an_unsupported_file_type(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _heic(photo(1, 64, 48), folder / "a.heic")
    save(photo(3, 64, 48), folder / "c.png")
    assert pillow_heif.open_heif(folder / "a.heic").size == (64, 48)  # a real HEIC file
    out = subprocess.run(
        [sys.executable, "-c", NO_HEIF, str(folder), str(tmp_path / "cat"), "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip() == repr({str(folder / "a.heic"): "Unsupported file type"})


def test_a_heic_file_unreadable_before_pillow_heif_is_decoded_once_it_is_installed(tmp_path, client):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _heic(photo(1, 64, 48), folder / "a.heic")
    save(photo(3, 64, 48), folder / "c.png")
    catalog = str(tmp_path / "cat")
    before = subprocess.run(  # every extension read, pillow-heif absent: the file is unidentified
        [sys.executable, "-c", NO_HEIF, str(folder), catalog, "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "could not be identified" in before.stdout, before.stderr[-1500:]
    after = dupflow.build(str(folder), catalog=catalog, scheduler=client, show_progress=False)
    assert after.stats["dupflow"]["build"]["decoded"] == 1  # that failure was not taken as final
    assert after.stats["invalid_files"]["count"] == 0

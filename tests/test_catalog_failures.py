"""Which decode failures the catalog remembers: only those that recur for the same bytes under the same
decoder settings (pixel limit, truncated-image tolerance, registered plugins), decided on real files."""

from __future__ import annotations

import errno
import io

import pytest
from imagegen import photo, save
from PIL import Image, ImageFile

import dupflow
from dupflow.decode import decode_image, lasting_failure


def _build(folder, catalog, client):
    return dupflow.build(str(folder), show_progress=False, scheduler=client, catalog=catalog)


def _decoded(dif) -> int:
    return dif.stats["dupflow"]["build"]["decoded"]


@pytest.fixture
def pillow_settings():
    """Restore Pillow's process-wide settings a test changes, as a user of the library would set them."""
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    yield
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _logs(dif) -> dict:
    return dif.stats["invalid_files"]["logs"]


def test_a_refusal_under_a_pixel_limit_is_retried_once_the_limit_is_raised(
    tmp_path, client, catalog, pillow_settings
):
    for k in range(4):
        save(photo(k, 48, 36), tmp_path / "imgs" / f"small_{k}.png")
    save(photo(9, 200, 150), tmp_path / "imgs" / "big.png")  # 30,000 pixels
    big = str(tmp_path / "imgs" / "big.png")
    Image.MAX_IMAGE_PIXELS = 10_000  # set here, honoured by the worker processes too
    first = _build(tmp_path / "imgs", catalog, client)
    assert "decompression bomb" in _logs(first)[big]
    assert _decoded(first) == 5
    assert _decoded(_build(tmp_path / "imgs", catalog, client)) == 0  # same limit: the refusal stands
    Image.MAX_IMAGE_PIXELS = 100_000
    raised = _build(tmp_path / "imgs", catalog, client)
    assert _decoded(raised) == 1 and big not in _logs(raised)  # now decoded
    Image.MAX_IMAGE_PIXELS = 10_000
    again = _build(tmp_path / "imgs", catalog, client)
    assert big in _logs(again)  # a lower limit refuses it again, whatever the catalog holds


def test_truncated_data_is_remembered_until_truncated_images_are_allowed(
    tmp_path, client, catalog, pillow_settings
):
    save(photo(1, 64, 48), tmp_path / "imgs" / "whole.png")
    buffer = io.BytesIO()
    Image.fromarray(photo(2, 64, 48)).save(buffer, "JPEG")
    (tmp_path / "imgs" / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    cut = str(tmp_path / "imgs" / "cut.jpg")
    first = _build(tmp_path / "imgs", catalog, client)
    assert "truncated" in _logs(first)[cut]
    again = _build(tmp_path / "imgs", catalog, client)
    assert _decoded(again) == 0 and cut in _logs(again)  # deterministic: remembered, not retried
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    tolerant = _build(tmp_path / "imgs", catalog, client)
    assert _decoded(tolerant) == 1 and cut not in _logs(tolerant)


def _raised(data: bytes) -> BaseException:
    try:
        decode_image(data, 16)
    except Exception as exc:
        return exc
    raise AssertionError("decoded")


def test_only_failures_that_recur_for_the_same_bytes_are_lasting(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(photo(3, 64, 48)).save(buffer, "PNG")
    assert lasting_failure(_raised(b"not an image at all"))  # unidentified
    assert lasting_failure(_raised(buffer.getvalue()[:200]))  # truncated
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 100
    try:
        assert lasting_failure(_raised(buffer.getvalue()))  # refused under a limit (recorded with it)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    try:
        open(tmp_path / "absent.png", "rb")
    except OSError as exc:  # a read error from the system
        assert not lasting_failure(exc)
    assert not lasting_failure(OSError(errno.EIO, "Input/output error"))
    assert not lasting_failure(MemoryError())
    assert not lasting_failure(RuntimeError("worker lost"))

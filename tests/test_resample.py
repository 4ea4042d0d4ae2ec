"""dupflow.resample: Pillow's BICUBIC resize vectorised, proven pixel for pixel against the installed Pillow,
and decode="exact" taking it for real photos (big ones included) with Pillow's answer."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from imagegen import photo, reference_tensor, save
from PIL import Image

from dupflow import jit, png, resample
from dupflow.decode import decode_image


def _rgbx(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)


def _pillow(rgb: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))


@pytest.mark.parametrize("size", [10, 50, 64])
def test_resize_is_pillows_bicubic_bit_for_bit(size):
    rng = np.random.default_rng(size)
    shapes = [(int(h), int(w)) for h, w in rng.integers(1, 900, (60, 2))]
    shapes += [(size, size), (size, 700), (700, size), (1, 1), (size + 1, size - 1), (900, 40), (2000, 90)]
    for height, width in shapes:
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        if min(height, width) >= 8 and height % 2:  # smooth images too: near-ties round unlike noise
            rgb = photo(height * width, width, height)
        expected = _pillow(rgb, size)
        assert np.array_equal(resample.resize(_rgbx(rgb), size), expected), (height, width, size)
        assert np.array_equal(resample.resize(rgb, size), expected), (height, width, size)  # RGB: 3 lanes


def test_the_pass_order_is_pillows():
    """Tall images shrink vertically first in Pillow 13; the other order gives other pixels, so a wrong
    rule here would fail (the shapes are chosen so the two orders disagree)."""
    checked = 0
    for height, width in [(900, 60), (400, 60), (3000, 700), (700, 3000), (120, 110)]:
        rgb = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
        img = Image.fromarray(rgb)
        h_first = np.asarray(img.resize((50, height), Image.BICUBIC).resize((50, 50), Image.BICUBIC))
        v_first = np.asarray(img.resize((width, 50), Image.BICUBIC).resize((50, 50), Image.BICUBIC))
        assert not np.array_equal(h_first, v_first)
        expected = v_first if resample._vertical_first(height, width, 50, 50) else h_first
        assert np.array_equal(_pillow(rgb, 50), expected)
        assert np.array_equal(resample.resize(_rgbx(rgb), 50), expected)
        assert np.array_equal(resample.resize(rgb, 50), expected)
        checked += resample._vertical_first(height, width, 50, 50)
    assert checked == (3 if int(Image.__version__.split(".")[0]) >= 13 else 0)


def test_the_probe_refuses_a_resize_that_is_not_pillows(monkeypatch):
    assert resample.matches_pillow()
    monkeypatch.setattr(resample, "_vertical_first", lambda *shape: False)
    assert not resample.matches_pillow.__wrapped__()  # the tall probe shapes catch the wrong order
    monkeypatch.setattr(resample, "PRECISION_BITS", 21)
    resample.coefficients.cache_clear()
    try:
        assert not resample.matches_pillow.__wrapped__()
    finally:
        monkeypatch.undo()
        resample.coefficients.cache_clear()
    assert resample.matches_pillow.__wrapped__()


@pytest.mark.parametrize(
    "name,shape,kwargs",
    [
        ("photo.jpg", (2448, 3264), {"quality": 90}),  # 32 MB as RGBX: over Pillow's 16 MiB block
        ("tall.jpg", (1500, 90), {"quality": 85, "subsampling": 0}),
        ("shot.png", (1080, 1920), {}),
        ("small.jpg", (30, 40), {}),
    ],
)
def test_exact_decode_takes_the_vectorised_path_with_pillows_pixels(tmp_path, name, shape, kwargs):
    height, width = shape
    path = save(photo(height + width, width, height), tmp_path / name, **kwargs)
    data = open(path, "rb").read()
    tensor, w, h = decode_image(data, 50, "exact")
    assert (w, h) == (width, height)
    assert np.array_equal(tensor, reference_tensor(path, 50))
    img = Image.open(io.BytesIO(data))  # the image decode_image loads is exported in place, not copied
    img.load()
    assert resample.rgbx_view(img) is not None


def test_a_gray_or_palette_image_resizes_after_conversion(tmp_path):
    gray = save(photo(3, 300, 200)[..., 0], tmp_path / "gray.png")
    palette = tmp_path / "palette.png"
    Image.fromarray(photo(4, 300, 200)).convert("P", palette=Image.Palette.ADAPTIVE).save(palette)
    for path in (gray, str(palette)):
        tensor, _, _ = decode_image(open(path, "rb").read(), 32, "exact")
        assert np.array_equal(tensor, reference_tensor(path, 32))


def test_without_numba_pillow_decodes_the_same(tmp_path, monkeypatch):
    """Where numba cannot be imported, nothing is compiled, the probe says no, and every decode goes
    through Pillow: the same thumbnails, JPEG and PNG."""
    photo_path = save(photo(5, 640, 480), tmp_path / "p.jpg", quality=90)
    shot_path = save(photo(6, 300, 200), tmp_path / "s.png")
    with_numba = [decode_image(open(p, "rb").read(), 50, "exact")[0] for p in (photo_path, shot_path)]
    monkeypatch.setitem(sys.modules, "numba", None)
    jit.compiled.cache_clear()
    resample.matches_pillow.cache_clear()
    try:
        assert jit.compiled(resample._horizontal) is None and not resample.matches_pillow()
        assert png.decode_rgb8(open(shot_path, "rb").read()) is None
        for path, tensor in zip((photo_path, shot_path), with_numba):
            assert np.array_equal(decode_image(open(path, "rb").read(), 50, "exact")[0], tensor)
            assert np.array_equal(tensor, reference_tensor(path, 50))
    finally:
        monkeypatch.undo()
        jit.compiled.cache_clear()
        resample.matches_pillow.cache_clear()
    assert resample.matches_pillow()


def test_an_image_in_several_blocks_is_not_read_in_place(monkeypatch):
    """Pillow splits an image over its block size into blocks Arrow cannot export: no view, Pillow's path."""
    monkeypatch.setattr(resample, "SINGLE_BLOCK_BYTES", 0)
    size = Image.core.get_block_size()
    Image.core.set_block_size(1 << 20)
    try:
        img = Image.fromarray(photo(7, 1200, 900))  # 4.3 MB as RGBX: five blocks
        assert resample.rgbx_view(img) is None
        jpeg = io.BytesIO()
        img.save(jpeg, format="JPEG")
        decoded = Image.open(io.BytesIO(jpeg.getvalue()))
        want = np.asarray(decoded.resize((50, 50), Image.BICUBIC))
        assert np.array_equal(decode_image(jpeg.getvalue(), 50, "exact")[0], want)
    finally:
        Image.core.set_block_size(size)

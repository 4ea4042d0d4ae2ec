"""PNG decoding with libdeflate's inflate: Pillow's own image, PNG loads 1.5-2x faster.

Pillow's PNG decoder inflates through the process's zlib, which is often the system's stock zlib (Pillow's
manylinux wheel loads the system libz): measured here, inflating is most of a large PNG's decode. This
module inflates the IDAT stream once with libdeflate (the `deflate` package, which releases the GIL) and
has Pillow decode the file with one change: its IDAT holds the same filtered scanlines in stored
(uncompressed) deflate blocks, read in place from the inflated buffer, which Pillow's decoder copies instead
of inflating. Pillow still reads every header chunk, unfilters, de-interlaces and unpacks, so modes,
palettes, transparency and 16-bit samples are its own and the pixels are bit-identical for every variant
(tests/test_decode_formats.py proves it). Chunks after the image data (late text) are not read.

8-bit RGB and RGBA images (most screenshots and wallpapers) skip Pillow's decoder altogether: `decode_rgb8`
unfilters the inflated scanlines itself (numba), in place, at half the CPU of Pillow's unfilter and unpack;
decode="exact" resizes them with `resample.resize`, decode="fast" hands them to Pillow as an image
(`png_image`). PNG is lossless, so any correct unfilter gives Pillow's pixels; tests/test_decode_formats.py
proves it for every filter type.

Anything this path does not take on (not a well-formed PNG, animation, IDAT chunks out of order, a stream
that does not inflate to exactly the expected size) returns None and the caller decodes with Pillow as
before, which also keeps Pillow's own messages and behaviour for damaged files.
"""

from __future__ import annotations

import bisect
import io
import itertools
import struct

import numpy as np
from PIL import Image

from .jit import compiled

__all__ = ["available", "decode_png", "decode_rgb8", "png_image"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
STORED_BLOCK = 65535  # the most one stored deflate block holds
MOST_INFLATION = 1032  # deflate never expands a stream more than this: a header claiming more is not real
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))

try:
    import deflate
except ImportError:  # pragma: no cover - a runtime dependency; without it every PNG goes to Pillow
    deflate = None


def available() -> bool:
    """True if the libdeflate path can run (the `deflate` package is installed)."""
    return deflate is not None


def decode_png(data: bytes) -> Image.Image | None:
    """The loaded image Pillow gives for the PNG `data` (same mode, size, palette, transparency and pixels),
    or None when this path does not take the file (the caller then decodes it with Pillow)."""
    inflated = _inflate(data)
    if inflated is None:
        return None
    header, raw = inflated
    try:
        image = Image.open(_stored_png(header, raw))
        image.load()
    except Exception:  # e.g. an unknown filter type: Pillow's path on the original bytes says what
        return None
    return image


def decode_rgb8(data: bytes) -> np.ndarray | None:
    """An 8-bit RGB or RGBA PNG's samples as (H, W, 3 or 4) uint8; None for any other PNG, or where this
    path does not take the file (the caller then decodes it with Pillow)."""
    # IHDR right after the signature (as _parse requires): depth 8, colour RGB or RGBA, not interlaced;
    # any other PNG is declined before parsing or inflating it, so the caller's path does that once
    if data[12:16] != b"IHDR" or data[24:26] not in (b"\x08\x02", b"\x08\x06") or data[28:29] != b"\x00":
        return None
    unfilter = compiled(_unfilter)
    parsed = _parse(data) if unfilter is not None else None
    inflated = _inflate(data, parsed) if parsed is not None else None
    if inflated is None:
        return None
    _, (width, height, bits, _), _ = parsed
    samples = np.empty((height, width * (bits // 8)), np.uint8)
    if not unfilter(np.frombuffer(inflated[1], np.uint8), bits // 8, samples):
        return None  # an unknown filter type: Pillow's path on the original bytes says what
    return samples.reshape(height, width, bits // 8)


def png_image(samples: np.ndarray) -> Image.Image:
    """The Pillow image of `decode_rgb8`'s samples: RGB (copied in) or RGBA (read in place)."""
    height, width, channels = samples.shape
    mode = "RGB" if channels == 3 else "RGBA"
    return Image.frombuffer(mode, (width, height), samples, "raw", mode, 0, 1)


def _inflate(data: bytes, parsed: tuple | None = None) -> tuple[bytes, bytes] | None:
    """(the bytes before the first IDAT, the filtered scanlines inflated by libdeflate), or None."""
    if deflate is None:
        return None
    parsed = parsed or _parse(data)
    if parsed is None:
        return None
    header, (width, height, bits, interlace), idat = parsed
    expected = _filtered_size(width, height, bits, interlace)
    if expected > MOST_INFLATION * len(idat) + 1024:
        return None  # truncated or forged: no buffer that size for a stream that cannot fill it
    try:
        raw = deflate.zlib_decompress(idat, expected)
    except (deflate.DeflateError, MemoryError):  # damaged or longer than needed: Pillow decides what it is
        return None
    return (header, raw) if len(raw) == expected else None


def _unfilter(raw: np.ndarray, bpp: int, out: np.ndarray) -> bool:  # pragma: no cover - compiled
    """PNG's five scanline filters undone, row after row into `out` (H, row bytes); False on an unknown
    filter type. Compiled by numba (`jit.compiled`)."""
    height, stride = out.shape
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        current = out[y]
        previous = out[y - 1] if y else np.zeros(stride, np.uint8)
        if kind == 0:  # None
            current[:] = line
        elif kind == 2:  # Up (most rows of screenshots): vectorises
            for i in range(stride):
                current[i] = line[i] + previous[i]
        elif kind == 1:  # Sub
            current[:bpp] = line[:bpp]
            for i in range(bpp, stride):
                current[i] = line[i] + current[i - bpp]
        elif kind == 3:  # Average
            for i in range(bpp):
                current[i] = line[i] + (previous[i] >> 1)
            for i in range(bpp, stride):
                current[i] = line[i] + ((np.int16(current[i - bpp]) + previous[i]) >> 1)
        elif kind == 4:  # Paeth: the neighbour nearest to left + up - upper left, ties in that order
            for i in range(bpp):
                current[i] = line[i] + previous[i]
            for i in range(bpp, stride):
                left, up = np.int16(current[i - bpp]), np.int16(previous[i])
                corner = np.int16(previous[i - bpp])
                to_left, to_up = abs(up - corner), abs(left - corner)
                to_corner = abs(left + up - 2 * corner)
                if to_left <= to_up and to_left <= to_corner:
                    current[i] = line[i] + left
                elif to_up <= to_corner:
                    current[i] = line[i] + up
                else:
                    current[i] = line[i] + corner
        else:
            return False
    return True


def _parse(data: bytes) -> tuple[bytes, tuple[int, int, int, int], bytes] | None:
    """(the bytes before the first IDAT, (width, height, bits per pixel, interlace), the IDAT payloads
    joined), or None when this path does not take the file."""
    if not data.startswith(SIGNATURE):
        return None
    pos, end = len(SIGNATURE), len(data)
    ihdr = None
    idat: list[bytes] = []
    first = 0
    previous = b""
    while pos + 12 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        if body + length + 4 > end:
            return None
        if kind == b"IHDR":
            if length != 13 or pos != len(SIGNATURE):
                return None
            ihdr = struct.unpack_from(">IIBBBBB", data, body)
        elif kind == b"IDAT":
            if ihdr is None or (idat and previous != b"IDAT"):
                return None  # IDAT chunks must be consecutive: Pillow reads only the first run
            if not idat:
                first = pos
            idat.append(data[body : body + length])
        elif kind == b"IEND":
            break
        elif kind in (b"acTL", b"fcTL", b"fdAT"):
            return None  # animated: Pillow's frame handling decides
        previous = kind
        pos = body + length + 4
    if ihdr is None or not idat:
        return None
    width, height, depth, colour, compression, filtering, interlace = ihdr
    if colour not in CHANNELS or compression or filtering or interlace > 1 or width == 0 or height == 0:
        return None
    if depth not in (1, 2, 4, 8, 16) or (colour in (2, 4, 6) and depth < 8) or (colour == 3 and depth > 8):
        return None
    return data[:first], (width, height, depth * CHANNELS[colour], interlace), b"".join(idat)


def _filtered_size(width: int, height: int, bits_per_pixel: int, interlace: int) -> int:
    """Bytes of filtered scanlines (one filter byte per row) an image of this shape inflates to."""
    if not interlace:
        return height * (1 + (width * bits_per_pixel + 7) // 8)
    total = 0
    for x0, y0, dx, dy in ADAM7:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w and h:
            total += h * (1 + (w * bits_per_pixel + 7) // 8)
    return total


def _stored_png(header: bytes, raw: bytes) -> _Segments:
    """The PNG with `header` (signature and every chunk before the image data) whose one IDAT holds `raw`
    in stored deflate blocks, as a file that reads from `raw` in place: decoding it costs no inflating, and
    no second copy of a large image is made (fresh memory costs page faults, measured ~10 ms a 4K PNG)."""
    view = memoryview(raw)
    pieces: list[bytes | memoryview] = [b"\x78\x01"]  # zlib header: deflate, 32 KiB window, no dictionary
    for start in range(0, len(raw), STORED_BLOCK):
        piece = view[start : start + STORED_BLOCK]
        final = start + STORED_BLOCK >= len(raw)
        pieces += [struct.pack("<BHH", final, len(piece), len(piece) ^ 0xFFFF), piece]
    pieces.append(struct.pack(">I", deflate.adler32(raw)))
    crc = deflate.crc32(b"IDAT")
    for piece in pieces:
        crc = deflate.crc32(piece, crc)
    length = sum(len(piece) for piece in pieces)
    iend = b"\0\0\0\0IEND" + struct.pack(">I", deflate.crc32(b"IEND"))
    return _Segments([header, struct.pack(">I", length) + b"IDAT", *pieces, struct.pack(">I", crc) + iend])


class _Segments(io.RawIOBase):
    """A read-only, seekable file over a list of byte segments, read without joining them first."""

    def __init__(self, segments: list[bytes | memoryview]) -> None:
        super().__init__()
        self._segments = segments
        self._starts = list(itertools.accumulate((len(s) for s in segments), initial=0))
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._starts[-1] if size is None or size < 0 else min(self._pos + size, self._starts[-1])
        parts = []
        index = bisect.bisect_right(self._starts, self._pos) - 1
        while self._pos < end:
            segment, first = self._segments[index], self._starts[index]
            take = segment[self._pos - first : end - first]
            parts.append(take)
            self._pos += len(take)
            index += 1
        return b"".join(parts)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

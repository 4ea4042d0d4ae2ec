"""One image's bytes -> the px x px x 3 uint8 tensor and its original size (Pillow), errors as messages.

A decode depends on the bytes and on Pillow's process-wide settings (pixel limit, truncated-image
tolerance, registered format plugins). `DecoderSettings` captures those where a build starts and applies
them on every worker, and a failure is worth remembering only when it would recur for the same bytes
under the same settings (`lasting_failure`).
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from . import resample
from .png import decode_png, decode_rgb8, png_image

__all__ = ["DecoderSettings", "decode_image", "error_message", "lasting_failure", "register_heif"]

UNIDENTIFIED = "UnidentifiedImageError: file could not be identified as image."

_STRICT_HOST = threading.Lock()

# decode="fast": Pillow's resize first box-averages by a whole factor down to at least this many times px,
# then resamples BICUBIC (measured on 10,000 real files: per-image MSE to exact median 0.26 on screenshots,
# 0.11 on photos; a gap of 2 gave 10 on screenshots' sharp text)
FAST_REDUCING_GAP = 6.0


def decode_image(data: bytes, px_size: int, mode: str = "exact") -> tuple[np.ndarray, int, int]:
    """Decode like difPy (first frame, no EXIF transpose, RGB, BICUBIC to px x px); raise on failure.

    PNGs are inflated by libdeflate (`png.decode_png`), pixels identical to Pillow's; the exact resize is
    Pillow's arithmetic vectorised (`resample.resize`, proven against Pillow per process). `mode="fast"` lets
    JPEG decode at a reduced DCT scale first and large images be box-averaged before the BICUBIC resize
    (much less work, tensor close to exact: the README states the agreement).
    Pillow's warnings (palette transparency, odd EXIF, decompression bombs, which are refused here
    anyway) are harmless, even in a host that turns warnings into errors: such a decode is done again
    with them ignored. No filter is installed for good (importing dupflow leaves a host's alone), and
    the retry holds a lock because warnings.catch_warnings() is process-wide.
    """
    try:
        return _decode(data, px_size, mode)
    except Warning:
        with _STRICT_HOST, warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\..*)?$")
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            return _decode(data, px_size, mode)


def _decode(data: bytes, px_size: int, mode: str) -> tuple[np.ndarray, int, int]:
    img = Image.open(io.BytesIO(data))  # refuses images over twice Pillow's pixel limit
    width, height = img.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:  # Pillow only warns from 1x to 2x; difPy refuses those too
        raise Image.DecompressionBombError(
            f"Image size ({width * height} pixels) exceeds limit of {limit} "
            "pixels, could be decompression bomb DOS attack."
        )
    box = gap = None
    exact = mode == "exact" and resample.matches_pillow()  # Pillow's resize, vectorised, where proven
    if img.format == "PNG":
        samples = decode_rgb8(data)  # 8-bit RGB(A), unfiltered without Pillow (None: any other PNG)
        if samples is not None and exact:
            return resample.resize(samples, px_size), width, height
        # else Pillow's own image, inflated by libdeflate (None: Pillow's path)
        inflated = decode_png(data) if samples is None else png_image(samples)
        img = img if inflated is None else inflated
    if mode == "fast":
        gap = FAST_REDUCING_GAP
        if img.format == "JPEG":
            drafted = img.draft("RGB", (2 * px_size, 2 * px_size))
            box = drafted[1] if drafted else None  # the whole image in the draft's pixels, odd sizes too
    if exact:
        resample.single_block_images()  # so that rgbx_view can read the loaded pixels in place
    if img.getbands() != ("R", "G", "B"):
        img = img.convert("RGB")
    img.load()
    if mode == "exact":
        width, height = img.size
        pixels = resample.rgbx_view(img) if exact else None
        if pixels is not None:
            return resample.resize(pixels, px_size), width, height
    img = img.resize((px_size, px_size), resample=Image.BICUBIC, box=box, reducing_gap=gap)
    tensor = np.asarray(img, dtype=np.uint8)
    if tensor.shape != (px_size, px_size, 3):
        raise ValueError(f"decoded to an unexpected shape {tensor.shape}")
    return tensor, width, height


def error_message(exc: BaseException) -> str:
    """The reason recorded in invalid_files: difPy's text for unidentified images, else the error's own."""
    if isinstance(exc, UnidentifiedImageError):
        return UNIDENTIFIED
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None:
        text = exc.strerror
    return text or type(exc).__name__


def lasting_failure(exc: BaseException) -> bool:
    """True if decoding these bytes under the same settings would fail the same way again.

    Unreadable, truncated or malformed data and refusals under a pixel limit are (their catalog rows carry
    the settings); running out of memory, system errors and anything unforeseen are not.
    """
    if isinstance(exc, (UnidentifiedImageError, Image.DecompressionBombError)):
        return True
    if isinstance(exc, OSError):  # Pillow's decoders raise OSError without errno on bad data
        return exc.errno is None
    return isinstance(exc, (SyntaxError, ValueError, EOFError, struct.error, IndexError))


def register_heif() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with Pillow, if installed; True if it is registered."""
    try:
        import pillow_heif
    except ImportError:
        return False
    if ".heic" not in Image.registered_extensions():
        pillow_heif.register_heif_opener()
    return Image.registered_extensions().get(".heic") is not None


@dataclass(frozen=True)
class DecoderSettings:
    """Pillow's settings that decide what a decode gives: captured in the process that starts a build,
    applied on each worker (which may be another process or machine) before it decodes."""

    max_pixels: int | None
    load_truncated: bool
    heif: bool

    @classmethod
    def current(cls) -> DecoderSettings:
        """This process's settings (registering pillow-heif's opener where installed)."""
        return cls(Image.MAX_IMAGE_PIXELS, bool(ImageFile.LOAD_TRUNCATED_IMAGES), register_heif())

    def apply(self) -> None:
        """Make this process decode under these settings."""
        Image.MAX_IMAGE_PIXELS = self.max_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = self.load_truncated
        if self.heif:
            register_heif()

    @property
    def key(self) -> str:
        """What a cached failure is keyed by: the settings plus the formats this process can open."""
        Image.init()
        formats = hashlib.blake2b(",".join(sorted(Image.OPEN)).encode(), digest_size=4).hexdigest()
        return f"pixels={self.max_pixels};truncated={int(self.load_truncated)};formats={formats}"

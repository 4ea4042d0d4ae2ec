"""One image's bytes -> the px x px x 3 uint8 tensor and its original size (Pillow), errors as messages."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

UNIDENTIFIED = "UnidentifiedImageError: file could not be identified as image."

# Pillow's warnings (palette transparency, odd EXIF, decompression bombs, which decode_image refuses
# itself) are harmless here, even in a host that turns warnings into errors. One filter at import,
# because warnings.catch_warnings() is not thread-safe and decoding runs in threads.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\..*)?$")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def decode_image(data: bytes, px_size: int, mode: str = "exact") -> tuple[np.ndarray, int, int]:
    """Decode like difPy (first frame, no EXIF transpose, RGB, BICUBIC to px x px); raise on failure.

    `mode="fast"` lets JPEG decode at a reduced DCT scale first (much less work, tensor close to exact).
    """
    img = Image.open(io.BytesIO(data))  # refuses images over twice Pillow's pixel limit
    width, height = img.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:  # Pillow only warns from 1x to 2x; difPy refuses those too
        raise Image.DecompressionBombError(
            f"Image size ({width * height} pixels) exceeds limit of {limit} "
            "pixels, could be decompression bomb DOS attack."
        )
    if mode == "fast" and img.format == "JPEG":
        img.draft("RGB", (2 * px_size, 2 * px_size))
    if img.getbands() != ("R", "G", "B"):
        img = img.convert("RGB")
    img.load()
    if mode == "exact":
        width, height = img.size
    img = img.resize((px_size, px_size), resample=Image.BICUBIC)
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

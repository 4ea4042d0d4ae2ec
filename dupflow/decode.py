"""One image's bytes -> the px x px x 3 uint8 tensor and its original size (Pillow), errors as messages."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

UNIDENTIFIED = "UnidentifiedImageError: file could not be identified as image."


def decode_image(data: bytes, px_size: int, mode: str = "exact") -> tuple[np.ndarray, int, int]:
    """Decode like difPy (first frame, no EXIF transpose, RGB, BICUBIC to px x px); raise on failure.

    `mode="fast"` lets JPEG decode at a reduced DCT scale first (much less work, tensor close to exact).
    """
    with warnings.catch_warnings():
        # Other Pillow warnings are harmless, even where the process turns warnings into errors (-W error);
        # Pillow only warns between 1x and 2x its pixel limit, and difPy refuses those too.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        if mode == "fast" and img.format == "JPEG":
            img.draft("RGB", (2 * px_size, 2 * px_size))
        if img.getbands() != ("R", "G", "B"):
            img = img.convert("RGB")
        img.load()
        if mode == "exact":
            width, height = img.size
        img = img.resize((px_size, px_size), resample=Image.BICUBIC,
                         reducing_gap=3.0 if mode == "fast" else None)
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

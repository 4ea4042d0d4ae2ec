"""Deterministic photo-like test images: smooth gradients, texture, edges (no external data)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def photo(seed: int, width: int = 96, height: int = 72) -> np.ndarray:
    """An RGB uint8 image (height x width x 3) with natural-image structure, different for each seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        fx, fy = rng.uniform(0.5, 3.0, 2)
        phase = rng.uniform(0, 2 * np.pi)
        img[..., c] = (
            rng.uniform(40, 120)
            + rng.uniform(20, 60) * x / width
            + rng.uniform(20, 60) * np.sin(2 * np.pi * (fx * x / width + fy * y / height) + phase)
        )
    for _ in range(rng.integers(3, 7)):  # a few objects with hard edges
        x0, y0 = rng.integers(0, width - 4), rng.integers(0, height - 4)
        x1, y1 = rng.integers(x0 + 2, width + 1), rng.integers(y0 + 2, height + 1)
        img[y0:y1, x0:x1] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)  # sensor-like texture
    return np.clip(img, 0, 255).astype(np.uint8)


def save(array: np.ndarray, path: str | os.PathLike, **kwargs) -> str:
    """Write an array as an image file (format from the extension), creating folders."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def reference_tensor(path: str, px: int) -> np.ndarray:
    """The tensor difPy's recipe gives: open, RGB if needed, BICUBIC resize to px x px."""
    img = Image.open(path)
    if img.getbands() != ("R", "G", "B"):
        img = img.convert("RGB")
    return np.asarray(img.resize((px, px), resample=Image.BICUBIC), dtype=np.uint8)


def make_photo_set(root: str | os.PathLike, n_unrelated: int = 6, seed: int = 0) -> dict[str, list[str]]:
    """A folder of photos with planted copies: byte copies, re-encodes, rotations, resizes, sub-folders.

    Returns {kind: [relative paths]} so tests can reason about what was planted.
    """
    root = os.fspath(root)
    kinds: dict[str, list[str]] = {
        "original": [],
        "copy": [],
        "png_resave": [],
        "jpeg_resave": [],
        "rot90": [],
        "rot180": [],
        "rot270": [],
        "resized": [],
        "unrelated": [],
    }
    for k in range(n_unrelated):
        w, h = [(96, 72), (80, 80), (120, 64)][k % 3]
        base = photo(seed * 1000 + k, w, h)
        name = f"img_{k:02d}"
        kinds["original"].append(save(base, f"{root}/{name}.png"))
        if k % 2 == 0:
            kinds["copy"].append(save(base, f"{root}/sub/{name}_copy.png"))
            kinds["jpeg_resave"].append(save(base, f"{root}/{name}_q90.jpg", quality=90))
        if k % 3 == 0:
            kinds["rot90"].append(save(np.rot90(base, 1).copy(), f"{root}/rot/{name}_r90.png"))
            kinds["rot180"].append(save(np.rot90(base, 2).copy(), f"{root}/rot/{name}_r180.png"))
            kinds["rot270"].append(save(np.rot90(base, 3).copy(), f"{root}/rot/{name}_r270.png"))
        if k % 3 == 1:
            kinds["resized"].append(
                save(
                    np.asarray(Image.fromarray(base).resize((w // 2, h // 2), Image.LANCZOS)),
                    f"{root}/small/{name}_half.png",
                )
            )
            kinds["png_resave"].append(save(base, f"{root}/sub/deeper/{name}_again.png", compress_level=1))
    for k in range(3):
        kinds["unrelated"].append(
            save(photo(seed * 1000 + 500 + k, 64, 48), f"{root}/other/u_{k}.jpg", quality=85)
        )
    return {kind: sorted(os.path.relpath(p, root) for p in paths) for kind, paths in kinds.items()}

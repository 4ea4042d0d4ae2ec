"""Deterministic photo-like benchmark datasets with planted duplicates and near-duplicates.

    python benchmarks/generate.py OUT_DIR -n 2000 --seed 0

Writes exactly N image files under OUT_DIR:

* originals in ``photos/roll_NNN/IMG_NNNNNN.jpg|png`` - synthetic "photos" with natural-image statistics
  (smooth colour gradients, mid-frequency texture, sensor noise, hard-edged objects, a tone curve that spreads
  mean brightness over the whole range), sizes weighted toward small and medium (see SIZES), about 10% PNG and
  the rest JPEG at quality 85..92;
* planted copies (about 12% of N by default) in ``copies/<kind>/``: byte copies, JPEG re-encodes at another
  quality, PNG re-saves, 50%/75% resizes, 90/180/270 degree rotations, 1-3% border crops and brightness shifts
  of +2..+8 (see KINDS). Copies are made from the decoded original, so JPEG generation loss is real.

``OUT_DIR/ground_truth.json`` is a sorted list of ``{"a": original, "b": copy, "kind": kind, "param": ...}``
(paths relative to OUT_DIR, '/'-separated); ``OUT_DIR/dataset.json`` describes the dataset (parameters,
counts per kind and size). Every file is a pure function of (N, seed, --dup-fraction, --small, --mix,
GENERATOR_VERSION) under the same Pillow/zlib/libjpeg: the plan is drawn in the parent process, each image from its own
``numpy.random.default_rng([seed, index])``, so the number of processes does not change a byte.

``--mix real`` draws a user's folder instead (``plan_real``, cache folder N_seed_real): about 64% JPEG photos
(landscape and portrait, 640x480 to 4000x3000, mostly 1-2 MP; REAL_PHOTO_SIZES), PNG screenshots (flat UI panels,
title bars, buttons and text-like stripes, 1280x800 to 2560x1440, zlib level 6), flat-colour graphics and icons
(16 to 256 px; RGB, RGBA with a transparent background, palette and palette + transparency, level 6) and PNG
wallpapers (smooth gradients + noise, 1366x768 to 3840x2160, level 1); planted copies by the original's format
(REAL_KINDS): byte copies, JPEG re-encodes, PNG re-saves at another zlib level (palette and transparency kept),
``to_png`` / ``to_jpeg`` conversions, 50%/75% resizes and quarter turns.

``--mix thumb`` draws thumbnail-sized originals (THUMB_SIZES: 24x32 to 64x48, about 10% PNG) for the
1,000,000-image series (cache folder N_seed_thumb): ``render_thumbs`` synthesises THUMB_CHUNK originals at a time
in float32 numpy (gradient, anti-aliased shapes, texture, noise, a tone curve per image), so a million files
take minutes, not hours; planted copies (THUMB_KINDS) are byte copies, PNG re-saves (MSE 0), brightness
shifts of +1/+2 (PNG), JPEG re-encodes at 85/90/95 (4:4:4; they straddle MSE 5 at px 50), quarter turns and
150%/200% enlargements (MSE about 1-2), 75% reductions and 1-3% crops (farther). Pixels depend on (seed, chunk).

``--small`` draws originals from the four smallest sizes only (SMALL_SIZES: 320x240, 240x320, 480x360, 360x480,
same relative weights), about 4x cheaper to render, for large-N series whose catalog-built timings do not depend
on the original size (thumbnails are 50x50); dataset.json then has ``"sizes": "small"``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from multiprocessing import Pool
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = 1
DUP_FRACTION = 0.12  # default share of the N files that are planted copies

# (width, height, weight in percent): mostly small/medium, a few large, 4000x3000 about 0.2%.
SIZES: list[tuple[int, int, float]] = [
    (320, 240, 14),
    (240, 320, 4),
    (480, 360, 14),
    (360, 480, 5),
    (640, 480, 18),
    (480, 640, 6),
    (800, 600, 12),
    (600, 800, 4),
    (1024, 768, 8),
    (768, 1024, 3),
    (1280, 960, 5),
    (960, 1280, 2),
    (640, 640, 3),
    (1280, 720, 1.3),
    (2048, 1536, 0.5),
    (4000, 3000, 0.2),
]
SMALL_SIZES: list[tuple[int, int, float]] = [
    s for s in SIZES if s[:2] in {(320, 240), (240, 320), (480, 360), (360, 480)}
]

# planted kind -> weight in percent of the planted copies
KINDS: dict[str, float] = {
    "byte_copy": 14,
    "jpeg_requality": 14,
    "png_resave": 8,
    "resize_50": 7,
    "resize_75": 7,
    "rot90": 7,
    "rot180": 7,
    "rot270": 7,
    "crop": 12,
    "brightness": 17,
}

PNG_FRACTION = 0.10
JPEG_QUALITIES = (85, 86, 87, 88, 89, 90, 91, 92)
REQUALITIES = (60, 70, 75, 80, 95)
ROLL_SIZE = 500  # originals per photos/roll_NNN folder

# --mix real: a user's folder (photos, screenshots, graphics and icons, wallpapers), about 64% JPEG / 36% PNG.
# category -> share of the originals
REAL_CATEGORIES: dict[str, float] = {"photo": 64, "screenshot": 15, "graphic": 13, "wallpaper": 8}
# (width, height, weight): camera and phone photos, landscape and portrait, up to 4000 px, mostly 1-2 MP
REAL_PHOTO_SIZES: list[tuple[int, int, float]] = [
    (640, 480, 9),
    (480, 640, 4),
    (800, 600, 10),
    (600, 800, 4),
    (1024, 768, 12),
    (768, 1024, 5),
    (1280, 960, 10),
    (960, 1280, 5),
    (1600, 1200, 8),
    (1200, 1600, 4),
    (1920, 1080, 6),
    (1080, 1920, 5),
    (2048, 1536, 5),
    (1536, 2048, 2),
    (2592, 1944, 3),
    (1944, 2592, 1.5),
    (3264, 2448, 2),
    (2448, 3264, 1),
    (4000, 3000, 1.5),
    (3000, 4000, 0.8),
]
REAL_SCREENSHOT_SIZES: list[tuple[int, int, float]] = [
    (1280, 800, 15),
    (1366, 768, 15),
    (1440, 900, 15),
    (1920, 1080, 30),
    (1920, 1200, 10),
    (2560, 1440, 15),
]
REAL_GRAPHIC_SIZES: list[tuple[int, int, float]] = [
    (16, 16, 8),
    (24, 24, 6),
    (32, 32, 12),
    (48, 48, 10),
    (64, 64, 12),
    (96, 96, 6),
    (128, 128, 12),
    (192, 192, 5),
    (256, 256, 12),
    (200, 120, 5),
    (256, 128, 6),
    (120, 200, 3),
    (180, 180, 3),
]
REAL_WALLPAPER_SIZES: list[tuple[int, int, float]] = [
    (1920, 1080, 40),
    (1920, 1200, 12),
    (2560, 1440, 20),
    (2560, 1600, 8),
    (3840, 2160, 15),
    (1366, 768, 5),
]
# a graphic's PNG mode -> share: plain RGB, RGBA with a transparent background, palette, palette + transparency
REAL_GRAPHIC_MODES: dict[str, float] = {"RGB": 35, "RGBA": 30, "P": 20, "PT": 15}
# planted kind -> weight, by the original's format (to_png / to_jpeg: a JPEG<->PNG conversion)
REAL_KINDS: dict[str, dict[str, float]] = {
    "JPEG": {
        "byte_copy": 18,
        "jpeg_requality": 18,
        "to_png": 10,
        "resize_50": 10,
        "resize_75": 10,
        "rot90": 9,
        "rot180": 6,
        "rot270": 9,
    },
    "PNG": {
        "byte_copy": 18,
        "png_resave": 14,
        "to_jpeg": 18,
        "resize_50": 10,
        "resize_75": 10,
        "rot90": 9,
        "rot180": 6,
        "rot270": 9,
    },
}
REAL_FOLDERS = {
    "photo": ("photos", "IMG_"),
    "screenshot": ("screenshots", "Screenshot_"),
    "graphic": ("graphics", "icon_"),
    "wallpaper": ("wallpapers", "wallpaper_"),
}
# --mix thumb: a million files in minutes. Thumbnail-sized photo-like originals (vectorised numpy synthesis,
# THUMB_CHUNK consecutive originals at a time), about 10% PNG like the photo mix, planted copies kept near.
THUMB_SIZES: list[tuple[int, int, float]] = [
    (32, 24, 14),
    (24, 32, 5),
    (40, 30, 12),
    (30, 40, 4),
    (48, 36, 18),
    (36, 48, 6),
    (56, 42, 10),
    (42, 56, 4),
    (64, 48, 14),
    (48, 64, 5),
    (48, 48, 4),
    (64, 36, 4),
]
# kind -> weight. At thumbnail size JPEG's 4:2:0 chroma and 8x8 blocks dominate, so derived JPEG copies are
# written 4:4:4 at quality 95 (jpeg_requality: THUMB_REQUALITIES, which straddle MSE 5 at px 50); brightness
# copies are +1..+2 on every channel as PNG (MSE <= 4); png_resave the original's pixels in a PNG (MSE 0);
# resize_150/200 enlarged copies (MSE about 1), resize_75 and crop farther ones (median about 6 and 100).
THUMB_KINDS: dict[str, float] = {
    "byte_copy": 14,
    "png_resave": 10,
    "jpeg_requality": 14,
    "brightness": 14,
    "resize_75": 6,
    "resize_150": 6,
    "resize_200": 6,
    "rot90": 8,
    "rot180": 8,
    "rot270": 8,
    "crop": 6,
}
THUMB_REQUALITIES = (85, 90, 95)
THUMB_COPY_QUALITY = 95
THUMB_CHUNK = 1000  # originals rendered together (their pixels depend on (seed, chunk), not on --processes)
THUMB_OBJECTS = 6  # hard-edged shapes drawn per thumbnail, at most (each present with probability 0.7)
MIXES = ("photo", "real", "thumb")


@dataclass(frozen=True)
class Copy:
    """One planted copy of an original: where it goes, how it is made, and the parameter used."""

    path: str
    kind: str
    param: float | int | None = None


@dataclass(frozen=True)
class Original:
    """One synthetic photo to render, and the copies planted from it."""

    index: int
    path: str
    width: int
    height: int
    fmt: str  # "JPEG" or "PNG"
    quality: int
    copies: tuple[Copy, ...] = field(default_factory=tuple)
    category: str = "photo"  # --mix real: "photo", "screenshot", "graphic" or "wallpaper"
    png_level: int = 1  # zlib level of a PNG original
    png_mode: str = (
        "RGB"  # a PNG graphic's mode: "RGB", "RGBA" (transparent), "P", "PT" (palette + transparency)
    )


def _extension(fmt: str) -> str:
    """File extension for a Pillow format name."""
    return ".png" if fmt == "PNG" else ".jpg"


def _copy_param(rng: np.random.Generator, kind: str, quality: int) -> float | int | None:
    """Draw the parameter of a planted copy (new quality, crop fraction, brightness shift...)."""
    if kind == "jpeg_requality":
        return int(rng.choice([q for q in REQUALITIES if q != quality]))
    if kind == "crop":
        return round(float(rng.uniform(0.01, 0.03)), 4)
    if kind == "brightness":
        return int(rng.integers(2, 9))
    if kind == "resize_50":
        return 0.5
    if kind == "resize_75":
        return 0.75
    if kind == "to_jpeg":
        return int(rng.choice(JPEG_QUALITIES))
    return None


def _copy_format(kind: str, fmt: str) -> str:
    """The format a planted copy is written in: the original's, except for re-encodes."""
    if kind in ("jpeg_requality", "to_jpeg"):
        return "JPEG"
    if kind in ("png_resave", "to_png"):
        return "PNG"
    return fmt


def plan(
    n: int, seed: int, dup_fraction: float = DUP_FRACTION, small: bool = False, shrink: int = 1
) -> list[Original]:
    """Draw the whole dataset (sizes, formats, qualities, planted copies) from one seeded generator.

    small: originals from SMALL_SIZES only (the draw sequence is the same, only the size table differs).
    shrink: every original's sides divided by this (at least 8 px): cheap sets for catalog-built series.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    sizes = SMALL_SIZES if small else SIZES
    rng = np.random.default_rng(seed)
    n_copies = int(round(n * dup_fraction)) if n > 1 else 0
    n_orig = n - n_copies
    weights = np.array([s[2] for s in sizes], dtype=np.float64)
    size_idx = rng.choice(len(sizes), size=n_orig, p=weights / weights.sum())
    is_png = rng.random(n_orig) < PNG_FRACTION
    qualities = rng.choice(JPEG_QUALITIES, size=n_orig)
    kind_names = list(KINDS)
    kind_w = np.array([KINDS[k] for k in kind_names], dtype=np.float64)
    sources = np.sort(rng.choice(n_orig, size=n_copies, replace=True)) if n_copies else np.array([], int)
    kinds = rng.choice(len(kind_names), size=n_copies, p=kind_w / kind_w.sum())
    copies: dict[int, list[Copy]] = {}
    originals = []
    for i in range(n_orig):
        w, h, _ = sizes[size_idx[i]]
        w, h = max(8, w // shrink), max(8, h // shrink)
        fmt = "PNG" if is_png[i] else "JPEG"
        originals.append(
            (
                i,
                f"photos/roll_{i // ROLL_SIZE:03d}/IMG_{i:06d}{_extension(fmt)}",
                w,
                h,
                fmt,
                int(qualities[i]),
            )
        )
    for k, (src, kind_i) in enumerate(zip(sources.tolist(), kinds.tolist())):
        kind = kind_names[kind_i]
        _, _, _, _, fmt, quality = originals[src]
        param = _copy_param(rng, kind, quality)
        path = f"copies/{kind}/IMG_{src:06d}_{k:06d}{_extension(_copy_format(kind, fmt))}"
        copies.setdefault(src, []).append(Copy(path, kind, param))
    return [Original(i, p, w, h, fmt, q, tuple(copies.get(i, ()))) for i, p, w, h, fmt, q in originals]


def _pick(rng: np.random.Generator, table: list[tuple[int, int, float]], n: int) -> np.ndarray:
    """n indices into a (width, height, weight) table, drawn by weight."""
    weights = np.array([t[2] for t in table], dtype=np.float64)
    return rng.choice(len(table), size=n, p=weights / weights.sum())


def plan_real(n: int, seed: int, dup_fraction: float = DUP_FRACTION) -> list[Original]:
    """The --mix real plan: originals by category (REAL_CATEGORIES), copies by the original's format (REAL_KINDS).

    Photos are JPEG; screenshots and graphics PNG at zlib level 6 (what screenshot tools and editors write),
    wallpapers PNG at level 1 (noisy, barely compressible; level 6 would be 7x slower to generate).
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    rng = np.random.default_rng([seed, 1])  # another stream than plan(): the photo mix stays as it was
    n_copies = int(round(n * dup_fraction)) if n > 1 else 0
    n_orig = n - n_copies
    cats = list(REAL_CATEGORIES)
    cat_w = np.array([REAL_CATEGORIES[c] for c in cats], dtype=np.float64)
    cat_idx = rng.choice(len(cats), size=n_orig, p=cat_w / cat_w.sum())
    tables = {
        "photo": REAL_PHOTO_SIZES,
        "screenshot": REAL_SCREENSHOT_SIZES,
        "graphic": REAL_GRAPHIC_SIZES,
        "wallpaper": REAL_WALLPAPER_SIZES,
    }
    size_idx = {c: _pick(rng, t, n_orig) for c, t in tables.items()}
    modes = list(REAL_GRAPHIC_MODES)
    mode_w = np.array([REAL_GRAPHIC_MODES[m] for m in modes], dtype=np.float64)
    mode_idx = rng.choice(len(modes), size=n_orig, p=mode_w / mode_w.sum())
    qualities = rng.choice(JPEG_QUALITIES, size=n_orig)
    sources = np.sort(rng.choice(n_orig, size=n_copies, replace=True)) if n_copies else np.array([], int)
    kind_draw = rng.random(n_copies)
    originals = []
    for i in range(n_orig):
        cat = cats[cat_idx[i]]
        w, h, _ = tables[cat][size_idx[cat][i]]
        fmt = "JPEG" if cat == "photo" else "PNG"
        folder, prefix = REAL_FOLDERS[cat]
        if cat == "photo":
            folder = f"{folder}/roll_{i // ROLL_SIZE:03d}"
        path = f"{folder}/{prefix}{i:06d}{_extension(fmt)}"
        originals.append(
            Original(
                i,
                path,
                w,
                h,
                fmt,
                int(qualities[i]),
                category=cat,
                png_level=6 if cat in ("screenshot", "graphic") else 1,
                png_mode=modes[mode_idx[i]] if cat == "graphic" else "RGB",
            )
        )
    copies: dict[int, list[Copy]] = {}
    for k, (src, u) in enumerate(zip(sources.tolist(), kind_draw.tolist())):
        orig = originals[src]
        table = REAL_KINDS[orig.fmt]
        cum = np.cumsum([table[name] for name in table])
        kind = list(table)[int(np.searchsorted(cum, u * cum[-1], side="right"))]
        param = _copy_param(rng, kind, orig.quality)
        if kind == "png_resave":
            param = 1 if orig.png_level != 1 else 3  # same pixels, other bytes
        path = f"copies/{kind}/IMG_{src:06d}_{k:06d}{_extension(_copy_format(kind, orig.fmt))}"
        copies.setdefault(src, []).append(Copy(path, kind, param))
    return [
        Original(
            o.index,
            o.path,
            o.width,
            o.height,
            o.fmt,
            o.quality,
            tuple(copies.get(o.index, ())),
            o.category,
            o.png_level,
            o.png_mode,
        )
        for o in originals
    ]


def _thumb_copy_format(kind: str, fmt: str) -> str:
    """The format of a --mix thumb copy: brightness shifts are lossless PNG (stay near), else as usual."""
    return "PNG" if kind == "brightness" else _copy_format(kind, fmt)


def plan_thumb(n: int, seed: int, dup_fraction: float = DUP_FRACTION) -> list[Original]:
    """The --mix thumb plan: THUMB_SIZES originals (about 10% PNG) and THUMB_KINDS copies, vectorised."""
    if n < 1:
        raise ValueError("n must be >= 1")
    rng = np.random.default_rng([seed, 2])  # its own stream: the other mixes stay as they were
    n_copies = int(round(n * dup_fraction)) if n > 1 else 0
    n_orig = n - n_copies
    size_idx = _pick(rng, THUMB_SIZES, n_orig)
    is_png = rng.random(n_orig) < PNG_FRACTION
    qualities = rng.choice(JPEG_QUALITIES, size=n_orig)
    kind_names = list(THUMB_KINDS)
    kind_w = np.array([THUMB_KINDS[k] for k in kind_names], dtype=np.float64)
    sources = np.sort(rng.choice(n_orig, size=n_copies, replace=True)) if n_copies else np.array([], int)
    kinds = rng.choice(len(kind_names), size=n_copies, p=kind_w / kind_w.sum())
    shifts = rng.integers(1, 3, n_copies)
    requality = rng.choice(THUMB_REQUALITIES, size=n_copies)
    crops = np.round(rng.uniform(0.01, 0.03, n_copies), 4)
    copies: dict[int, list[Copy]] = {}
    for k, (src, kind_i) in enumerate(zip(sources.tolist(), kinds.tolist())):
        kind = kind_names[kind_i]
        fmt = "PNG" if is_png[src] else "JPEG"
        param: float | int | None = {"resize_75": 0.75, "resize_150": 1.5, "resize_200": 2.0}.get(kind)
        if kind == "brightness":
            param = int(shifts[k])
        elif kind == "jpeg_requality":
            param = int(requality[k])
        elif kind == "crop":
            param = float(crops[k])
        path = f"copies/{kind}/IMG_{src:06d}_{k:06d}{_extension(_thumb_copy_format(kind, fmt))}"
        copies.setdefault(src, []).append(Copy(path, kind, param))
    fmts = np.where(is_png, "PNG", "JPEG").tolist()
    return [
        Original(
            i,
            f"photos/roll_{i // ROLL_SIZE:03d}/IMG_{i:06d}{_extension(fmts[i])}",
            THUMB_SIZES[s][0],
            THUMB_SIZES[s][1],
            fmts[i],
            q,
            tuple(copies.get(i, ())),
        )
        for i, (s, q) in enumerate(zip(size_idx.tolist(), qualities.tolist()))
    ]


def _bilinear(n: int, k: int) -> np.ndarray:
    """The n x k float32 matrix that linearly interpolates k samples (ends aligned) onto n points."""
    pos = np.linspace(0, k - 1, n)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, max(0, k - 2))
    frac = (pos - lo).astype(np.float32)
    out = np.zeros((n, k), dtype=np.float32)
    out[np.arange(n), lo] = 1 - frac
    out[np.arange(n), np.minimum(lo + 1, k - 1)] += frac
    return out


def render_thumbs(rng: np.random.Generator, count: int, width: int, height: int) -> np.ndarray:
    """count photo-like thumbnails (count x height x width x 3 uint8) at once, in float32 numpy.

    Like render(), in vectorised form: a smooth colour gradient from a 4x4 grid, up to THUMB_OBJECTS flat
    rectangles and ellipses, mid-frequency texture, sensor noise, and a per-image tone curve (gamma +
    contrast, applied as a 256-entry table) that spreads mean brightness over the whole range.
    """
    f32 = np.float32
    luma = rng.uniform(0, 255, (count, 1, 4, 4)).astype(f32)
    cast = rng.normal(0, 25, (count, 3, 1, 1)).astype(f32)
    grid = np.clip(luma + cast + rng.normal(0, 30, (count, 3, 4, 4)).astype(f32), 0, 255)
    img = _bilinear(height, 4) @ grid @ _bilinear(width, 4).T  # count x 3 x height x width
    ys = np.arange(height, dtype=f32)[None, :, None] + f32(0.5)
    xs = np.arange(width, dtype=f32)[None, None, :] + f32(0.5)
    k_shape = (THUMB_OBJECTS, count, 1, 1)
    cx, cy = rng.uniform(0, width, k_shape).astype(f32), rng.uniform(0, height, k_shape).astype(f32)
    rx = rng.uniform(1, width / 3, k_shape).astype(f32)
    ry = rng.uniform(1, height / 3, k_shape).astype(f32)
    ellipse, present = rng.random(k_shape) < 0.5, rng.random(k_shape) < 0.7
    colours = rng.uniform(0, 255, (THUMB_OBJECTS, count, 3, 1, 1)).astype(f32)
    for k in range(THUMB_OBJECTS):
        # coverage with a one-pixel anti-aliased edge, as a downscaled photo has
        dx, dy = np.abs(xs - cx[k]), np.abs(ys - cy[k])
        box = np.minimum(rx[k] - dx, ry[k] - dy)
        oval = (1 - np.sqrt((dx / rx[k]) ** 2 + (dy / ry[k]) ** 2)) * np.minimum(rx[k], ry[k])
        alpha = np.clip(np.where(ellipse[k], oval, box) + f32(0.5), 0, 1) * present[k]
        img += (colours[k] - img) * alpha[:, None]
    th, tw = max(2, height // 4), max(2, width // 4)
    texture = _bilinear(height, th) @ rng.standard_normal((count, th, tw), dtype=f32) @ _bilinear(width, tw).T
    texture *= rng.uniform(2, 10, (count, 1, 1)).astype(f32)
    noise = rng.standard_normal((count, height, width), dtype=f32)
    texture += noise * rng.uniform(0.3, 2.0, (count, 1, 1)).astype(f32)
    img += texture[:, None]
    np.clip(img, 0, 255, out=img)
    levels = np.rint(img).astype(np.uint8)
    # tone curve as a table per image (like _tone_lut): gamma toward a random mean brightness, then contrast
    target = np.clip(rng.beta(1.6, 1.8, count), 0.04, 0.96)
    mean = np.clip(levels.reshape(count, -1).mean(axis=1) / 255.0, 0.02, 0.98)
    gamma = np.clip(np.log(target) / np.log(mean), 0.2, 5.0)
    contrast = rng.uniform(0.8, 1.2, count)
    x = np.arange(256, dtype=np.float64) / 255.0
    curve = (np.power(x[None, :], gamma[:, None]) - target[:, None]) * contrast[:, None] + target[:, None]
    lut = np.clip(np.round(curve * 255.0), 0, 255).astype(np.uint8)  # count x 256
    toned = lut[np.arange(count)[:, None, None, None], levels]
    return np.ascontiguousarray(toned.transpose(0, 2, 3, 1))


def make_thumb_chunk(job: tuple[str, int, int, list[Original]]) -> int:
    """Render one THUMB_CHUNK of originals (by size), write them and their copies; return bytes written."""
    root, seed, chunk, originals = job
    rng = np.random.default_rng([seed, 2, chunk])
    total = 0
    by_size: dict[tuple[int, int], list[Original]] = {}
    for orig in originals:
        by_size.setdefault((orig.width, orig.height), []).append(orig)
    for (width, height), group in sorted(by_size.items()):
        pixels = render_thumbs(rng, len(group), width, height)
        for orig, arr in zip(group, pixels):
            img = Image.fromarray(arr)
            data = encode(img, orig.fmt, orig.quality)
            _write(root, orig.path, data)
            total += len(data)
            decoded = None
            for copy in orig.copies:
                if copy.kind == "byte_copy":
                    out = data
                else:
                    if decoded is None:
                        decoded = Image.open(io.BytesIO(data)).convert("RGB")
                    quality = int(copy.param) if copy.kind == "jpeg_requality" else THUMB_COPY_QUALITY
                    fmt = _thumb_copy_format(copy.kind, orig.fmt)
                    out = encode(derive(decoded, copy), fmt, quality, subsampling=0)
                _write(root, copy.path, out)
                total += len(out)
    return total


def _upscale(grid: np.ndarray, width: int, height: int, resample: int) -> np.ndarray:
    """Upscale a small uint8 grid (L or RGB) to width x height with Pillow (fast C resampling)."""
    return np.asarray(Image.fromarray(grid).resize((width, height), resample=resample))


def _draw_objects(img: Image.Image, rng: np.random.Generator) -> None:
    """Paint a few hard-edged objects (rectangles, ellipses, polygons) of random colour and size."""
    width, height = img.size
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 12))):
        scale = rng.uniform(0.05, 0.5)
        cw, ch = (
            max(2, int(width * scale * rng.uniform(0.5, 1.5))),
            max(2, int(height * scale * rng.uniform(0.5, 1.5))),
        )
        x0, y0 = int(rng.integers(-cw // 2, width)), int(rng.integers(-ch // 2, height))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.rectangle([x0, y0, x0 + cw, y0 + ch], fill=colour)
        elif shape == 1:
            draw.ellipse([x0, y0, x0 + cw, y0 + ch], fill=colour)
        else:
            pts = rng.uniform(0, 1, (int(rng.integers(3, 7)), 2)) * (cw, ch) + (x0, y0)
            draw.polygon([tuple(p) for p in pts.astype(int).tolist()], fill=colour)


def _tone_lut(rng: np.random.Generator, current_mean: float) -> list[int]:
    """A 256-entry tone curve (gamma + contrast) moving the mean brightness to a random target."""
    target = float(np.clip(rng.beta(1.6, 1.8), 0.04, 0.96))
    m = float(np.clip(current_mean / 255.0, 0.02, 0.98))
    gamma = float(np.clip(np.log(target) / np.log(m), 0.2, 5.0))
    contrast = rng.uniform(0.8, 1.2)
    x = np.arange(256, dtype=np.float64) / 255.0
    y = np.power(x, gamma)
    y = (y - target) * contrast + target
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8).tolist()


def render(seed: int, index: int, width: int, height: int) -> Image.Image:
    """One synthetic photo (RGB): gradients, objects, texture, noise, tone curve; a pure function of its args."""
    rng = np.random.default_rng([seed, index])
    gw, gh = (int(v) for v in rng.integers(2, 6, 2))
    luma = rng.uniform(0, 255, (gh, gw, 1))
    cast = rng.normal(0, 25, (1, 1, 3))
    grid = np.clip(luma + cast + rng.normal(0, 30, (gh, gw, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(_upscale(grid, width, height, Image.BICUBIC))
    _draw_objects(img, rng)
    cell = int(rng.choice([4, 8, 16, 32]))
    tex_grid = rng.normal(128, rng.uniform(4, 22), (max(2, height // cell), max(2, width // cell)))
    texture = _upscale(np.clip(tex_grid, 0, 255).astype(np.uint8), width, height, Image.BILINEAR)
    noise = rng.standard_normal((height, width), dtype=np.float32) * np.float32(rng.uniform(0.5, 5.0))
    grain = texture.astype(np.int16) - 128 + noise.astype(np.int16)
    arr = np.asarray(img, dtype=np.int16) + grain[..., None]
    np.clip(arr, 0, 255, out=arr)
    img = Image.fromarray(arr.astype(np.uint8))
    lut = _tone_lut(rng, float(arr[::7, ::7].mean()))
    return img.point(lut * 3)


def _ui_colour(rng: np.random.Generator, dark: bool, spread: int = 40) -> tuple[int, int, int]:
    """A flat UI colour: near-black shades for a dark theme, near-white ones for a light theme."""
    base = int(rng.integers(18, 60)) if dark else int(rng.integers(200, 250))
    return tuple(int(np.clip(base + v, 0, 255)) for v in rng.integers(-spread // 2, spread // 2 + 1, 3))


def _text_lines(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[int, int, int, int], ink: tuple
) -> None:
    """Text-like stripes inside box: lines of word-sized dark (or light) bars with gaps, ragged right edge."""
    x0, y0, x1, y1 = box
    line_h = int(rng.integers(14, 26))
    glyph_h = max(4, int(line_h * rng.uniform(0.45, 0.65)))
    y = y0 + int(rng.integers(4, 16))
    while y + glyph_h < y1:
        x = x0 + int(rng.integers(6, 20))
        end = x1 - int(rng.integers(6, max(8, (x1 - x0) // 3)))
        if rng.random() < 0.12:  # blank line between paragraphs
            y += line_h
            continue
        while x < end:
            word = int(rng.integers(12, 90))
            draw.rectangle([x, y, min(x + word, end), y + glyph_h], fill=ink)
            x += word + int(rng.integers(5, 10))
        y += line_h


def render_screenshot(seed: int, index: int, width: int, height: int) -> Image.Image:
    """A UI-like screenshot (RGB): flat panels, a title bar, a sidebar, buttons, text stripes, maybe a picture."""
    rng = np.random.default_rng([seed, index])
    dark = bool(rng.random() < 0.4)
    img = Image.new("RGB", (width, height), _ui_colour(rng, dark))
    draw = ImageDraw.Draw(img)
    ink = (230, 230, 230) if dark else (30, 30, 40)
    accent = tuple(int(c) for c in rng.integers(0, 256, 3))
    bar = int(rng.integers(24, 64))
    draw.rectangle([0, 0, width, bar], fill=_ui_colour(rng, not dark if rng.random() < 0.3 else dark, 60))
    side = int(width * rng.uniform(0.12, 0.3)) if rng.random() < 0.7 else 0
    if side:
        draw.rectangle([0, bar, side, height], fill=_ui_colour(rng, dark, 50))
        _text_lines(draw, rng, (0, bar + 8, side, height), ink)
    # content panels: a grid of 1-3 columns and 1-3 rows with margins, each a card with text
    cols, rows = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    margin = int(rng.integers(8, 32))
    cw, ch = (width - side - margin) // cols, (height - bar - margin) // rows
    for r in range(rows):
        for c in range(cols):
            x0, y0 = side + margin + c * cw, bar + margin + r * ch
            box = (x0, y0, x0 + cw - margin, y0 + ch - margin)
            draw.rectangle(box, fill=_ui_colour(rng, dark, 30))
            if rng.random() < 0.25:  # a photo-like picture in the card
                pw, ph = max(8, (box[2] - box[0]) // 2), max(8, (box[3] - box[1]) // 2)
                grid = rng.integers(0, 256, (3, 3, 3)).astype(np.uint8)
                img.paste(Image.fromarray(_upscale(grid, pw, ph, Image.BICUBIC)), (box[0] + 10, box[1] + 10))
                _text_lines(draw, rng, (box[0] + pw + 20, box[1], box[2], box[3]), ink)
            else:
                _text_lines(draw, rng, box, ink)
            if rng.random() < 0.5:  # a button
                bx, by = box[2] - 120, box[3] - 44
                draw.rectangle([bx, by, bx + 100, by + 30], fill=accent)
    return img


def render_graphic(seed: int, index: int, width: int, height: int, mode: str) -> Image.Image:
    """A flat-colour graphic or icon: a background (transparent for RGBA and PT) and 1-6 flat shapes.

    mode "RGB" and "RGBA" give that mode; "P" an adaptive palette of 4-64 colours; "PT" a palette image
    whose background index is transparent (the colour under it stays in the palette).
    """
    rng = np.random.default_rng([seed, index])
    bg = tuple(int(c) for c in rng.integers(0, 256, 3))
    img = Image.new("RGBA", (width, height), bg + ((0,) if mode in ("RGBA", "PT") else (255,)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 7))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3)) + (255,)
        x0 = int(rng.integers(-width // 4, width * 3 // 4))
        y0 = int(rng.integers(-height // 4, height * 3 // 4))
        x1 = x0 + max(2, int(width * rng.uniform(0.2, 0.9)))
        y1 = y0 + max(2, int(height * rng.uniform(0.2, 0.9)))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        elif shape == 1:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            pts = rng.uniform(0, 1, (int(rng.integers(3, 6)), 2)) * (x1 - x0, y1 - y0) + (x0, y0)
            draw.polygon([tuple(p) for p in pts.astype(int).tolist()], fill=colour)
    if mode == "RGBA":
        return img
    rgb = img.convert("RGB") if mode != "PT" else Image.fromarray(np.asarray(img)[..., :3])
    if mode == "RGB":
        return rgb
    pal = rgb.quantize(colors=int(rng.choice([4, 8, 16, 32, 64])), method=Image.Quantize.MEDIANCUT)
    if mode == "PT":
        alpha = np.asarray(img)[..., 3]
        idx = np.asarray(pal)
        clear = idx[alpha == 0]
        if clear.size:
            pal.info["transparency"] = int(np.bincount(clear).argmax())
    return pal


def render_wallpaper(seed: int, index: int, width: int, height: int) -> Image.Image:
    """A wallpaper (RGB): a smooth colour gradient from a 2x2..4x4 grid, soft blobs, fine noise."""
    rng = np.random.default_rng([seed, index])
    gw, gh = (int(v) for v in rng.integers(2, 5, 2))
    grid = rng.integers(0, 256, (gh, gw, 3)).astype(np.uint8)
    img = Image.fromarray(_upscale(grid, width, height, Image.BICUBIC))
    blobs = rng.integers(0, 256, (max(2, int(rng.integers(3, 9))), max(2, int(rng.integers(3, 9))), 3))
    soft = _upscale(blobs.astype(np.uint8), width, height, Image.BICUBIC).astype(np.int16)
    noise = rng.standard_normal((height, width), dtype=np.float32) * np.float32(rng.uniform(1.0, 4.0))
    arr = (np.asarray(img, dtype=np.int16) * 3 + soft) // 4 + noise.astype(np.int16)[..., None]
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8))


def render_original(seed: int, orig: Original) -> Image.Image:
    """The pixels of one original, by its category."""
    if orig.category == "screenshot":
        return render_screenshot(seed, orig.index, orig.width, orig.height)
    if orig.category == "graphic":
        return render_graphic(seed, orig.index, orig.width, orig.height, orig.png_mode)
    if orig.category == "wallpaper":
        return render_wallpaper(seed, orig.index, orig.width, orig.height)
    return render(seed, orig.index, orig.width, orig.height)


def encode(img: Image.Image, fmt: str, quality: int, level: int = 1, subsampling: int = -1) -> bytes:
    """Encode an image as JPEG (given quality and chroma subsampling, -1 = Pillow's default 4:2:0, 0 = 4:4:4;
    no optimisation; RGB) or PNG (zlib level, default 1: noisy photos barely compress at any level, and
    level 6 is 7x slower; any mode); deterministic."""
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, format="PNG", compress_level=level)
    else:
        img.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def derive(img: Image.Image, copy: Copy) -> Image.Image:
    """The pixels of a planted copy, made from the decoded original."""
    kind, param = copy.kind, copy.param
    if kind.startswith("resize_"):
        w, h = img.size
        return img.resize((max(1, round(w * param)), max(1, round(h * param))), resample=Image.LANCZOS)
    if kind in ("rot90", "rot180", "rot270"):
        op = {
            "rot90": Image.Transpose.ROTATE_90,
            "rot180": Image.Transpose.ROTATE_180,
            "rot270": Image.Transpose.ROTATE_270,
        }[kind]
        return img.transpose(op)
    if kind == "crop":
        w, h = img.size
        dx, dy = max(1, round(w * param)), max(1, round(h * param))
        return img.crop((dx, dy, w - dx, h - dy))
    if kind == "brightness":
        return img.point([min(255, v + int(param)) for v in range(256)] * 3)
    return img  # jpeg_requality, png_resave: same pixels, another encoding


def _write(root: str, rel: str, data: bytes) -> None:
    """Write bytes to root/rel, creating folders."""
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def make_original(job: tuple[str, int, Original]) -> int:
    """Render one original, write it and all its planted copies; return the number of bytes written."""
    root, seed, orig = job
    data = encode(render_original(seed, orig), orig.fmt, orig.quality, orig.png_level)
    _write(root, orig.path, data)
    total = len(data)
    decoded = None
    for copy in orig.copies:
        if copy.kind == "byte_copy":
            out = data
        elif copy.kind == "png_resave" and orig.category != "photo":
            # --mix real: the PNG itself (palette and transparency kept) saved again at another zlib level
            out = encode(Image.open(io.BytesIO(data)), "PNG", orig.quality, int(copy.param))
        else:
            if decoded is None:
                decoded = Image.open(io.BytesIO(data)).convert("RGB")
            fmt = _copy_format(copy.kind, orig.fmt)
            quality = int(copy.param) if copy.kind in ("jpeg_requality", "to_jpeg") else orig.quality
            out = encode(derive(decoded, copy), fmt, quality, orig.png_level)
        _write(root, copy.path, out)
        total += len(out)
    return total


def ground_truth(originals: Iterable[Original]) -> list[dict]:
    """The planted pairs {a: original, b: copy, kind, param}, sorted by copy path."""
    pairs = [
        {"a": o.path, "b": c.path, "kind": c.kind, "param": c.param} for o in originals for c in o.copies
    ]
    return sorted(pairs, key=lambda p: p["b"])


def describe(
    originals: list[Original],
    n: int,
    seed: int,
    dup_fraction: float,
    small: bool = False,
    shrink: int = 1,
    mix: str = "photo",
) -> dict:
    """The dataset.json document: parameters and counts (no timings, so the file is deterministic).

    A --small dataset has "sizes": "small"; a full one has no "sizes" field (its dataset.json is unchanged).
    A --mix real one has "mix": "real" and counts per category, per format and per PNG mode.
    """
    kinds: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for o in originals:
        sizes[f"{o.width}x{o.height}"] = sizes.get(f"{o.width}x{o.height}", 0) + 1
        for c in o.copies:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
    info = {"generator_version": GENERATOR_VERSION, "n": n, "seed": seed, "dup_fraction": dup_fraction}
    if small:
        info["sizes"] = "small"
    if shrink > 1:
        info["shrink"] = shrink
    if mix != "photo":
        info["mix"] = mix
        cats: dict[str, int] = {}
        formats: dict[str, int] = {}
        modes: dict[str, int] = {}
        for o in originals:
            cats[o.category] = cats.get(o.category, 0) + 1
            formats[o.fmt] = formats.get(o.fmt, 0) + 1
            if o.fmt == "PNG":
                modes[o.png_mode] = modes.get(o.png_mode, 0) + 1
            for c in o.copies:
                fmt = _copy_format(c.kind, o.fmt)
                formats[fmt] = formats.get(fmt, 0) + 1
        info["originals_per_category"] = dict(sorted(cats.items()))
        info["files_per_format"] = dict(sorted(formats.items()))
        info["png_originals_per_mode"] = dict(sorted(modes.items()))
    return {
        **info,
        "originals": len(originals),
        "copies": sum(kinds.values()),
        "png_originals": sum(o.fmt == "PNG" for o in originals),
        "copies_per_kind": dict(sorted(kinds.items())),
        "originals_per_size": dict(sorted(sizes.items())),
        "pillow": Image.__version__,
        "numpy": np.__version__,
    }


def generate(
    out_dir: str,
    n: int,
    seed: int = 0,
    dup_fraction: float = DUP_FRACTION,
    processes: int = 2,
    progress: bool = False,
    small: bool = False,
    shrink: int = 1,
    mix: str = "photo",
) -> dict:
    """Generate the dataset into out_dir (which must be empty or missing); return dataset.json's content.

    mix: "photo" (plan(): photo-like originals, about 10% PNG) or "real" (plan_real(): a user's folder of
    photos, screenshots, graphics/icons and wallpapers, about 64% JPEG / 36% PNG; not with small or shrink).
    """
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r} (one of {', '.join(MIXES)})")
    if mix != "photo" and (small or shrink > 1):
        raise ValueError(f"--mix {mix} has its own sizes: no --small or --shrink")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} is not empty")
    if mix == "real":
        originals = plan_real(n, seed, dup_fraction)
    elif mix == "thumb":
        originals = plan_thumb(n, seed, dup_fraction)
    else:
        originals = plan(n, seed, dup_fraction, small, shrink)
    os.makedirs(out_dir, exist_ok=True)
    if mix == "thumb":
        task, step = make_thumb_chunk, THUMB_CHUNK
        jobs = [
            (out_dir, seed, c, originals[c * THUMB_CHUNK : (c + 1) * THUMB_CHUNK])
            for c in range((len(originals) + THUMB_CHUNK - 1) // THUMB_CHUNK)
        ]
    else:
        # biggest first so a rare 4000x3000 does not end up alone at the tail of the pool
        task, step = make_original, 1
        jobs = sorted(((out_dir, seed, o) for o in originals), key=lambda j: -j[2].width * j[2].height)
    written, done = 0, 0
    with Pool(processes) as pool:
        for size in pool.imap_unordered(task, jobs, chunksize=8 if step == 1 else 1):
            written += size
            done += step
            if progress and done % (1000 if step == 1 else 50 * step) == 0:
                print(f"  {min(done, len(originals))}/{len(originals)} originals", file=sys.stderr)
    info = describe(originals, n, seed, dup_fraction, small, shrink, mix)
    with open(os.path.join(out_dir, "ground_truth.json"), "w", encoding="utf-8") as handle:
        json.dump(ground_truth(originals), handle, indent=1)
    with open(os.path.join(out_dir, "dataset.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=1)
    return {**info, "bytes": written}


def dataset_key(n: int, seed: int = 0, small: bool = False, shrink: int = 1, mix: str = "photo") -> str:
    """The cache folder name of a dataset: N_seed, N_seed_small for a --small one, _sK with --shrink K,
    N_seed_real for --mix real."""
    if mix != "photo":
        return f"{n}_{seed}_{mix}"
    return (f"{n}_{seed}_small" if small else f"{n}_{seed}") + (f"_s{shrink}" if shrink > 1 else "")


def cached_dataset(
    cache_root: str,
    n: int,
    seed: int = 0,
    processes: int = 2,
    small: bool = False,
    shrink: int = 1,
    mix: str = "photo",
) -> str:
    """The folder cache_root/N_seed (N_seed_small with small) holding the dataset, generated first if missing or stale.

    A dataset is reused only when its dataset.json names the same n, seed, sizes and GENERATOR_VERSION (and the
    default dup fraction); it is built in a '.partial' folder and renamed, so an interrupted run is never reused.
    """
    folder = os.path.join(cache_root, dataset_key(n, seed, small, shrink, mix))
    meta = os.path.join(folder, "dataset.json")
    if os.path.isfile(meta):
        with open(meta, encoding="utf-8") as handle:
            info = json.load(handle)
        if (
            info.get("generator_version"),
            info.get("n"),
            info.get("seed"),
            info.get("dup_fraction"),
            info.get("sizes", "all"),
            info.get("shrink", 1),
            info.get("mix", "photo"),
        ) == (GENERATOR_VERSION, n, seed, DUP_FRACTION, "small" if small else "all", shrink, mix):
            return folder
        shutil.rmtree(folder)  # a dataset of ours from another generator version
    elif os.path.exists(folder):
        raise FileExistsError(f"{folder} exists but has no dataset.json; remove it or pick another cache")
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    t0 = time.perf_counter()
    print(
        f"generating {n} images (seed {seed}{', small sizes' if small else ''}"
        f"{', mix ' + mix if mix != 'photo' else ''}) into {folder} ...",
        file=sys.stderr,
    )
    generate(partial, n, seed, processes=processes, progress=True, small=small, shrink=shrink, mix=mix)
    os.rename(partial, folder)
    print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return folder


def main(argv: list[str] | None = None) -> int:
    """Command line: generate.py OUT_DIR -n N --seed S [--dup-fraction F] [--processes P] [--small] [--mix M]."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("-n", type=int, default=2000, help="number of image files (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--dup-fraction",
        type=float,
        default=DUP_FRACTION,
        help="share of files that are planted copies (default %(default)s)",
    )
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument(
        "--small",
        action="store_true",
        help="originals in the four smallest sizes only (320x240, 240x320, 480x360, 360x480)",
    )
    ap.add_argument(
        "--shrink",
        type=int,
        default=1,
        help="divide every original's sides by this (catalog-built series read 50x50 thumbnails only)",
    )
    ap.add_argument(
        "--mix",
        choices=MIXES,
        default="photo",
        help="photo: photo-like originals, about 10%% PNG (default); real: a user's folder - JPEG photos up to "
        "4000 px, PNG screenshots, flat graphics/icons (palette, transparency) and wallpapers, about 64/36; "
        "thumb: photo-like originals of 24x32 to 64x48 (1,000,000 files in about 6 minutes on 2 cores)",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        info = generate(
            args.out_dir,
            args.n,
            args.seed,
            args.dup_fraction,
            args.processes,
            progress=True,
            small=args.small,
            shrink=args.shrink,
            mix=args.mix,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"generate.py: error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    print(
        f"{args.n} images ({info['originals']} originals, {info['copies']} planted copies, "
        f"{info['bytes'] / 2**20:.0f} MiB) in {seconds:.1f} s -> {args.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

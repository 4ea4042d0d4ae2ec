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
counts per kind and size). Every file is a pure function of (N, seed, --dup-fraction, --small,
GENERATOR_VERSION) under the same Pillow/zlib/libjpeg: the plan is drawn in the parent process, each image from its own
``numpy.random.default_rng([seed, index])``, so the number of processes does not change a byte.

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
    return None


def _copy_format(kind: str, fmt: str) -> str:
    """The format a planted copy is written in: the original's, except for re-encodes."""
    if kind == "jpeg_requality":
        return "JPEG"
    if kind == "png_resave":
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


def encode(img: Image.Image, fmt: str, quality: int) -> bytes:
    """Encode an image as JPEG (given quality, no optimisation) or PNG (zlib level 1: noisy photos barely
    compress at any level, and level 6 is 7x slower); deterministic."""
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def derive(img: Image.Image, copy: Copy) -> Image.Image:
    """The pixels of a planted copy, made from the decoded original."""
    kind, param = copy.kind, copy.param
    if kind in ("resize_50", "resize_75"):
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
    data = encode(render(seed, orig.index, orig.width, orig.height), orig.fmt, orig.quality)
    _write(root, orig.path, data)
    total = len(data)
    decoded = None
    for copy in orig.copies:
        if copy.kind == "byte_copy":
            out = data
        else:
            if decoded is None:
                decoded = Image.open(io.BytesIO(data)).convert("RGB")
            fmt = _copy_format(copy.kind, orig.fmt)
            quality = int(copy.param) if copy.kind == "jpeg_requality" else orig.quality
            out = encode(derive(decoded, copy), fmt, quality)
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
    originals: list[Original], n: int, seed: int, dup_fraction: float, small: bool = False, shrink: int = 1
) -> dict:
    """The dataset.json document: parameters and counts (no timings, so the file is deterministic).

    A --small dataset has "sizes": "small"; a full one has no "sizes" field (its dataset.json is unchanged).
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
) -> dict:
    """Generate the dataset into out_dir (which must be empty or missing); return dataset.json's content."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} is not empty")
    originals = plan(n, seed, dup_fraction, small, shrink)
    os.makedirs(out_dir, exist_ok=True)
    # biggest first so a rare 4000x3000 does not end up alone at the tail of the pool
    jobs = sorted(((out_dir, seed, o) for o in originals), key=lambda j: -j[2].width * j[2].height)
    written, done = 0, 0
    with Pool(processes) as pool:
        for size in pool.imap_unordered(make_original, jobs, chunksize=8):
            written += size
            done += 1
            if progress and done % 1000 == 0:
                print(f"  {done}/{len(jobs)} originals", file=sys.stderr)
    info = describe(originals, n, seed, dup_fraction, small, shrink)
    with open(os.path.join(out_dir, "ground_truth.json"), "w", encoding="utf-8") as handle:
        json.dump(ground_truth(originals), handle, indent=1)
    with open(os.path.join(out_dir, "dataset.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=1)
    return {**info, "bytes": written}


def dataset_key(n: int, seed: int = 0, small: bool = False, shrink: int = 1) -> str:
    """The cache folder name of a dataset: N_seed, N_seed_small for a --small one, _sK with --shrink K."""
    return (f"{n}_{seed}_small" if small else f"{n}_{seed}") + (f"_s{shrink}" if shrink > 1 else "")


def cached_dataset(
    cache_root: str, n: int, seed: int = 0, processes: int = 2, small: bool = False, shrink: int = 1
) -> str:
    """The folder cache_root/N_seed (N_seed_small with small) holding the dataset, generated first if missing or stale.

    A dataset is reused only when its dataset.json names the same n, seed, sizes and GENERATOR_VERSION (and the
    default dup fraction); it is built in a '.partial' folder and renamed, so an interrupted run is never reused.
    """
    folder = os.path.join(cache_root, dataset_key(n, seed, small, shrink))
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
        ) == (GENERATOR_VERSION, n, seed, DUP_FRACTION, "small" if small else "all", shrink):
            return folder
        shutil.rmtree(folder)  # a dataset of ours from another generator version
    elif os.path.exists(folder):
        raise FileExistsError(f"{folder} exists but has no dataset.json; remove it or pick another cache")
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    t0 = time.perf_counter()
    print(
        f"generating {n} images (seed {seed}{', small sizes' if small else ''}) into {folder} ...",
        file=sys.stderr,
    )
    generate(partial, n, seed, processes=processes, progress=True, small=small, shrink=shrink)
    os.rename(partial, folder)
    print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return folder


def main(argv: list[str] | None = None) -> int:
    """Command line: generate.py OUT_DIR -n N --seed S [--dup-fraction F] [--processes P] [--small]."""
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

"""Thumbnails for the report: each file read through fsspec on the Dask cluster, shrunk and embedded.

A batch of files is one Dask task: its bytes are fetched in one request round (`fetch.read_batch`),
decoded with Pillow (first frame, EXIF orientation applied so people see the picture upright), shrunk to
at most THUMB_PX on its longer side and encoded as a JPEG data URI. A file that cannot be read or
decoded gets its error instead; nothing stops the report.
"""

from __future__ import annotations

import base64
import io
import math
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["THUMB_PX", "Thumb", "make_thumbnail", "thumbnails"]

THUMB_PX = 192  # longer side: readable in a grid, about 5-10 KB as JPEG
THUMB_QUALITY = 72
BATCH = 32  # files per task


@dataclass(frozen=True)
class Thumb:
    """One file as the report shows it: a data URI (or why there is none) and what the file is now."""

    uri: str | None
    width: int | None  # of the original image
    height: int | None
    bytes: int | None
    mtime: float  # POSIX seconds; nan when unknown
    error: str | None = None


def make_thumbnail(data: bytes, side: int = THUMB_PX) -> tuple[str, int, int]:
    """A JPEG data URI of at most side x side pixels, and the original width and height."""
    from PIL import Image, ImageOps

    img = Image.open(io.BytesIO(data))
    width, height = img.size
    img.draft("RGB", (side, side))  # JPEGs decode at a reduced scale: much less work
    img = ImageOps.exif_transpose(img)
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGBA").convert("RGB") if "A" in img.getbands() else img.convert("RGB")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii"), width, height


def _mtime(url: str, storage_options: dict) -> float:
    from .sources import filesystem, is_remote, local_path, remote_mtime

    try:
        if not is_remote(url):
            return os.stat(local_path(url)).st_mtime
        fs, path = filesystem(url, storage_options)
        return remote_mtime(fs.info(path))
    except (OSError, ValueError):
        return math.nan


def _batch(urls: list[str], storage_options: dict, side: int) -> list[Thumb]:
    """One Dask task: read, shrink and encode these files (each file's error its own)."""
    from .decode import error_message
    from .fetch import read_batch

    got = read_batch(urls, storage_options)
    out = []
    for url in urls:
        data = got.get(url)
        mtime = _mtime(url, storage_options)
        if isinstance(data, BaseException) or data is None:
            out.append(Thumb(None, None, None, None, mtime, error_message(data) if data else "not read"))
            continue
        try:
            uri, width, height = make_thumbnail(data, side)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's, not the report's
            out.append(Thumb(None, None, None, len(data), mtime, error_message(exc)))
            continue
        out.append(Thumb(uri, width, height, len(data), mtime))
    return out


def thumbnails(
    urls: list[str],
    storage_options: dict | None = None,
    scheduler: Any = None,
    side: int = THUMB_PX,
    show_progress: bool = False,
) -> dict[str, Thumb]:
    """{url: Thumb} for every URL, computed on a Dask cluster in batches of BATCH files.

    `scheduler`: a `distributed.Client` or an address; None starts a local cluster (threads) for this call.
    """
    import dask

    storage_options = storage_options or {}
    unique = list(dict.fromkeys(urls))
    if not unique:
        return {}
    batches = [unique[k : k + BATCH] for k in range(0, len(unique), BATCH)]
    tasks = [
        dask.delayed(_batch, pure=False)(batch, storage_options, side, dask_key_name=f"dupflow-thumbs-{k}")
        for k, batch in enumerate(batches)
    ]
    from .cluster import Engine

    engine = Engine(scheduler, os.cpu_count() or 1, 0)  # images=0: local workers are threads
    try:
        results = engine.run(tasks, "dupflow thumbnails", show_progress, len(unique))
    finally:
        engine.close()
    return {url: thumb for batch, got in zip(batches, results) for url, thumb in zip(batch, got)}

"""Batched reads: the bytes of many files in one request round per filesystem, each file's error its own."""

from __future__ import annotations

import inspect

from .sources import filesystem

__all__ = ["read_batch"]


def read_batch(urls: list[str], storage_options: dict) -> dict[str, bytes | BaseException]:
    """Fetch several files in one round: one `cat_ranges` call per filesystem, which async filesystems
    (s3fs, gcsfs, ...) run concurrently. Each file gets its bytes or its own error; one bad file, or
    one filesystem that cannot be opened, never fails the others.

    cat_ranges takes paths literally: a name like `a[1].png` is a file, not a glob pattern.
    """
    by_fs: dict[int, tuple] = {}
    out: dict[str, bytes | BaseException] = {}
    for url in urls:
        try:
            fs, path = filesystem(url, storage_options)
        except Exception as exc:  # unknown protocol, missing driver, bad options: this file's error
            out[url] = exc
            continue
        by_fs.setdefault(id(fs), (fs, []))[1].append((path, url))
    for fs, items in by_fs.values():
        paths = [path for path, _ in items]
        try:
            got = fs.cat_ranges(paths, None, None, on_error="return", **_one_request_each(fs))
        except Exception as exc:  # the whole round failed: report it on each file
            got = [exc] * len(paths)
        for (_, url), data in zip(items, got):
            out[url] = _missing(url) if isinstance(data, FileNotFoundError) else data
    return out


def _one_request_each(fs) -> dict:
    """Options for one plain GET per file: s3fs otherwise asks each object's size first (a HEAD) to split
    big objects into parallel ranged reads; images are small, and the batch already runs concurrently."""
    try:
        accepts = inspect.signature(getattr(fs, "_cat_file", fs.cat_file)).parameters
    except (TypeError, ValueError):
        return {}
    return {"max_concurrency": 1} if "max_concurrency" in accepts else {}


def _missing(url: str) -> FileNotFoundError:
    """A clear reason for a listed file that cannot be found when read (drivers often give the bare path)."""
    if url.startswith("memory://"):
        return FileNotFoundError(
            "File not found by the Dask worker: memory:// files exist only in the process "
            "that wrote them (use a threaded scheduler, or real storage)"
        )
    return FileNotFoundError("File not found: deleted or moved after it was listed")

"""Listing: input paths and fsspec URLs -> a deterministic table of image files (nothing is opened)."""

from __future__ import annotations

import logging
import math
import os
import re
import stat as stat_mod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "canonical",
    "current_state",
    "DIFPY_EXTENSIONS",
    "filesystem",
    "InputNotFound",
    "is_remote",
    "list_files",
    "Listing",
    "LiteralLocalFileSystem",
    "local_path",
    "NOT_REGULAR",
    "redact",
    "remote_mtime",
    "remote_stamp",
    "supported_extensions",
    "under_roots",
    "UNSUPPORTED",
]

log = logging.getLogger("dupflow")

DIFPY_EXTENSIONS = frozenset(
    "apng bw cdf cur dcx dds dib emf eps fli flc fpx ftex fits gd gd2 gif gbr icb icns iim ico im imt j2k "
    "jfif jfi jif jp2 jpe jpeg jpg jpm jpf jpx mic mpo msp nc pbm pcd pcx pgm png ppm psd pixar ras rgb "
    "rgba sgi spi spider sun tga tif tiff vda vst wal webp xbm xpm".split()
)
UNSUPPORTED = "Unsupported file type"
NOT_REGULAR = "Not a regular file (device, socket or pipe)"


def supported_extensions() -> frozenset[str]:
    """difPy's list, plus bmp, plus heic/heif/avif where a Pillow plugin can read them."""
    from PIL import features

    extra = {"bmp"}
    try:
        if features.check("avif"):
            extra.add("avif")
    except Exception:  # older Pillow without the avif feature name
        pass
    from .decode import register_heif

    if register_heif():  # registered here and, through DecoderSettings, on every worker
        extra.update({"heic", "heif"})
    return DIFPY_EXTENSIONS | extra


class InputNotFound(FileNotFoundError):
    """An input folder, file or URL given by the user does not exist."""


@dataclass
class Listing:
    """The files of one build: parallel columns, in search order, plus what was refused at listing."""

    path: list[str] = field(default_factory=list)  # as the user sees it (result keys)
    url: list[str] = field(default_factory=list)  # what fsspec opens
    size: list[int] = field(default_factory=list)
    stamp: list[str] = field(default_factory=list)  # mtime_ns, ETag or generation
    inputs: list[list[int]] = field(default_factory=list)  # input indices each file belongs to
    invalid: dict[str, str] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)  # canonical URL of every input, for safety checks
    mtime: list[float] = field(default_factory=list)  # POSIX seconds (objects: LastModified); nan: unknown
    reference: list[bool] = field(default_factory=list)  # owned by a reference input: never cleaned

    def __len__(self) -> int:
        return len(self.path)

    def owner(self, position: int) -> int:
        """The input a file belongs to: of the inputs that contain it, the most specific (longest root)."""
        return max(self.inputs[position], key=lambda k: len(self.roots[k]))

    def subset(self, positions: list[int]) -> Listing:
        """These files only (same roots; nothing refused)."""
        pick = lambda column: [column[i] for i in positions]  # noqa: E731
        return Listing(
            pick(self.path),
            pick(self.url),
            pick(self.size),
            pick(self.stamp),
            pick(self.inputs),
            {},
            self.roots,
            pick(self.mtime),
            pick(self.reference),
        )


def is_remote(url: str) -> bool:
    """True for fsspec URLs (`s3://`, `memory://`, ...); plain paths and `file://` URLs are local."""
    return "://" in url and not url.startswith("file://")


def local_path(url: str) -> str:
    """The filesystem path of a local input or file: a plain path as is, a `file://` URL without it."""
    return url[len("file://") :] if url.startswith("file://") else url


class LiteralLocalFileSystem(LocalFileSystem):
    """The local filesystem with every path taken literally: `[`, `*`, `?` in names are not glob patterns."""

    def expand_path(
        self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None, **kwargs
    ) -> list[str]:
        """fsspec's expand_path without glob expansion (fs.cat would otherwise miss `a[1].png`)."""
        kwargs.setdefault("assume_literal", True)
        return super().expand_path(path, recursive=recursive, maxdepth=maxdepth, **kwargs)


def filesystem(url: str, storage_options: dict) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and in-filesystem path of a URL or local path (local paths are literal)."""
    if not is_remote(url):
        return LiteralLocalFileSystem(), os.path.abspath(local_path(url))
    return fsspec.core.url_to_fs(url, **storage_options)


def _extension(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _walk_local(
    root: str, recursive: bool, refused: dict[str, str]
) -> Iterator[tuple[str, os.stat_result | str]]:
    """Yield (path, stat or error) under root, depth-first, skipping hidden names and symlink loops."""
    seen_dirs = {os.path.realpath(root)}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list folder %s: %s", folder, exc)
            refused[folder] = f"Folder could not be listed: {exc.strerror or exc}"
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                real = os.path.realpath(entry.path)
                if real in seen_dirs:
                    log.info("skipping %s: folder already listed (symbolic link loop or repeat)", entry.path)
                elif recursive:
                    seen_dirs.add(real)
                    subfolders.append(entry.path)
                continue
            try:
                st = entry.stat()
            except OSError as exc:
                yield (
                    entry.path,
                    f"{type(exc).__name__}: {exc.strerror or exc} (broken or looping symbolic link)",
                )
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                yield entry.path, NOT_REGULAR
                continue
            yield entry.path, st
        stack.extend(reversed(subfolders))


def _list_local(
    entry: str, recursive: bool, refused: dict[str, str]
) -> Iterator[tuple[str, str, int, str, str | None, float]]:
    """(display path, url, size, stamp, error, mtime) for a local input: a folder or a single file."""
    local = local_path(entry)
    prefix = "file://" if entry.startswith("file://") else ""
    if not os.path.lexists(local):
        raise InputNotFound(f'Directory "{entry}" does not exist')
    if os.path.isdir(local):
        walked = _walk_local(local, recursive, refused)
    else:
        try:
            st = os.stat(local)
        except OSError as exc:
            walked = iter([(local, f"{type(exc).__name__}: {exc.strerror or exc}")])
        else:  # a FIFO given by name would block the reader forever
            walked = iter([(local, st if stat_mod.S_ISREG(st.st_mode) else NOT_REGULAR)])
    for path, st in walked:
        display = prefix + os.path.normpath(path)
        url = os.path.abspath(path)
        if isinstance(st, str):
            yield display, url, -1, "", st, math.nan
        else:
            yield display, url, st.st_size, str(st.st_mtime_ns), None, st.st_mtime


# What says "these bytes changed", best first: GCS `generation` changes exactly when an object's content
# is replaced (its `etag` also changes with metadata); S3/Azure ETags are content or upload ids;
# `md5Hash`, then times, for filesystems that have nothing better.
STAMP_KEYS = (
    "generation",
    "ETag",
    "etag",
    "md5Hash",
    "LastModified",
    "last_modified",
    "mtime",
    "updated",
    "modified",
    "created",
)


def remote_stamp(info: dict) -> str:
    """The change stamp of an object from its fsspec info/listing entry (both give the same value).

    Times become POSIX seconds: some drivers list a float and describe one object with a datetime.
    """
    for key in STAMP_KEYS:
        value = info.get(key)
        if value is not None:
            if isinstance(value, datetime):
                value = value.timestamp()
            return str(value).strip('"')
    return ""


MTIME_KEYS = ("LastModified", "last_modified", "updated", "mtime", "modified", "created")


def remote_mtime(info: dict) -> float:
    """An object's modification time as POSIX seconds (the store's LastModified/updated); nan if none."""
    for key in MTIME_KEYS:
        value = info.get(key)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return math.nan


def _list_remote(
    entry: str, recursive: bool, storage_options: dict
) -> Iterator[tuple[str, str, int, str, str | None, float]]:
    """(display path, url, size, stamp, error, mtime) for an fsspec URL: a prefix or a single object.

    URLs are the input as given plus the object's path below it, so every result key starts with what the
    user wrote (`memory://mem/a.png`, not `memory:///mem/a.png`) and lies under its input (`under_roots`).
    """
    fs, root = fsspec.core.url_to_fs(entry, **storage_options)
    fs.invalidate_cache(root)  # a listing cached by an earlier build in this process may be stale
    try:
        info = fs.info(root)
    except FileNotFoundError:  # the message names the input only: never a credential or an endpoint
        raise InputNotFound(f'Directory "{redact(entry)}" does not exist') from None
    if info.get("type") != "directory":
        yield redact(entry), entry, int(info.get("size") or 0), remote_stamp(info), None, remote_mtime(info)
        return
    found = fs.find(root, maxdepth=None if recursive else 1, detail=True, withdirs=False)
    base = root.rstrip("/")
    prefix = f"{base}/" if base else ""
    for path, detail in sorted(found.items()):
        if not path.startswith(prefix) or path.endswith("/") or detail.get("type") == "directory":
            continue  # folder marker objects (`photos/sub/`), which some tools create, are not files
        relative = path[len(prefix) :]
        if not relative or any(part.startswith(".") for part in relative.split("/")):
            continue
        url = f"{entry.rstrip('/')}/{relative}"
        size = int(detail.get("size") or 0)
        yield redact(url), url, size, remote_stamp(detail), None, remote_mtime(detail)


def redact(url: str) -> str:
    """A URL without any user:password@ part, fit for results, stats and logs."""
    return re.sub(r"^([a-zA-Z][\w+.-]*://)[^/@]*@", r"\1", url)


def canonical(url: str) -> str:
    """A file's or input's URL for comparing places: local paths as file:// URLs, URLs as they are."""
    return url if "://" in url else "file://" + url


def current_state(url: str, storage_options: dict) -> tuple[int, str] | None:
    """(size, stamp) of a file now, in the listing's terms; None if it is gone.

    Remote objects are asked for afresh (no cached listing), so a replaced object shows its new stamp.
    """
    try:
        if not is_remote(url):
            st = os.stat(local_path(url))
            return st.st_size, str(st.st_mtime_ns)
        fs, path = filesystem(url, storage_options)
        fs.invalidate_cache(path)
        info = fs.info(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(info.get("size") or 0), remote_stamp(info)


def under_roots(url: str, roots: list[str]) -> bool:
    """True if a file lies inside one of the searched inputs (a folder, or the file itself)."""
    key = canonical(url)
    return any(key == root or key.startswith(root.rstrip("/") + "/") for root in roots)


def list_files(
    directories: list[str],
    recursive: bool,
    limit_extensions: bool,
    storage_options: dict | None = None,
    reference: list[str] = (),
) -> Listing:
    """List every input (sorted order), each file once, sorted by path within its input.

    Reference inputs are listed after the directories (their roots follow the directories' roots); a
    file is a reference file when its most specific input (`Listing.owner`) is a reference input.
    """
    storage_options = storage_options or {}
    allowed = supported_extensions() if limit_extensions else None
    listing = Listing()
    position: dict[str, int] = {}
    for index, entry in enumerate([*directories, *reference]):
        if is_remote(entry):
            rows, root_url = _list_remote(entry, recursive, storage_options), entry
        else:
            rows = _list_local(entry, recursive, listing.invalid)
            root_url = canonical(os.path.abspath(local_path(entry)))
        listing.roots.append(root_url)
        for display, url, size, stamp, error, mtime in sorted(rows):
            key = canonical(url)
            if key in position:
                if index not in listing.inputs[position[key]]:
                    listing.inputs[position[key]].append(index)
                continue
            if error is not None:
                listing.invalid[display] = error
                continue
            if allowed is not None and _extension(display) not in allowed:
                listing.invalid[display] = UNSUPPORTED
                continue
            position[key] = len(listing.path)
            listing.path.append(display)
            listing.url.append(url)
            listing.size.append(size)
            listing.stamp.append(stamp)
            listing.mtime.append(mtime)
            listing.inputs.append([index])
    owners = (ins[0] if len(ins) == 1 else listing.owner(i) for i, ins in enumerate(listing.inputs))
    listing.reference = [owner >= len(directories) for owner in owners]  # after the directories: reference
    return listing

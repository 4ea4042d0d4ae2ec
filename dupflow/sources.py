"""Listing: input paths and fsspec URLs -> a deterministic table of image files (nothing is opened)."""

from __future__ import annotations

import logging
import math
import os
import re
import stat as stat_mod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Iterator

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fsspec.implementations.local import LocalFileSystem

from .columns import StringColumn, combined

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
    "NOT_UTF8",
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
NOT_UTF8 = "File name is not valid UTF-8 (the catalog and results store names as UTF-8)"
LIST_BATCH = 65536  # listed files gathered as Python objects before they become Arrow columns


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


def _strings() -> StringColumn:
    return StringColumn()


@dataclass
class Listing:
    """The files of one build: parallel columns, in search order, plus what was refused at listing.

    Columns cost bytes, not Python objects (a million files take about 150 MB, not 1 GB): strings are
    `StringColumn`s (indexing gives str), numbers NumPy arrays.
    """

    path: StringColumn = field(default_factory=_strings)  # as the user sees it (result keys)
    url: StringColumn = field(default_factory=_strings)  # what fsspec opens
    size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    stamp: StringColumn = field(default_factory=_strings)  # mtime_ns, ETag or generation
    owners: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # see owner()
    invalid: dict[str, str] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)  # canonical URL of every input, for safety checks
    mtime: np.ndarray = field(default_factory=lambda: np.zeros(0))  # POSIX seconds; nan: unknown
    reference: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # owned by a reference input

    def __len__(self) -> int:
        return len(self.path)

    def owner(self, position: int) -> int:
        """The input a file belongs to: of the inputs that contain it, the most specific (longest root)."""
        return int(self.owners[position])

    def subset(self, positions: list[int] | np.ndarray) -> Listing:
        """These files only (same roots; nothing refused)."""
        at = np.asarray(positions, dtype=np.int64)
        url = self.url.take(at)
        return Listing(
            url if self.path is self.url else self.path.take(at),
            url,
            self.size[at],
            self.stamp.take(at),
            self.owners[at],
            {},
            self.roots,
            self.mtime[at],
            self.reference[at],
        )

    def keys(self) -> pa.Table:
        """(url, size, stamp) per file, in listing order: what the catalog is keyed by."""
        return pa.table({"url": self.url.arrow, "size": self.size, "stamp": self.stamp.arrow})


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


def _utf8(name: str) -> bool:
    """True if a name can be stored as UTF-8 (undecodable bytes in a local name cannot)."""
    if name.isascii():
        return True
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _columns(
    rows: Iterable[tuple[str, str, int, str, str | None, float]], allowed: frozenset[str] | None
) -> tuple[pa.Table, list[tuple[str, str]]]:
    """One input's files as a table (path, url, size, stamp, mtime) sorted by path, and the refused files
    as sorted (path, reason); Python objects are held for one batch at a time."""
    batches: list[pa.Table] = []
    refused: list[tuple[str, str]] = []
    path: list[str] = []
    url: list[str] = []
    size: list[int] = []
    stamp: list[str] = []
    mtime: list[float] = []
    shared = [True]  # every path shown is its URL: one column serves both

    def flush() -> None:
        urls = pa.array(url, pa.string())
        shared[0] = shared[0] and path == url
        batches.append(
            pa.table(
                {
                    "path": urls if path == url else pa.array(path, pa.string()),
                    "url": urls,
                    "size": pa.array(size, pa.int64()),
                    "stamp": pa.array(stamp, pa.string()),
                    "mtime": pa.array(mtime, pa.float64()),
                }
            )
        )
        for column in (path, url, size, stamp, mtime):
            column.clear()

    for display, location, nbytes, change, error, when in rows:
        if error is not None:
            refused.append((display, error))
        elif allowed is not None and _extension(display) not in allowed:
            refused.append((display, UNSUPPORTED))
        elif not (_utf8(display) and _utf8(location)):
            refused.append((display, NOT_UTF8))
        else:
            path.append(display)
            url.append(location)
            size.append(nbytes)
            stamp.append(change)
            mtime.append(when)
            if len(path) >= LIST_BATCH:
                flush()
    flush()
    table = pa.concat_tables(batches)
    batches.clear()  # the batches are released column by column below
    order = pc.sort_indices(table, [("path", "ascending"), ("url", "ascending")]).to_numpy()
    if (np.diff(order) != 1).any():  # a walk lists each folder's files in order: often sorted already
        for k, name in enumerate(table.column_names):  # column by column: one column copied at a time
            if name != "path" or not shared[0]:
                table = table.set_column(k, name, combined(table.column(name)).take(order))
    if shared[0]:
        table = table.set_column(0, "path", table.column("url"))
    return table, sorted(refused)


def _owners(table: pa.Table, roots: list[str]) -> tuple[pa.Table, np.ndarray]:
    """Each file once (its first listing kept), with the most specific input that lists it."""
    inputs = table.column("input").to_numpy()
    if len(roots) < 2 or table.num_rows == 0:
        return table, inputs.astype(np.int32)
    urls = table.column("url")
    local = pc.invert(pc.match_substring(urls, "://"))
    key = pc.if_else(local, pc.utf8_replace_slice(urls, start=0, stop=0, replacement="file://"), urls)
    first = pc.index_in(key, value_set=key).to_numpy()
    keep = first == np.arange(len(first))
    owners = inputs.copy()
    listed_by: dict[int, list[int]] = {}
    for k in np.flatnonzero(~keep).tolist():  # files that several inputs list
        also = listed_by.setdefault(int(first[k]), [int(inputs[first[k]])])
        if inputs[k] not in also:
            also.append(int(inputs[k]))
    for k, also in listed_by.items():
        owners[k] = max(also, key=lambda i: len(roots[i]))
    return table.filter(pa.array(keep)), owners[keep].astype(np.int32)


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
    invalid: dict[str, str] = {}
    roots: list[str] = []
    tables = []
    for index, entry in enumerate([*directories, *reference]):
        if is_remote(entry):
            rows, root_url = _list_remote(entry, recursive, storage_options), entry
        else:
            rows = _list_local(entry, recursive, invalid)
            root_url = canonical(os.path.abspath(local_path(entry)))
        roots.append(root_url)
        table, refused = _columns(rows, allowed)
        invalid.update(refused)
        tables.append(table.append_column("input", pa.array(np.full(table.num_rows, index, np.int32))))
    table, owners = _owners(pa.concat_tables(tables), roots)
    del tables
    url = StringColumn(table.column("url"))
    path = url if table.column("path").equals(table.column("url")) else StringColumn(table.column("path"))
    return Listing(
        path,  # one column when the paths shown are the URLs
        url,
        table.column("size").to_numpy(),
        StringColumn(table.column("stamp")),
        owners,
        invalid,
        roots,
        table.column("mtime").to_numpy(),
        owners >= len(directories),  # after the directories: reference
    )

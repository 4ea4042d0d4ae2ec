"""move_to / delete / undo: journaled first, never overwrite, never remove a primary or a changed file."""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import stat
import warnings
from dataclasses import dataclass
from datetime import datetime

from .params import ParameterError
from .sources import current_state, filesystem, is_remote, local_path, under_roots

__all__ = [
    "Journal",
    "Removal",
    "delete_files",
    "journal_dir",
    "move_files",
    "read_journal",
    "safe_to_remove",
    "undo",
]

log = logging.getLogger("dupflow")


@dataclass(frozen=True)
class Removal:
    """A lower-quality file as scanned, and the primary that keeps its content."""

    path: str
    url: str
    size: int
    stamp: str
    primary_url: str
    primary_size: int
    primary_stamp: str


def journal_dir() -> str:
    """Where journals go by default: the user's state folder (XDG)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "dupflow", "journals")


class Journal:
    """An append-only JSON-lines record, flushed to disk before and after each action."""

    def __init__(self, action: str, folder: str | None = None):
        folder = folder or journal_dir()
        os.makedirs(folder, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d%H%M%S%f")
        for k in range(1000):  # never reuse a journal, even when two runs start in the same microsecond
            self.path = os.path.join(folder, f"dupflow_{stamp}{f'_{k}' if k else ''}_{action}.jsonl")
            try:
                self._handle = open(self.path, "x", encoding="utf-8")
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"no free journal name in {folder}")
        self.write(
            {"journal": "dupflow", "version": 1, "action": action, "created": datetime.now().isoformat()}
        )

    def write(self, record: dict) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _same_file(a: str, b: str) -> bool:
    if is_remote(a) or is_remote(b):
        return a == b
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def safe_to_remove(item: Removal, roots: list[str], primaries: set[str], storage_options: dict) -> str | None:
    """Why this file must be left alone, or None when removing it keeps its content elsewhere."""
    if not under_roots(item.url, roots):
        return "outside the searched folders"
    if item.url in primaries:
        return "it is the primary of a group"
    now = current_state(item.url, storage_options)
    if now is None:
        return "it no longer exists"
    if now != (item.size, item.stamp):
        return "it changed since the scan"
    primary_now = current_state(item.primary_url, storage_options)
    if primary_now is None:
        return "its primary no longer exists"
    if primary_now != (item.primary_size, item.primary_stamp):
        return "its primary changed since the scan"
    if _same_file(item.url, item.primary_url):
        return "it is the same file as its primary (a link)"
    return None


def _vet(
    items: list[Removal],
    roots: list[str],
    primaries: set[str],
    storage_options: dict,
    journal: Journal,
    verb: str,
) -> list[Removal]:
    """The items safe to remove; each refusal is logged and journaled with its reason."""
    safe = []
    for item in items:
        reason = safe_to_remove(item, roots, primaries, storage_options)
        if reason:
            log.warning("not %s %s: %s", verb, item.path, reason)
            journal.write({"op": "skip", "source": item.url, "reason": reason})
        else:
            safe.append(item)
    return safe


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if is_remote(folder) else os.path.join(folder, name)


def _free(target: str, taken: set[str], storage_options: dict) -> bool:
    if target in taken:
        return False
    if is_remote(target):
        return current_state(target, storage_options) is None
    return not os.path.lexists(target)


def _unique_target(folder: str, name: str, taken: set[str], storage_options: dict) -> str:
    """folder/name, or folder/name_1, name_2, ... : the first name neither on disk nor planned."""
    stem, ext = posixpath.splitext(name)
    candidate, k = name, 0
    while not _free(_join(folder, candidate), taken, storage_options):
        k += 1
        candidate = f"{stem}_{k}{ext}"
    target = _join(folder, candidate)
    taken.add(target)
    return target


def _move_one(source: str, target: str, storage_options: dict) -> None:
    """Move without ever overwriting: link/rename locally, copy-verify-delete across filesystems."""
    if not is_remote(source) and not is_remote(target):
        source, target = local_path(source), local_path(target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(source, target)  # fails if target exists: no overwrite, even in a race
        except FileExistsError:
            raise
        except OSError:  # another device, or links not allowed: copy into a new file instead
            _copy_local(source, target)
        os.unlink(source)
        return
    src_fs, src_path = filesystem(source, storage_options)
    dst_fs, dst_path = filesystem(target, storage_options)
    if dst_fs.exists(dst_path):
        raise FileExistsError(target)
    dst_fs.makedirs(posixpath.dirname(dst_path), exist_ok=True)
    copied = _copy_exclusive(src_fs, src_path, dst_fs, dst_path)
    if dst_fs.size(dst_path) != copied or src_fs.size(src_path) != copied:
        dst_fs.rm_file(dst_path)  # our own copy (created exclusively just now), not to be trusted
        raise OSError(f"copy of {source} is incomplete")
    src_fs.rm_file(src_path)


COPY_CHUNK = 8 * 2**20


def _copy_local(source: str, target: str) -> None:
    """Copy into a new file (never replacing one) with shutil.copy2's data, permissions and times,
    synced to disk before the caller removes the source; a failed copy leaves no partial file."""
    with open(source, "rb") as src, open(target, "xb") as dst:  # O_EXCL: fails if the name was taken
        try:
            shutil.copyfileobj(src, dst, COPY_CHUNK)
            dst.flush()
            shutil.copystat(source, target)  # mode and times, after the last write
            os.fsync(dst.fileno())
            if os.fstat(dst.fileno()).st_size != os.fstat(src.fileno()).st_size:
                raise OSError(f"copy of {source} is incomplete")
        except BaseException:
            dst.close()
            os.unlink(target)  # ours: created exclusively just now
            raise
    _sync_folder(os.path.dirname(target))


def _sync_folder(folder: str) -> None:
    """Make a new name in a folder durable (where the platform allows opening folders)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _sync(handle) -> None:
    """Flush a local file's bytes to disk before its source is removed (no-op for object stores)."""
    try:
        fileno = handle.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return
    handle.flush()
    os.fsync(fileno)


def _copy_exclusive(src_fs, src_path: str, dst_fs, dst_path: str) -> int:
    """Copy into a new file, never replacing one; returns the bytes copied.

    Creation is exclusive where the filesystem offers it (local O_EXCL, S3 `If-None-Match: *`, memory);
    elsewhere the caller's existence check stands. A failed copy leaves no partial file behind.
    """
    try:
        dst = dst_fs.open(dst_path, "xb")
    except (ValueError, NotImplementedError, TypeError):  # no exclusive mode here
        dst = dst_fs.open(dst_path, "wb")
    copied = 0
    try:
        with src_fs.open(src_path, "rb") as src:
            while chunk := src.read(COPY_CHUNK):
                dst.write(chunk)
                copied += len(chunk)
        _sync(dst)
        dst.close()  # object stores publish the object here, and refuse if one appeared meanwhile
    except BaseException:
        _abandon(dst, dst_fs, dst_path)
        raise
    return copied


def _abandon(handle, fs, path: str) -> None:
    """Throw away a half-made copy: an upload is cancelled before it publishes anything; a local or
    in-memory file (made by our exclusive open, so ours) is removed."""
    from fsspec.spec import AbstractBufferedFile

    if isinstance(handle, AbstractBufferedFile):
        try:
            handle.discard()  # s3fs aborts its multipart upload, gcsfs its resumable one
        finally:
            handle.closed = True  # so that close() never commits what was buffered
        return
    try:
        handle.close()
    finally:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass


def _local_mode(url: str) -> dict:
    """A local file's permission bits, journaled so that undo restores them from any store."""
    if is_remote(url):
        return {}
    try:
        return {"mode": stat.S_IMODE(os.stat(local_path(url)).st_mode)}
    except OSError:
        return {}


def _restore_metadata(path: str, record: dict) -> None:
    """Give a file moved back from another store its journaled permissions and modification time."""
    if is_remote(path):
        return
    path = local_path(path)
    if isinstance(record.get("mode"), int):
        os.chmod(path, record["mode"])
    stamp = str(record.get("stamp") or "")
    if stamp.isdigit():  # a local stamp is the modification time in nanoseconds
        os.utime(path, ns=(os.stat(path).st_atime_ns, int(stamp)))


def move_files(
    items: list[Removal],
    destination: str,
    roots: list[str],
    primaries: set[str],
    storage_options: dict,
    journal_folder: str | None = None,
) -> tuple[dict[str, str], str]:
    """Move each safe file into destination; returns {old path: new path} and the journal path."""
    remote = is_remote(destination)
    folder = destination.rstrip("/") if remote else os.path.normpath(local_path(destination))
    target_root = folder if remote else os.path.abspath(folder)
    shown = "file://" + folder if destination.startswith("file://") else folder  # as the user wrote it
    fs, root_path = filesystem(folder, storage_options)
    try:
        fs.makedirs(root_path, exist_ok=True)
    except OSError:  # difPy's message when the destination cannot be created
        raise ParameterError(
            f'Invalid value for "move_to" parameter: "{destination}" does not exist.'
        ) from None
    journal = Journal("move", journal_folder)
    plan, taken = [], set()
    for item in _vet(items, roots, primaries, storage_options, journal, "moving"):
        name = item.url.rstrip("/").rsplit("/", 1)[-1]
        target = _unique_target(target_root, name, taken, storage_options)
        record = {"op": "plan", "source": item.url, "destination": target, "size": item.size}
        journal.write({**record, "stamp": item.stamp, **_local_mode(item.url)})
        plan.append((item, target))
    moved = {}
    for item, target in plan:
        try:
            _move_one(item.url, target, storage_options)
        except Exception as exc:
            warnings.warn(f"Could not move file: {item.path} ({exc})", stacklevel=2)
            continue
        journal.write({"op": "done", "source": item.url, "destination": target})
        name = target.rsplit("/", 1)[-1] if remote else os.path.basename(target)
        moved[item.path] = _join(shown, name)
    journal.close()
    return moved, journal.path


def delete_files(
    items: list[Removal],
    roots: list[str],
    primaries: set[str],
    storage_options: dict,
    journal_folder: str | None = None,
) -> tuple[int, str]:
    """Delete each safe file; returns how many were deleted and the journal path."""
    journal = Journal("delete", journal_folder)
    safe = []
    for item in _vet(items, roots, primaries, storage_options, journal, "deleting"):
        journal.write(
            {
                "op": "plan",
                "source": item.url,
                "size": item.size,
                "stamp": item.stamp,
                "kept": item.primary_url,
            }
        )
        safe.append(item)
    deleted = 0
    for item in safe:
        try:
            fs, path = filesystem(item.url, storage_options)
            fs.rm_file(path)  # one literal path: rm() would expand `[`, `*`, `?` as a pattern
        except Exception as exc:
            warnings.warn(f"Could not delete file: {item.path} ({exc})", stacklevel=2)
            continue
        journal.write({"op": "done", "source": item.url})
        deleted += 1
    journal.close()
    return deleted, journal.path


def read_journal(journal_path: str) -> list[dict]:
    """A journal's records, header first (undo and the report read them); ValueError if it is none."""
    try:
        with open(journal_path, encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError):
        records = []
    if not records or not isinstance(records[0], dict) or records[0].get("journal") != "dupflow":
        raise ValueError(f'"{journal_path}" is not a dupflow journal.')
    return records


def undo(journal_path: str | os.PathLike, storage_options: dict | None = None) -> dict[str, int]:
    """Put the files a `move_to` moved back where they were, never overwriting; deletions cannot be undone.

    Each move the journal records as planned is reversed when its moved copy is still there (a move a
    crash interrupted included) and its old place is free; anything else is left alone and counted as
    skipped. Permissions and modification time come back too, also from another store (an S3
    quarantine keeps neither: they are taken from the journal).

    Parameters
    ----------
    journal_path : str or os.PathLike
        A journal written by `search.move_to` or `search.delete` (its path is ``search.journal``,
        and is printed by the command line).
    storage_options : dict, optional
        fsspec options for the stores the files were moved between (credentials, endpoint, ...).

    Returns
    -------
    dict
        ``{"restored": n, "skipped": n, "not_restorable": n}``: files put back, files left where
        they are (copy missing, old place taken, or the move back failed), and deletions.

    Raises
    ------
    ValueError
        The file is not a dupflow journal.
    FileNotFoundError
        The journal does not exist.

    Examples
    --------
    >>> found.move_to("quarantine/")  # doctest: +SKIP
    >>> dupflow.undo(found.journal)  # doctest: +SKIP
    {'restored': 3, 'skipped': 0, 'not_restorable': 0}
    """
    journal_path = os.fspath(journal_path)
    storage_options = storage_options or {}
    records = read_journal(journal_path)
    done = {(r.get("source"), r.get("destination")) for r in records[1:] if r.get("op") == "done"}
    counts = {"restored": 0, "skipped": 0, "not_restorable": 0}
    for record in records[1:]:
        if record.get("op") != "plan":
            continue
        source, moved = record["source"], record.get("destination")
        if moved is None:  # a deletion
            counts["not_restorable"] += int((source, None) in done)
            continue
        state = current_state(moved, storage_options)
        if (source, moved) not in done and (state is None or state[0] != record.get("size")):
            continue  # never moved: it failed, or the run stopped first (a crash right after it is restored)
        if state is None or current_state(source, storage_options) is not None:
            log.warning("cannot restore %s: the moved copy is missing or its old place is taken", source)
            counts["skipped"] += 1
            continue
        try:
            _move_one(moved, source, storage_options)
        except Exception as exc:  # e.g. a file took the old place meanwhile: never overwritten
            log.warning("cannot restore %s: %s", source, exc)
            counts["skipped"] += 1
            continue
        if is_remote(moved) and state[0] == record.get("size"):
            _restore_metadata(source, record)
        counts["restored"] += 1
    return counts

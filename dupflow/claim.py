"""An exclusive, expiring claim on a folder or bucket prefix: one process at a time does a job there.

Claims are numbered files (`claim-00000001.json`, ...) that are only ever created exclusively (a hard link
of a finished file locally, `open(mode="xb")`, i.e. S3 `If-None-Match: *`, elsewhere) and never overwritten:
the newest is held until a `.released` marker appears beside it or its expiry passes, and whoever creates
the next number holds the job, so two processes taking over an expired claim at once cannot both win.
A holder that died blocks the others only until its claim expires; `still_held` tells a long job whether
its claim was taken over meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from fsspec.implementations.local import LocalFileSystem

from .sources import filesystem

__all__ = ["CLAIM_SECONDS", "Claim", "acquire", "hold", "holder", "release", "still_held"]

CLAIM_SECONDS = 900.0  # hold's default: longer than any compaction or gc is expected to take
CLAIM = re.compile(r"claim-(\d{8})\.json$")
KEEP_OLD = 4  # old claims kept for inspection; older ones are removed by the next holder


@dataclass(frozen=True)
class Claim:
    """A claim this process holds: its folder (URL or path), number, token and expiry (POSIX seconds)."""

    folder: str
    number: int
    token: str
    expires: float


def _name(number: int, suffix: str = "json") -> str:
    """The file name of claim `number` (or of its release marker)."""
    return f"claim-{number:08d}.{suffix}"


def _join(folder: str, name: str) -> str:
    """folder/name for a path or URL."""
    return f"{folder.rstrip('/')}/{name}"


def _create(folder: str, name: str, payload: bytes, storage_options: dict) -> bool:
    """Create folder/name holding payload, only if no such file exists; False if it does."""
    fs, path = filesystem(_join(folder, name), storage_options)
    if isinstance(fs, LocalFileSystem):
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), prefix=".tmp-", delete=False) as handle:
            handle.write(payload)
        try:
            os.link(handle.name, path)  # atomic, and the file is complete the moment it has its name
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(handle.name)
    try:
        with fs.open(path, "xb") as out:
            out.write(payload)
        return True
    except FileExistsError:
        return False


def _claims(folder: str, storage_options: dict) -> tuple[list[int], set[str]]:
    """The claim numbers in folder (ascending) and every name there, read afresh."""
    fs, path = filesystem(folder, storage_options)
    fs.invalidate_cache(path)
    try:
        names = {n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(path, detail=False)}
    except FileNotFoundError:
        names = set()
    numbers = sorted(int(m.group(1)) for n in names if (m := CLAIM.match(n)))
    return numbers, names


def _read(folder: str, number: int, storage_options: dict) -> dict:
    """The record of claim `number` ({} if gone or unreadable)."""
    fs, path = filesystem(_join(folder, _name(number)), storage_options)
    try:
        with fs.open(path, "rb") as handle:
            return json.loads(handle.read())
    except (FileNotFoundError, ValueError):
        return {}


def _live(
    folder: str, numbers: list[int], names: set[str], storage_options: dict, now: float | None
) -> dict | None:
    """The newest claim's record if it is neither released nor expired, else None."""
    if not numbers or _name(numbers[-1], "released") in names:
        return None
    record = _read(folder, numbers[-1], storage_options)
    if float(record.get("expires", 0)) <= (time.time() if now is None else now):
        return None  # expired: its holder is taken to have died
    return record


def holder(folder: str, storage_options: dict | None = None, now: float | None = None) -> dict | None:
    """The live claim on folder (its record: token, host, pid, created, expires), or None when free."""
    options = storage_options or {}
    numbers, names = _claims(folder, options)
    return _live(folder, numbers, names, options, now)


def acquire(
    folder: str, seconds: float, storage_options: dict | None = None, now: float | None = None
) -> Claim | None:
    """Claim folder for `seconds`, or None when another process holds it (or wins the race for it)."""
    options = storage_options or {}
    fs, path = filesystem(folder, options)
    fs.makedirs(path, exist_ok=True)
    numbers, names = _claims(folder, options)  # one listing: the number we create follows what we judged
    if _live(folder, numbers, names, options, now) is not None:
        return None
    number = (numbers[-1] if numbers else 0) + 1
    created = time.time() if now is None else now
    claim = Claim(folder, number, uuid.uuid4().hex, created + seconds)
    record = {
        "token": claim.token,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "created": created,
        "expires": claim.expires,
    }
    if not _create(folder, _name(number), json.dumps(record).encode(), options):
        return None
    for old in numbers[:-KEEP_OLD]:
        for suffix in ("json", "released"):
            try:
                fs.rm_file(_join(path, _name(old, suffix)))
            except FileNotFoundError:
                pass
    return claim


def still_held(claim: Claim, storage_options: dict | None = None) -> bool:
    """True while no later claim exists and ours has neither been released nor expired."""
    numbers, names = _claims(claim.folder, storage_options or {})
    return (
        bool(numbers)
        and numbers[-1] == claim.number
        and _name(claim.number, "released") not in names
        and time.time() < claim.expires
    )


def release(claim: Claim, storage_options: dict | None = None) -> None:
    """Let the next process in (a marker beside the claim; the claim itself stays as a record)."""
    _create(claim.folder, _name(claim.number, "released"), b"", storage_options or {})


@contextmanager
def hold(
    folder: str, storage_options: dict | None = None, seconds: float = CLAIM_SECONDS, wait: float = 0.0
) -> Iterator[bool]:
    """Hold the claim on folder for the block; yields whether it was obtained (waiting up to `wait` s)."""
    deadline = time.monotonic() + wait
    claim = acquire(folder, seconds, storage_options)
    while claim is None and time.monotonic() < deadline:
        time.sleep(0.2)
        claim = acquire(folder, seconds, storage_options)
    try:
        yield claim is not None
    finally:
        if claim is not None:
            release(claim, storage_options)

"""An atomic claim on a folder or bucket prefix, so that two runs of one job never both act.

Claims are numbered files (`claim-00000001.json`, ...) that are only ever created exclusively: a hard link
of a finished file locally (fails if the name exists), `open(mode="xb")` elsewhere (S3 `If-None-Match: *`).
Nothing is overwritten or deleted while it matters. The newest claim is held until a release marker is
created beside it or its expiry time passes; whoever creates the next number holds the job, and a run that
loses the race (the name exists) stands down.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass

from fsspec.implementations.local import LocalFileSystem

from ..sources import filesystem

__all__ = ["Claim", "acquire", "holder", "release", "still_held"]

CLAIM = re.compile(r"claim-(\d{8})\.json$")
KEEP_OLD = 4  # old claims kept for inspection; older ones are removed by the next holder


@dataclass(frozen=True)
class Claim:
    """A claim this process holds: its folder (URL or path), number and token."""

    folder: str
    number: int
    token: str
    expires: float


def _name(number: int, suffix: str = "json") -> str:
    return f"claim-{number:08d}.{suffix}"


def _join(folder: str, name: str) -> str:
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
    fs, path = filesystem(_join(folder, _name(number)), storage_options)
    try:
        with fs.open(path, "rb") as handle:
            return json.loads(handle.read())
    except (FileNotFoundError, ValueError):
        return {}


def holder(folder: str, storage_options: dict, now: float | None = None) -> dict | None:
    """The live claim on folder (its record), or None when the job is free."""
    numbers, names = _claims(folder, storage_options)
    if not numbers or _name(numbers[-1], "released") in names:
        return None
    record = _read(folder, numbers[-1], storage_options)
    if float(record.get("expires", 0)) <= (time.time() if now is None else now):
        return None  # expired: its run is taken to have died
    return record


def acquire(folder: str, minutes: float, storage_options: dict, now: float | None = None) -> Claim | None:
    """Claim the job in folder for `minutes`, or None when another run holds it (or wins the race)."""
    fs, path = filesystem(folder, storage_options)
    fs.makedirs(path, exist_ok=True)
    if holder(folder, storage_options, now) is not None:
        return None
    numbers, _ = _claims(folder, storage_options)
    number = (numbers[-1] if numbers else 0) + 1
    created = time.time() if now is None else now
    claim = Claim(folder, number, uuid.uuid4().hex, created + minutes * 60)
    record = {
        "token": claim.token,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "created": created,
        "expires": claim.expires,
    }
    if not _create(folder, _name(number), json.dumps(record).encode(), storage_options):
        return None
    for old in numbers[:-KEEP_OLD]:
        for suffix in ("json", "released"):
            try:
                fs.rm_file(_join(path, _name(old, suffix)))
            except FileNotFoundError:
                pass
    return claim


def still_held(claim: Claim, storage_options: dict) -> bool:
    """True while no later claim exists and ours has neither been released nor expired."""
    numbers, names = _claims(claim.folder, storage_options)
    return (
        bool(numbers)
        and numbers[-1] == claim.number
        and _name(claim.number, "released") not in names
        and time.time() < claim.expires
    )


def release(claim: Claim, storage_options: dict) -> None:
    """Let the next run in (a marker beside the claim; the claim itself stays as a record)."""
    _create(claim.folder, _name(claim.number, "released"), b"", storage_options)

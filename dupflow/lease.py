"""A lease: one process at a time may hold it, on a folder or a bucket, and a holder that died never blocks
the others for good.

It is one small object, created only if absent: `O_CREAT | O_EXCL` in a local folder, a conditional PUT
(`If-None-Match: *`, fsspec's `mode="create"`) on object stores. It names its holder and when it expires;
an expired lease may be taken over. Whatever it guards must stay correct without it (it saves repeated
work, it does not carry correctness), because an expired lease can in rare races be held twice.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from fsspec.implementations.local import LocalFileSystem

__all__ = ["hold", "LEASE_SECONDS"]

LEASE_SECONDS = 900.0  # longer than any compaction or gc is expected to take


def _create(fs, path: str, data: bytes) -> bool:
    """Write `data` at `path` only if nothing is there; True if this call created it."""
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        return True
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except TypeError:  # a driver without exclusive create: check, then write (not atomic; see above)
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
    return True


def _holder(fs, path: str) -> dict | None:
    """The lease's content ({} while being written or unreadable), or None if there is no lease."""
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _acquire(fs, path: str, seconds: float) -> str | None:
    """Take the lease if free or expired; its token, or None when another process holds it."""
    token = uuid.uuid4().hex
    data = json.dumps({"token": token, "expires": time.time() + seconds, "pid": os.getpid()}).encode()
    for _ in range(2):
        if _create(fs, path, data):
            return token
        holder = _holder(fs, path)
        if holder is None:  # released between our attempt and our look: try again
            continue
        if not holder or holder.get("expires", 0) > time.time():
            return None
        try:  # expired: its holder died or hung; take it over
            fs.rm_file(path)
        except FileNotFoundError:
            pass
    return None


def _release(fs, path: str, token: str) -> None:
    """Give the lease back if it is still ours."""
    if (_holder(fs, path) or {}).get("token") == token:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass


@contextmanager
def hold(fs, path: str, seconds: float = LEASE_SECONDS, wait: float = 0.0) -> Iterator[bool]:
    """Hold the lease at `path` for the block; yields whether it was obtained (waiting up to `wait` s)."""
    deadline = time.monotonic() + wait
    token = _acquire(fs, path, seconds)
    while token is None and time.monotonic() < deadline:
        time.sleep(0.2)
        token = _acquire(fs, path, seconds)
    try:
        yield token is not None
    finally:
        if token is not None:
            _release(fs, path, token)

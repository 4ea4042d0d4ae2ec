"""Purge: remove quarantined files older than N days, only those a move journal records, journaled itself.

A file is removed only when a finished move in a registered journal put it at that place, the journal is
older than the age asked for, the file still lies inside the quarantine folder, and its size is still
the size that was moved (a file restored by `dupflow undo`, or replaced since, is left alone).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..actions import Journal
from ..sources import canonical, current_state, filesystem, under_roots

__all__ = ["PurgeCounts", "purge_quarantine"]

log = logging.getLogger("dupflow")


@dataclass(frozen=True)
class PurgeCounts:
    """What a purge did: files removed, files left alone, and the purge's own journal (None if idle)."""

    purged: int
    kept: int
    journal: str | None


def _read_journal(fs, path: str) -> list[dict]:
    try:
        with fs.open(path, "rb") as handle:
            records = [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line]
    except (UnicodeDecodeError, ValueError):
        return []
    ok = records and isinstance(records[0], dict) and records[0].get("journal") == "dupflow"
    return records if ok else []


def _due_moves(records: list[dict], cutoff: datetime) -> list[tuple[str, str, int]]:
    """(original place, quarantined place, size) of each finished move, if the journal is old enough."""
    if records[0].get("action") != "move" or datetime.fromisoformat(records[0]["created"]) > cutoff:
        return []
    done = {(r.get("source"), r.get("destination")) for r in records[1:] if r.get("op") == "done"}
    return [
        (r["source"], r["destination"], int(r.get("size", -1)))
        for r in records[1:]
        if r.get("op") == "plan" and (r.get("source"), r.get("destination")) in done
    ]


def purge_quarantine(
    registry: str,
    quarantine: str,
    days: int,
    storage_options: dict,
    journal_folder: str,
    now: datetime | None = None,
) -> PurgeCounts:
    """Remove quarantined files recorded by the move journals in `registry` whose move is `days` old.

    Parameters
    ----------
    registry
        Folder or URL holding copies of the move journals of this job.
    quarantine
        The quarantine folder or URL: nothing outside it is ever removed.
    days
        Minimum age of a move (its journal's creation time) before its files are removed.
    storage_options
        fsspec options for remote places.
    journal_folder
        Local folder for the purge's own journal (written before each removal).
    now
        The time to measure ages from (default: now).
    """
    fs, path = filesystem(registry, storage_options)
    fs.invalidate_cache(path)
    try:
        names = sorted(n for n in fs.ls(path, detail=False) if n.endswith(".jsonl"))
    except FileNotFoundError:
        names = []
    cutoff = (now or datetime.now()) - timedelta(days=days)
    quarantine_root = canonical(quarantine)
    journal, purged, kept = None, 0, 0
    for name in names:
        records = _read_journal(fs, name)
        for source, place, size in _due_moves(records, cutoff) if records else []:
            state = current_state(place, storage_options)
            if state is None:
                continue  # restored by undo, or purged by an earlier run
            if not under_roots(place, [quarantine_root]) or state[0] != size:
                reason = "outside the quarantine" if state[0] == size else "changed since it was quarantined"
                log.warning("not purging %s: %s", place, reason)
                kept += 1
                continue
            if journal is None:
                journal = Journal("purge", journal_folder)
            journal.write({"op": "plan", "source": place, "size": size, "moved_from": source})
            place_fs, place_path = filesystem(place, storage_options)
            place_fs.rm_file(place_path)
            journal.write({"op": "done", "source": place})
            purged += 1
    if journal is not None:
        journal.close()
    return PurgeCounts(purged, kept, journal.path if journal else None)

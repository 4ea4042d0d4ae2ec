"""The stats document: difPy's structure and key order, plus dupflow's own figures under "dupflow"."""

from __future__ import annotations

import copy
import math
from datetime import datetime
from typing import Any

__all__ = ["build_stats", "duration", "json_number", "search_stats"]


def json_number(value: float) -> float | str:
    """A number as strict JSON can hold it: infinity becomes the string "inf" (JSON has no Infinity)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def duration(start: datetime, end: datetime) -> dict[str, Any]:
    """difPy's duration block: naive local ISO times and seconds rounded to 4 places."""
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "seconds_elapsed": round((end - start).total_seconds(), 4),
    }


def build_stats(
    directories: list[str],
    valid: int,
    invalid: dict[str, str],
    start: datetime,
    end: datetime,
    parameters: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The stats of a build, before any search."""
    return {
        "directory": list(directories),
        "total_files": valid + len(invalid),
        "invalid_files": {"count": len(invalid), "logs": dict(invalid)},
        "process": {"build": {"duration": duration(start, end), "parameters": dict(parameters)}},
        "dupflow": {"build": extra},
    }


def search_stats(
    build: dict[str, Any],
    start: datetime,
    end: datetime,
    parameters: dict[str, Any],
    files_searched: int,
    matches: dict[str, int],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A search's own copy of the stats: the build's, plus the search block (and its dupflow figures)."""
    stats = copy.deepcopy(build)
    ours = stats.pop("dupflow")
    stats["process"]["search"] = {
        "duration": duration(start, end),
        "parameters": dict(parameters),
        "files_searched": files_searched,
        "matches_found": dict(matches),
    }
    ours["search"] = extra
    stats["dupflow"] = ours
    return stats

"""The files a search leaves behind: difPy's three JSON files, a match table (CSV, Parquet), journal list.

Every run's files share one prefix, `dupflow_<timestamp>[_<k>]`, reserved by creating them exclusively: two
runs writing into one folder in the same second get distinct prefixes, and nothing is ever overwritten.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "FORMATS",
    "MATCH_COLUMNS",
    "FileFacts",
    "RunFiles",
    "file_facts",
    "named_paths",
    "find_run",
    "flat_groups",
    "folder_of",
    "human_bytes",
    "match_rows",
    "parse_formats",
    "reclaimable_bytes",
    "write_outputs",
]

FORMATS = ("json", "csv", "parquet")
MATCH_COLUMNS = ("primary", "match", "mse", "width", "height", "bytes", "folder")
RUN_NAME = re.compile(
    r"dupflow_(?P<stamp>\d{14})(?:_(?P<k>\d+))?_(?P<kind>results|lower_quality|stats|journals)\.json$"
)
MAX_PREFIXES = 10_000  # runs that may share one second in one folder


@dataclass(frozen=True)
class FileFacts:
    """What the tables and the report say about one file: original size in pixels, bytes, mtime."""

    width: int
    height: int
    bytes: int
    mtime: float  # POSIX seconds; nan when unknown


def file_facts(files: Any, images: Any, paths: Iterable[str]) -> dict[str, FileFacts]:
    """Facts of the decoded files among `paths`, by the path shown in results (`build.files`, `.images`):
    only the files a result names, since a million-file build's results name a few thousand."""
    wanted = pa.array(sorted(set(paths)), files.path.arrow.type)
    named = pc.is_in(files.path.arrow, value_set=wanted).to_numpy(zero_copy_only=False)
    positions = np.flatnonzero(named & (np.asarray(images.shard) >= 0))
    width, height, size, mtime = images.width, images.height, files.size, files.mtime
    return {
        path: FileFacts(int(width[k]), int(height[k]), int(size[k]), float(mtime[k]))
        for path, k in zip(files.path.take(positions), positions.tolist())
    }


def named_paths(result: Mapping[str, Any], lower_quality: Iterable[str]) -> set[str]:
    """Every path a result and its lower-quality list name: the files the tables and summary describe."""
    named = set(lower_quality)
    for primary, matches in flat_groups(result):
        named.add(primary)
        named.update(match for match, _ in matches)
    return named


def flat_groups(result: Mapping[str, Any]) -> list[tuple[str, list[list]]]:
    """[(primary, [[match, mse], ...]), ...] from a result, flattening in_folder's {input: {primary: ...}}."""
    groups = []
    for key, value in result.items():
        if isinstance(value, Mapping):
            groups.extend(value.items())
        else:
            groups.append((key, value))
    return groups


def folder_of(path: str) -> str:
    """The folder part of a result path or URL ("." for a bare name): the tables' and report's "folder"."""
    stripped = path.rstrip("/")
    return stripped.rsplit("/", 1)[0] if "/" in stripped else "."


def match_rows(result: Mapping[str, Any], facts: Mapping[str, FileFacts]) -> list[dict[str, Any]]:
    """One row per match: primary, match, mse, and the match's width, height, bytes and folder."""
    rows = []
    for primary, matches in flat_groups(result):
        for match, mse in matches:
            fact = facts.get(match)
            rows.append(
                {
                    "primary": primary,
                    "match": match,
                    "mse": float(mse),
                    "width": fact.width if fact else None,
                    "height": fact.height if fact else None,
                    "bytes": fact.bytes if fact else None,
                    "folder": folder_of(match),
                }
            )
    return rows


def reclaimable_bytes(lower_quality: Iterable[str], facts: Mapping[str, FileFacts]) -> int:
    """Bytes freed by removing every lower-quality file (files of unknown size count 0)."""
    return sum(facts[path].bytes for path in lower_quality if path in facts and facts[path].bytes > 0)


def parse_formats(text: str) -> tuple[str, ...]:
    """`--format json,csv,parquet` -> ("json", "csv", "parquet"); JSON (difPy's files) is always written."""
    asked = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [part for part in asked if part not in FORMATS]
    if unknown or not asked:
        raise ValueError(
            f"unknown output format {unknown[0] if unknown else text!r}: use a comma-separated list of "
            f"{', '.join(FORMATS)}"
        )
    return tuple(f for f in FORMATS if f == "json" or f in asked)


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload).encode("utf-8")


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MATCH_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("primary", pa.string()),
            ("match", pa.string()),
            ("mse", pa.float64()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("bytes", pa.int64()),
            ("folder", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@dataclass(frozen=True)
class RunFiles:
    """The files of one run in one folder: its reserved prefix and the names written."""

    folder: str
    prefix: str
    names: tuple[str, ...]

    def path(self, suffix: str) -> str:
        """The path of another file of this run (e.g. `_journals.json`)."""
        return os.path.join(self.folder, f"{self.prefix}{suffix}")


def _reserve(folder: str, stamp: str, suffixes: list[str]) -> tuple[str, list]:
    """Create every file of a run exclusively under the first free prefix; returns it and open handles."""
    for k in range(MAX_PREFIXES):
        prefix = f"dupflow_{stamp}" + (f"_{k}" if k else "")
        handles = []
        try:
            for suffix in suffixes:
                handles.append(open(os.path.join(folder, prefix + suffix), "xb"))
        except FileExistsError:  # taken by an earlier or a concurrent run: give back what we made, next
            for handle in handles:
                handle.close()
                os.unlink(handle.name)
            continue
        return prefix, handles
    raise FileExistsError(f"no free output name for dupflow_{stamp} in {folder}")


def write_outputs(
    folder: str,
    result: Mapping[str, Any],
    lower_quality: list[str],
    stats: Mapping[str, Any],
    rows: list[dict[str, Any]] | None = None,
    formats: tuple[str, ...] = ("json",),
    now: Callable[[], datetime] = datetime.now,
) -> RunFiles:
    """Write difPy's results/lower_quality/stats JSON, plus the match table as CSV and/or Parquet.

    Parameters
    ----------
    folder : str
        A local folder (created if missing).
    rows : list of dict, optional
        `match_rows(...)`; needed for "csv" and "parquet".
    formats : tuple of str
        Any of FORMATS; the three JSON files are always written.
    """
    os.makedirs(folder, exist_ok=True)
    payloads: dict[str, Callable[[], bytes]] = {
        "_results.json": lambda: _json_bytes(result),
        "_lower_quality.json": lambda: _json_bytes(lower_quality),
        "_stats.json": lambda: _json_bytes(stats),
    }
    if "csv" in formats:
        payloads["_matches.csv"] = lambda: _csv_bytes(rows or [])
    if "parquet" in formats:
        payloads["_matches.parquet"] = lambda: _parquet_bytes(rows or [])
    prefix, handles = _reserve(folder, now().strftime("%Y%m%d%H%M%S"), list(payloads))
    for handle, make in zip(handles, payloads.values()):
        with handle:
            handle.write(make())
    return RunFiles(folder, prefix, tuple(prefix + suffix for suffix in payloads))


def find_run(path: str) -> dict[str, str]:
    """The files of one run: from a `..._results.json` path, or the latest run in an output folder.

    Returns {"results": path, "stats": path, "lower_quality": path, "journals": path} (those present).
    """
    if os.path.isdir(path):
        runs: dict[tuple[str, int], dict[str, str]] = {}
        for name in os.listdir(path):
            match = RUN_NAME.match(name)
            if match:
                key = (match["stamp"], int(match["k"] or 0))
                runs.setdefault(key, {})[match["kind"]] = os.path.join(path, name)
        complete = [key for key, kinds in runs.items() if "results" in kinds]
        if not complete:
            raise FileNotFoundError(f'no dupflow results (dupflow_<timestamp>_results.json) in "{path}"')
        return runs[max(complete)]
    match = RUN_NAME.match(os.path.basename(path))
    if not match or match["kind"] != "results" or not os.path.isfile(path):
        raise FileNotFoundError(
            f'"{path}" is neither an output folder nor a dupflow_<timestamp>_results.json file'
        )
    folder = os.path.dirname(path) or "."
    prefix = os.path.basename(path)[: -len("_results.json")]
    found = {}
    for kind in ("results", "lower_quality", "stats", "journals"):
        candidate = os.path.join(folder, f"{prefix}_{kind}.json")
        if os.path.isfile(candidate):
            found[kind] = candidate
    return found


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (for summaries)."""
    if not math.isfinite(n):
        return "?"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"

"""Catalog upkeep: what a catalog holds (`info`), whether every shard is sound (`verify`), and giving space
back (`gc`, after Delta Lake's vacuum), each safe while other runs use the catalog.

`gc` removes shards that no index row references once they are older than a grace period (a running
build writes a shard, then its index file, moments later: a young unreferenced shard may be one of those),
and the index rows of files that have been absent (deleted, or changed) for a given time. Absence is
remembered between runs in a small ledger, so a file moved away and put back within that time keeps its
rows. Rows and ledger are rewritten under the namespace's maintenance claim, the one compaction takes.
"""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from . import verified
from .catalog import CatalogRef, default_root
from .sources import current_state, filesystem, is_remote, redact

__all__ = ["info", "verify", "gc", "GRACE_SECONDS", "ABSENT_SECONDS", "CatalogBusy"]

log = logging.getLogger("dupflow")

GRACE_SECONDS = 24 * 3600.0  # unreferenced shards younger than this may belong to a running build
ABSENT_SECONDS = 7 * 24 * 3600.0  # rows of files absent this long are dropped
CLAIM_WAIT_SECONDS = 60.0  # how long gc waits for a compaction or another gc to finish
STAT_THREADS = 32  # concurrent existence checks of remote files
LEDGER_SCHEMA = pa.schema(
    [("url", pa.string()), ("size", pa.int64()), ("stamp", pa.string()), ("since", pa.float64())]
)
NAMESPACE = re.compile(r"^v\d+-px(\d+)-")


class CatalogBusy(RuntimeError):
    """Another process holds the namespace's maintenance claim (compacting, or collecting garbage)."""


def namespaces(root: str | None = None, storage_options: dict | None = None) -> list[CatalogRef]:
    """Every namespace (px size, decode mode, Pillow version) under a catalog root, by name."""
    root = (root or default_root()).rstrip("/")
    options = storage_options or {}
    fs, base = filesystem(root, options)
    fs.invalidate_cache(base)
    try:
        entries = fs.ls(base, detail=True)
    except FileNotFoundError:
        raise FileNotFoundError(f'Catalog "{redact(root)}" does not exist') from None
    names = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory")
    return [CatalogRef(f"{root}/{name}", options) for name in names if NAMESPACE.match(name)]


def _listing(ref: CatalogRef, folder: str) -> dict[str, dict]:
    """{file name: fsspec info} of one folder of a namespace (hidden temporaries included)."""
    fs, base = ref.fs()
    fs.invalidate_cache(f"{base}/{folder}")
    try:
        return {e["name"].rsplit("/", 1)[-1]: e for e in fs.ls(f"{base}/{folder}", detail=True)}
    except FileNotFoundError:
        return {}


def _written_at(name: str, entry: dict) -> float:
    """When a catalog file was written, POSIX seconds: from its name (time-ordered), else its mtime."""
    stem = name.removeprefix(".tmp-")
    if re.match(r"^\d{20}-", stem):
        return int(stem[:20]) / 1e9
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = entry.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0  # unknown: treated as old


def _px(ref: CatalogRef) -> int:
    return int(NAMESPACE.match(ref.url.rsplit("/", 1)[-1]).group(1))


def info(root: str | None = None, storage_options: dict | None = None) -> dict:
    """What a catalog holds, per namespace: shards and bytes, index files and rows, files, failures.

    Parameters
    ----------
    root : str, optional
        The catalog (a folder or fsspec URL); default: the user's cache (`~/.cache/dupflow/catalog`).
    storage_options : dict, optional
        Passed to fsspec.

    Returns
    -------
    dict
        ``{"catalog", "namespaces": [{"name", "shards", "shard_bytes", "unreferenced_shards",
        "index_files", "index_bytes", "rows", "files", "failures"}], "shards", "bytes"}``.
    """
    out = []
    for ref in namespaces(root, storage_options):
        shards = {n: e for n, e in _listing(ref, "shards").items() if not n.startswith(".")}
        indexes = {n: e for n, e in _listing(ref, "index").items() if not n.startswith(".")}
        index = ref.read_index()
        referenced = set(index.column("shard").drop_null().to_pylist())
        out.append(
            {
                "name": ref.url.rsplit("/", 1)[-1],
                "shards": len(shards),
                "shard_bytes": sum(int(e.get("size") or 0) for e in shards.values()),
                "unreferenced_shards": len(set(shards) - referenced),
                "index_files": len(indexes),
                "index_bytes": sum(int(e.get("size") or 0) for e in indexes.values()),
                "rows": index.num_rows,
                "files": len(set(index.column("url").to_pylist())),
                "failures": index.column("shard").null_count,
            }
        )
    return {
        "catalog": redact((root or default_root()).rstrip("/")),
        "namespaces": out,
        "shards": sum(n["shards"] for n in out),
        "bytes": sum(n["shard_bytes"] + n["index_bytes"] for n in out),
    }


def verify(root: str | None = None, storage_options: dict | None = None, set_aside: bool = False) -> dict:
    """Read every shard whole and check it: page checksums, its schema, and the files its index rows name.

    Sound local shards are marked verified (`dupflow.verified`): builds then need not read them whole.

    Parameters
    ----------
    root, storage_options
        As for `info`.
    set_aside : bool
        Remove the shards proven damaged or foreign (the next build decodes their images again).
        Shards that cannot be read now (an I/O error) are only reported.

    Returns
    -------
    dict
        ``{"catalog", "shards", "sound", "damaged": {name: reason}, "unreadable": {name: reason},
        "missing": [shards the index names that do not exist], "set_aside": [names]}``, names as
        ``namespace/shard``.
    """
    report: dict = {"catalog": redact((root or default_root()).rstrip("/")), "shards": 0, "sound": 0}
    report.update(damaged={}, unreadable={}, missing=[], set_aside=[])
    for ref in namespaces(root, storage_options):
        space = ref.url.rsplit("/", 1)[-1]
        index = ref.read_index()
        rows_of: dict[str, tuple[list[int], list[str]]] = {}
        for shard, row, url in zip(
            index.column("shard").to_pylist(),
            index.column("row").to_pylist(),
            index.column("url").to_pylist(),
        ):
            if shard is not None:
                rows_of.setdefault(shard, ([], []))[0].append(row)
                rows_of[shard][1].append(url)
        present = [n for n in _listing(ref, "shards") if not n.startswith(".")]
        report["missing"] += [f"{space}/{s}" for s in sorted(set(rows_of) - set(present))]
        states, sound = verified.shard_states(ref), {}  # states before reading: a later write shows
        for shard in sorted(present):
            report["shards"] += 1
            rows, urls = rows_of.get(shard, ([], []))
            try:
                proof = ref.verify_shard(shard, rows, urls, 3 * _px(ref) ** 2)
            except OSError as exc:
                report["unreadable"][f"{space}/{shard}"] = str(exc)
                continue
            if proof is None:
                report["sound"] += 1
                if shard in states:
                    sound[shard] = (states[shard], verified.rows_digest(rows, urls))
                continue
            report["damaged"][f"{space}/{shard}"] = proof
            if set_aside:
                fs, base = ref.fs()
                fs.rm_file(f"{base}/shards/{shard}")
                report["set_aside"].append(f"{space}/{shard}")
        verified.remember(ref, sound, states)  # builds need not read these shards whole again
    return report


def _current_keys(keys: list[tuple[str, int, str]], storage_options: dict) -> set[tuple[str, int, str]]:
    """Those (url, size, stamp) that still describe the file at url now (local stats; remote HEADs)."""

    def present(key: tuple[str, int, str]) -> bool:
        state = current_state(key[0], storage_options)
        return state is not None and state == (key[1], key[2])

    remote = [k for k in keys if is_remote(k[0])]
    found = {k for k in keys if not is_remote(k[0]) and present(k)}
    if remote:
        with ThreadPoolExecutor(STAT_THREADS) as pool:
            found |= {k for k, ok in zip(remote, pool.map(present, remote)) if ok}
    return found


def _read_ledger(ref: CatalogRef) -> tuple[dict[tuple[str, int, str], float], list[str]]:
    """{(url, size, stamp): first seen absent} from the newest ledger file, and every ledger file's path."""
    fs, base = ref.fs()
    names = sorted(n for n in _listing(ref, "absent") if n.endswith(".parquet") and not n.startswith("."))
    paths = [f"{base}/absent/{n}" for n in names]
    for path in reversed(paths):
        try:
            with fs.open(path, "rb") as handle:
                table = pq.read_table(handle).cast(LEDGER_SCHEMA)
        except Exception:  # damaged or foreign: an older ledger, else none (absence restarts)
            continue
        rows = zip(*(table.column(c).to_pylist() for c in ("url", "size", "stamp", "since")))
        return {(u, s, t): since for u, s, t, since in rows}, paths
    return {}, paths


def gc(
    root: str | None = None,
    storage_options: dict | None = None,
    grace: float = GRACE_SECONDS,
    absent_for: float = ABSENT_SECONDS,
    dry_run: bool = False,
) -> dict:
    """Give space back: drop index rows of files absent for `absent_for` seconds, then remove shards and
    leftover temporaries no index references once older than `grace` seconds.

    Safe while builds and searches use the catalog: rows of files still present are kept, a shard any
    index file references (including files written meanwhile) is kept, and young shards are kept.

    Parameters
    ----------
    root, storage_options
        As for `info`.
    grace : float
        Seconds an unreferenced shard must have existed before it is removed (default one day); it must
        exceed the longest a build takes to decode one partition.
    absent_for : float
        Seconds a file must have been absent or changed, as seen by successive gc runs, before its rows
        go (default seven days; 0 drops them at once).
    dry_run : bool
        Report what would go, remove nothing.

    Returns
    -------
    dict
        ``{"catalog", "rows_removed", "files_absent", "files_dropped", "shards_removed", "bytes_freed",
        "temporaries_removed", "dry_run"}``.

    Raises
    ------
    CatalogBusy
        When another process kept the maintenance claim for over a minute.
    """
    if grace < 0 or absent_for < 0:
        raise ValueError(f"grace and absent_for must be seconds >= 0, got {grace} and {absent_for}")
    report = {"catalog": redact((root or default_root()).rstrip("/")), "dry_run": dry_run}
    report.update(rows_removed=0, files_absent=0, files_dropped=0, shards_removed=0, bytes_freed=0)
    report["temporaries_removed"] = 0
    for ref in namespaces(root, storage_options):
        with ref.maintenance_claim(wait=CLAIM_WAIT_SECONDS) as held:
            if not held:
                raise CatalogBusy(
                    f'catalog "{redact(ref.url)}" is being compacted or collected by another run'
                )
            _drop_absent_rows(ref, storage_options or {}, absent_for, dry_run, report)
            _remove_unreferenced(ref, grace, dry_run, report)
    return report


def _drop_absent_rows(ref: CatalogRef, options: dict, absent_for: float, dry_run: bool, report: dict) -> None:
    """Rewrite the index without rows of files absent long enough, and the ledger of absent files."""
    now = time.time()
    names = ref.index_files()
    tables, read, _ = ref.read_index_files(names)
    index = pa.concat_tables(tables) if tables else None
    if index is None or index.num_rows == 0:
        return
    keys = list(dict.fromkeys(zip(*(index.column(c).to_pylist() for c in ("url", "size", "stamp")))))
    current = _current_keys(keys, options)
    ledger, ledger_paths = _read_ledger(ref)
    absent = {k: ledger.get(k, now) for k in keys if k not in current}
    dropped = {k for k, since in absent.items() if now - since >= absent_for}
    shards = set(_listing(ref, "shards"))
    keep = [
        key not in dropped and (shard is None or shard in shards)
        for key, shard in zip(
            zip(*(index.column(c).to_pylist() for c in ("url", "size", "stamp"))),
            index.column("shard").to_pylist(),
        )
    ]
    kept = index.filter(pa.array(keep))
    report["files_absent"] += len(absent)
    report["files_dropped"] += len(dropped)
    report["rows_removed"] += index.num_rows - kept.num_rows
    if dry_run:
        return
    if kept.num_rows < index.num_rows or len(read) > 1:
        ref.replace_index([kept], read)
    waiting = {k: since for k, since in absent.items() if k not in dropped}
    if waiting or ledger_paths:
        table = pa.Table.from_pylist(
            [{"url": u, "size": s, "stamp": t, "since": since} for (u, s, t), since in waiting.items()],
            schema=LEDGER_SCHEMA,
        )
        ref.write_file("absent", table)
        fs, _ = ref.fs()
        for path in ledger_paths:
            fs.rm_file(path)


def _remove_unreferenced(ref: CatalogRef, grace: float, dry_run: bool, report: dict) -> None:
    """Remove shards no index file references (read after the rewrite, so a run's new files count) and
    temporaries left by killed runs, once older than the grace period."""
    now = time.time()
    shards = _listing(ref, "shards")
    referenced = set(ref.read_index().column("shard").drop_null().to_pylist())
    fs, base = ref.fs()
    doomed = [
        (f"{base}/shards/{name}", entry, name.startswith("."))
        for name, entry in shards.items()
        if name not in referenced and now - _written_at(name, entry) >= grace
    ]
    doomed += [
        (f"{base}/{folder}/{name}", entry, True)
        for folder in ("index", "absent")
        for name, entry in _listing(ref, folder).items()
        if name.startswith(".tmp-") and now - _written_at(name, entry) >= grace
    ]
    for path, entry, temporary in doomed:
        if not dry_run:
            try:
                fs.rm_file(path)
            except FileNotFoundError:
                continue
        report["temporaries_removed" if temporary else "shards_removed"] += 1
        report["bytes_freed"] += int(entry.get("size") or 0)

"""Which local shards a build need not read whole again: marks of shards already verified, by file state.

A build reads every local shard it reuses whole and checks its page checksums and its rows (see
`CatalogRef.verify_shard`); so does `dupflow catalog verify`. Once a shard passed, its state is remembered
in the catalog namespace (`<namespace>/verified/<time>-<uuid>.parquet`: shard name and state). The state
is the shard file's size, mtime_ns, ctime_ns and inode: any write to the file changes its ctime, which no
one can set back, so bytes changed after verification (even with size and mtime restored, or the file
replaced by another) give another state and the shard is read and checked whole again. A marked shard
in its marked state has only its url column read (checksummed), to check the rows a build reuses.

The marks are a cache: losing one costs a read, never trust, and a shard is still set aside only on proof
of damage. Only local catalogs have marks (on object stores shards are checked as the search reads them);
shards a build has just written are verified by the next build that reuses them.
"""

from __future__ import annotations

import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .catalog import CatalogRef

__all__ = ["shard_states", "read_marks", "remember", "rows_match", "FOLDER", "MOST_FILES"]

log = logging.getLogger("dupflow")

FOLDER = "verified"
MOST_FILES = 16  # mark files merged into one above this many
SCHEMA = pa.schema([("shard", pa.string()), ("state", pa.string())])


def _local_base(catalog: CatalogRef) -> str | None:
    """The namespace's folder when the catalog is on the local filesystem, else None."""
    fs, base = catalog.fs()
    return base if isinstance(fs, LocalFileSystem) else None


def shard_states(catalog: CatalogRef) -> dict[str, str]:
    """{shard name: "size:mtime_ns:ctime_ns:inode"} of the local catalog's shards, from one folder scan
    ({} on other filesystems)."""
    base = _local_base(catalog)
    if base is None:
        return {}
    states = {}
    try:
        entries = list(os.scandir(f"{base}/shards"))
    except FileNotFoundError:
        return {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(".parquet"):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        states[entry.name] = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    return states


def _mark_files(base: str) -> list[str]:
    try:
        names = sorted(os.listdir(f"{base}/{FOLDER}"))
    except FileNotFoundError:
        return []
    return [f"{base}/{FOLDER}/{n}" for n in names if n.endswith(".parquet") and not n.startswith(".")]


def read_marks(catalog: CatalogRef) -> dict[str, str]:
    """{shard name: its state when verified}, the newest mark of each shard (damaged mark files ignored)."""
    base = _local_base(catalog)
    marks: dict[str, str] = {}
    for path in _mark_files(base) if base else []:
        try:
            table = pq.read_table(path)
            marks.update(zip(table.column("shard").to_pylist(), table.column("state").to_pylist()))
        except (
            Exception
        ):  # gone meanwhile (merged by another build), or not a mark file: marks only save reads
            continue
    return marks


def remember(catalog: CatalogRef, fresh: dict[str, str], states: dict[str, str]) -> None:
    """Record newly verified shards (name: state seen before reading them); merge the mark files into
    one, keeping only marks that still match their shard, once there are more than MOST_FILES."""
    base = _local_base(catalog)
    if base is None or not fresh:
        return
    try:
        catalog.write_file(FOLDER, _table(fresh))
        old = _mark_files(base)
        if len(old) > MOST_FILES:
            current = {
                name: state for name, state in read_marks(catalog).items() if states.get(name) == state
            }
            catalog.write_file(FOLDER, _table({**current, **fresh}))
            for path in old:
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
    except OSError as exc:  # a read-only catalog still answers; it just reads its shards every time
        log.info("cannot record verified shards in %s: %s", catalog.url, exc)


def _table(marks: dict[str, str]) -> pa.Table:
    return pa.table({"shard": list(marks), "state": list(marks.values())}, schema=SCHEMA)


def rows_match(catalog: CatalogRef, shard: str, rows: list[int], urls: list[str]) -> bool:
    """True if the shard holds these urls at these rows, reading only its url column (checksummed).
    False on any doubt (unreadable, damaged, other urls): the caller then verifies the shard whole."""
    fs, base = catalog.fs()
    try:
        with fs.open(f"{base}/shards/{shard}", "rb") as handle:
            parquet = pq.ParquetFile(handle, page_checksum_verification=True)
            stored = parquet.read(columns=["url"]).column("url").to_pylist()
    except Exception:  # whatever it is, the whole check decides (and says why)
        return False
    return all(0 <= r < len(stored) and stored[r] == u for r, u in zip(rows, urls))

"""Which local shards a build need not read whole again: marks of shards already verified, by file state.

A build reads every local shard it reuses whole and checks its page checksums and its rows (see
`CatalogRef.verify_shard`); so does `dupflow catalog verify`. Once a shard passed, its state is remembered
in the catalog namespace (`<namespace>/verified/<time>-<uuid>.parquet`: shard name and state). The state
is the shard file's size, mtime_ns, ctime_ns and inode: any write to the file changes its ctime, which no
one can set back, so bytes changed after verification (even with size and mtime restored, or the file
replaced by another) give another state and the shard is read and checked whole again.

A mark also holds a digest of the (row, url) pairs checked against the shard. A build that reuses exactly
those rows of a shard in its marked state reads nothing of it; one that reuses other rows (a file of it
deleted or changed) reads only its url column (checksummed) to check them, and marks the new set.

The marks are a cache: losing one costs a read, never trust, and a shard is still set aside only on proof
of damage. Only local catalogs have marks (on object stores shards are checked as the search reads them);
shards a build has just written are verified by the next build that reuses them.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .catalog import CatalogRef

__all__ = [
    "shard_states",
    "read_marks",
    "remember",
    "rows_digest",
    "rows_match",
    "Mark",
    "FOLDER",
    "MOST_FILES",
]

log = logging.getLogger("dupflow")

FOLDER = "verified"
MOST_FILES = 16  # mark files merged into one above this many
SCHEMA = pa.schema([("shard", pa.string()), ("state", pa.string()), ("rows", pa.string())])
Mark = tuple[str, str]  # (the shard file's state, rows_digest of the pairs checked) when it was verified


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


def rows_digest(rows: list[int], urls: list[str]) -> str:
    """A digest of (row, url) pairs, whatever their order."""
    order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
    digest = hashlib.blake2b(np.asarray(rows, dtype=np.int64)[order].tobytes(), digest_size=16)
    for k in order.tolist():
        digest.update(urls[k].encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def _mark_files(base: str) -> list[str]:
    try:
        names = sorted(os.listdir(f"{base}/{FOLDER}"))
    except FileNotFoundError:
        return []
    return [f"{base}/{FOLDER}/{n}" for n in names if n.endswith(".parquet") and not n.startswith(".")]


def read_marks(catalog: CatalogRef) -> dict[str, Mark]:
    """{shard name: its Mark}, the newest mark of each shard (damaged or foreign mark files ignored)."""
    base = _local_base(catalog)
    marks: dict[str, Mark] = {}
    for path in _mark_files(base) if base else []:
        try:
            table = pq.read_table(path, schema=SCHEMA)
            shards, states, rows = (table.column(c).to_pylist() for c in SCHEMA.names)
        except Exception:  # merged away meanwhile, or not a mark file: marks only save reads
            continue
        marks.update((name, (state, digest)) for name, state, digest in zip(shards, states, rows))
    return marks


def remember(catalog: CatalogRef, fresh: dict[str, Mark], states: dict[str, str]) -> None:
    """Record newly verified shards (name: Mark, with the state seen before reading them); merge the mark
    files into one, keeping only marks that still match their shard, once there are more than MOST_FILES."""
    base = _local_base(catalog)
    if base is None or not fresh:
        return
    try:
        catalog.write_file(FOLDER, _table(fresh))
        old = _mark_files(base)
        if len(old) > MOST_FILES:
            marks = read_marks(catalog).items()
            current = {name: mark for name, mark in marks if states.get(name) == mark[0]}
            catalog.write_file(FOLDER, _table({**current, **fresh}))
            for path in old:
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
    except OSError as exc:  # a read-only catalog still answers; it just reads its shards every time
        log.info("cannot record verified shards in %s: %s", catalog.url, exc)


def _table(marks: dict[str, Mark]) -> pa.Table:
    states, rows = zip(*marks.values())
    return pa.table({"shard": list(marks), "state": list(states), "rows": list(rows)}, schema=SCHEMA)


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

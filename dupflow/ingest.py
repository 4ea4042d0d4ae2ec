"""Stage 2: a Dask bag reads and decodes the files that the catalog lacks, one shard per partition."""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
from dataclasses import dataclass
from typing import Callable

import dask.bag as db
import numpy as np
import pyarrow as pa

from . import kernels
from .catalog import INDEX_SCHEMA, CatalogRef
from .cluster import Engine
from .decode import decode_image, error_message
from .sources import Listing, filesystem, under_roots

log = logging.getLogger("dupflow")

SHARD_FILES = 1024  # files per decode partition (one shard each)
READ_BATCH = 16  # files fetched per request round within a partition


@dataclass
class Decoded:
    """Per listed file (in listing order): where its tensor lives, its size, or why it has none."""

    shard: list[str | None]
    row: np.ndarray
    width: np.ndarray
    height: np.ndarray
    error: list[str | None]
    hash: list[bytes | None]  # of the tensor as decoded
    hash_turned: list[
        bytes | None
    ]  # the least hash over its four quarter turns: equal iff some turn is equal
    sums: np.ndarray  # per-channel sums of the tensor (n x 3 int64)
    decoded: int
    reused: int
    removed: int

    def replace(self, positions: list[int], fresh: Decoded) -> None:
        """Take the rows of `fresh` (decoded for exactly these positions, in order) in their place."""
        for k, i in enumerate(positions):
            self.shard[i], self.error[i] = fresh.shard[k], fresh.error[k]
            self.hash[i], self.hash_turned[i] = fresh.hash[k], fresh.hash_turned[k]
            self.row[i], self.width[i], self.height[i] = fresh.row[k], fresh.width[k], fresh.height[k]
            self.sums[i] = fresh.sums[k]


def _read_batch(urls: list[str], storage_options: dict) -> dict[str, bytes | BaseException]:
    """Fetch several files in one round: one `cat_ranges` call per filesystem, which async filesystems
    (s3fs, gcsfs, ...) run concurrently. Each file gets its bytes or its own error; one bad file, or
    one filesystem that cannot be opened, never fails the others.

    cat_ranges takes paths literally: a name like `a[1].png` is a file, not a glob pattern.
    """
    by_fs: dict[int, tuple] = {}
    out: dict[str, bytes | BaseException] = {}
    for url in urls:
        try:
            fs, path = filesystem(url, storage_options)
        except Exception as exc:  # unknown protocol, missing driver, bad options: this file's error
            out[url] = exc
            continue
        by_fs.setdefault(id(fs), (fs, []))[1].append((path, url))
    for fs, items in by_fs.values():
        paths = [path for path, _ in items]
        try:
            got = fs.cat_ranges(paths, None, None, on_error="return", **_one_request_each(fs))
        except Exception as exc:  # the whole round failed: report it on each file
            got = [exc] * len(paths)
        for (_, url), data in zip(items, got):
            out[url] = _missing(url) if isinstance(data, FileNotFoundError) else data
    return out


def _one_request_each(fs) -> dict:
    """Options for one plain GET per file: s3fs otherwise asks each object's size first (a HEAD) to split
    big objects into parallel ranged reads; images are small, and the batch already runs concurrently."""
    try:
        accepts = inspect.signature(getattr(fs, "_cat_file", fs.cat_file)).parameters
    except (TypeError, ValueError):
        return {}
    return {"max_concurrency": 1} if "max_concurrency" in accepts else {}


def _missing(url: str) -> FileNotFoundError:
    """A clear reason for a listed file that cannot be found when read (drivers often give the bare path)."""
    if url.startswith("memory://"):
        return FileNotFoundError(
            "File not found by the Dask worker: memory:// files exist only in the process "
            "that wrote them (use a threaded scheduler, or real storage)"
        )
    return FileNotFoundError("File not found: deleted or moved after it was listed")


def _decode_partition(
    items: list[tuple[str, int, str]], catalog: CatalogRef, storage_options: dict, px_size: int, mode: str
) -> list[dict]:
    """Decode one partition, store its tensors as one shard; return its index rows (failures included)."""
    rows: list[dict] = []
    tensors: list[np.ndarray] = []
    ok_urls: list[str] = []
    for start in range(0, len(items), READ_BATCH):
        batch = items[start : start + READ_BATCH]
        fetched = _read_batch([url for url, _, _ in batch], storage_options)
        for url, size, stamp in batch:
            data = fetched[url]
            row = {
                "url": url,
                "size": size,
                "stamp": stamp,
                "shard": None,
                "row": None,
                "width": None,
                "height": None,
                "hash": None,
                "hash_turned": None,
                "sum_r": None,
                "sum_g": None,
                "sum_b": None,
                "error": None,
                "cache": True,
            }
            if isinstance(data, BaseException):
                row["error"], row["cache"] = error_message(data), False
            else:
                try:
                    tensor, width, height = decode_image(data, px_size, mode)
                except Exception as exc:  # anything a file contains is a row, never a crash
                    row["error"] = error_message(exc)
                else:
                    row.update(row=len(tensors), width=width, height=height)
                    tensors.append(tensor.reshape(-1))
                    ok_urls.append(url)
            rows.append(row)
    if tensors:
        block = np.stack(tensors)
        grids = kernels.grid_sums(block, px_size, kernels.grid_edges(px_size))
        shard = catalog.write_shard(ok_urls, block, grids)
        summaries = summarize(block, px_size, grids)
        for row in rows:
            if row["row"] is not None:
                row.update(shard=shard, **summaries[row["row"]])
    return rows


def summarize(block: np.ndarray, px: int, grids: np.ndarray) -> list[dict]:
    """What the search plans with, per tensor: content hashes (plain, and the least over its four quarter
    turns, equal for two tensors iff some turn makes them equal) and its channel sums (from its grid)."""
    turned = [block] + [
        np.ascontiguousarray(t).reshape(len(block), -1) for t in kernels.rotations(block, px, True)[1:]
    ]
    sums = grids.sum(axis=(1, 2)).astype(np.int64)

    def digest(row: np.ndarray) -> bytes:
        return hashlib.blake2b(row.data, digest_size=16).digest()

    out = []
    for k in range(len(block)):
        hashes = [digest(form[k]) for form in turned]
        out.append(
            {
                "hash": hashes[0],
                "hash_turned": min(hashes),
                "sum_r": int(sums[k, 0]),
                "sum_g": int(sums[k, 1]),
                "sum_b": int(sums[k, 2]),
            }
        )
    return out


def _reusable(index: pa.Table, listing: Listing) -> dict[tuple[str, int, str], list[dict]]:
    """Index rows matching a listed file's (url, size, stamp) exactly, newest first (never without a stamp)."""
    if index.num_rows == 0:
        return {}
    wanted = set(zip(listing.url, listing.size, listing.stamp))
    keys = zip(
        index.column("url").to_pylist(), index.column("size").to_pylist(), index.column("stamp").to_pylist()
    )
    hits = [(k, key) for k, key in enumerate(keys) if key in wanted and key[2]]
    found: dict[tuple[str, int, str], list[dict]] = {}
    if hits:
        for (_, key), row in zip(reversed(hits), reversed(index.take([k for k, _ in hits]).to_pylist())):
            found.setdefault(key, []).append(row)
    return found


def _trusted(
    candidates: dict[tuple[str, int, str], list[dict]], catalog: CatalogRef, px_size: int
) -> dict[tuple[str, int, str], dict]:
    """For each file, its newest index row whose shard can be trusted; files with none decode again.

    Local shards are read whole and checksummed here. On object stores, where that would download the
    whole catalog on every run, one listing checks they exist; pages are checksummed as the search reads
    them, and a damaged shard is then set aside and its images decoded again (see api.search).
    """
    present = catalog.shard_names() if catalog.on_object_store else None
    verdict: dict[str, bool] = {}
    chosen: dict[tuple[str, int, str], dict] = {}
    pending = {key: list(rows) for key, rows in candidates.items()}
    while pending:
        by_shard: dict[str, list[tuple[str, int, str]]] = {}
        for key, rows in pending.items():
            if rows[0]["shard"] is None:  # a cached decode failure: nothing to verify
                chosen[key] = rows[0]
            else:
                by_shard.setdefault(rows[0]["shard"], []).append(key)
        for shard, keys in by_shard.items():
            if shard not in verdict:
                verdict[shard] = (
                    shard in present
                    if present is not None
                    else catalog.check_shard(
                        shard,
                        [pending[k][0]["row"] for k in keys],
                        [k[0] for k in keys],
                        3 * px_size * px_size,
                    )
                )
                if not verdict[shard]:
                    log.warning("catalog shard %s is missing, damaged or foreign: not reused", shard)
            for key in keys:
                if verdict[shard]:
                    chosen[key] = pending[key][0]
        pending = {key: rows[1:] for key, rows in pending.items() if key not in chosen and len(rows) > 1}
    return chosen


def _removed(index: pa.Table, listing: Listing) -> int:
    """Files the catalog saw under the searched inputs that are no longer listed."""
    listed = set(listing.url)
    gone = {url for url in set(index.column("url").to_pylist()) - listed if under_roots(url, listing.roots)}
    return len(gone)


def ingest(
    listing: Listing,
    catalog: CatalogRef,
    storage_options: dict,
    px_size: int,
    mode: str,
    engine: Callable[[int], Engine],
    show_progress: bool,
) -> Decoded:
    """Make sure every listed file has a catalog row; decode only what is new or changed."""
    index = catalog.read_index()
    reuse = _trusted(_reusable(index, listing), catalog, px_size)
    todo = [(u, s, t) for u, s, t in zip(listing.url, listing.size, listing.stamp) if (u, s, t) not in reuse]
    fresh: dict[str, dict] = {}
    if todo:
        cluster = engine(len(todo))
        parts = max(math.ceil(len(todo) / SHARD_FILES), min(len(todo), 4 * cluster.workers))
        bag = db.from_sequence(todo, npartitions=parts).map_partitions(
            _decode_partition, catalog, storage_options, px_size, mode
        )
        for part in cluster.run(bag.to_delayed(), "dupflow decoding", show_progress):
            for row in part:
                fresh[row["url"]] = row
        cached = [{k: v for k, v in row.items() if k != "cache"} for row in fresh.values() if row["cache"]]
        if cached:
            catalog.write_index(pa.Table.from_pylist(cached, schema=INDEX_SCHEMA))
            catalog.compact_index()
    n = len(listing)
    out = Decoded(
        [None] * n,
        np.full(n, -1, np.int64),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
        [None] * n,
        [None] * n,
        [None] * n,
        np.zeros((n, 3), np.int64),
        decoded=len(todo),
        reused=n - len(todo),
        removed=_removed(index, listing),
    )
    for i, key in enumerate(zip(listing.url, listing.size, listing.stamp)):
        row = reuse.get(key) or fresh[key[0]]
        if row["error"] is not None:
            out.error[i] = row["error"]
            log.warning("skipping %s: %s", listing.path[i], row["error"])
            continue
        out.shard[i], out.row[i] = row["shard"], row["row"]
        out.width[i], out.height[i] = row["width"], row["height"]
        out.hash[i], out.hash_turned[i] = row["hash"], row["hash_turned"]
        out.sums[i] = (row["sum_r"], row["sum_g"], row["sum_b"])
    return out

"""Which catalog rows a build may reuse: an exact (url, size, stamp) match, newest first, from a trusted shard."""

from __future__ import annotations

import logging

import pyarrow as pa

from .catalog import CatalogRef
from .decode import DecoderSettings
from .kernels import tensor_values
from .sources import Listing, under_roots

__all__ = ["reusable_rows", "trusted_rows", "removed_count"]

log = logging.getLogger("dupflow")

Key = tuple[str, int, str]


def reusable_rows(index: pa.Table, listing: Listing) -> dict[Key, list[dict]]:
    """Index rows matching a listed file's (url, size, stamp) exactly, newest first (never without a stamp)."""
    if index.num_rows == 0:
        return {}
    wanted = set(zip(listing.url, listing.size, listing.stamp))
    keys = zip(
        index.column("url").to_pylist(), index.column("size").to_pylist(), index.column("stamp").to_pylist()
    )
    hits = [(k, key) for k, key in enumerate(keys) if key in wanted and key[2]]
    found: dict[Key, list[dict]] = {}
    if hits:
        for (_, key), row in zip(reversed(hits), reversed(index.take([k for k, _ in hits]).to_pylist())):
            found.setdefault(key, []).append(row)
    return found


def trusted_rows(
    candidates: dict[Key, list[dict]], catalog: CatalogRef, px_size: int, settings: DecoderSettings
) -> dict[Key, dict]:
    """For each file, its newest index row whose shard can be trusted; files with none decode again.

    Rows hold under the decoder settings: a recorded failure only under those it happened under (raising
    the pixel limit or installing a plugin retries the file), a decoded image only within the pixel limit.

    Local shards are read whole and checksummed here. On object stores, where that would download the
    whole catalog on every run, one listing checks they exist; pages are checksummed as the search reads
    them, and a damaged shard is then set aside and its images decoded again (see api.search).
    """
    present = catalog.shard_names() if catalog.on_object_store else None
    decoder, limit = settings.key, settings.max_pixels
    verdict: dict[str, bool] = {}
    chosen: dict[Key, dict] = {}
    pending = {key: list(rows) for key, rows in candidates.items()}
    while pending:
        by_shard: dict[str, list[Key]] = {}
        for key, rows in pending.items():
            if rows[0]["shard"] is None:  # a recorded decode failure: no shard to verify
                if rows[0]["decoder"] == decoder:
                    chosen[key] = rows[0]
            elif not limit or rows[0]["width"] * rows[0]["height"] <= limit:
                by_shard.setdefault(rows[0]["shard"], []).append(key)
        for shard, keys in by_shard.items():
            if shard not in verdict:
                if present is not None:
                    verdict[shard] = shard in present
                else:
                    rows = [pending[k][0]["row"] for k in keys]
                    verdict[shard] = catalog.check_shard(
                        shard, rows, [k[0] for k in keys], tensor_values(px_size)
                    )
                if not verdict[shard]:
                    log.warning("catalog shard %s is missing, damaged or foreign: not reused", shard)
            for key in keys:
                if verdict[shard]:
                    chosen[key] = pending[key][0]
        pending = {key: rows[1:] for key, rows in pending.items() if key not in chosen and len(rows) > 1}
    return chosen


def removed_count(index: pa.Table, listing: Listing) -> int:
    """Files the catalog saw under the searched inputs that are no longer listed."""
    listed = set(listing.url)
    gone = {url for url in set(index.column("url").to_pylist()) - listed if under_roots(url, listing.roots)}
    return len(gone)

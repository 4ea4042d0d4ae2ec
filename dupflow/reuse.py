"""Which catalog rows a build may reuse: an exact (url, size, stamp) match, newest first, from a trusted shard.

Worked out over columns (an Arrow join, then NumPy): no Python object per file or per index row, so a
million listed files cost tens of megabytes here.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import verified
from .catalog import CatalogRef
from .decode import DecoderSettings
from .kernels import tensor_values
from .sources import Listing, under_roots

__all__ = ["candidates", "chosen_rows", "removed_count"]

log = logging.getLogger("dupflow")

KEYS = ["url", "size", "stamp"]


def _as_large(table: pa.Table) -> pa.Table:
    """The key columns with large_string text, so index and listing keys join as one type."""
    types = {f.name: pa.int64() if f.name == "size" else pa.large_string() for f in table.schema}
    return table.cast(pa.schema(list(types.items())))


def candidates(index: pa.Table, listing: Listing) -> tuple[np.ndarray, np.ndarray]:
    """(listing position, index row) of every index row matching a listed file's (url, size, stamp)
    exactly (never without a stamp), ordered by position and, within one, newest row (last written) first."""
    empty = np.zeros(0, np.int64)
    if index.num_rows == 0 or len(listing) == 0:
        return empty, empty
    keyed = _as_large(index.select(KEYS)).append_column("_row", pa.array(np.arange(index.num_rows)))
    stamp = keyed.column("stamp")
    keyed = keyed.filter(pc.fill_null(pc.not_equal(stamp, ""), False))
    listed = _as_large(listing.keys()).append_column("_position", pa.array(np.arange(len(listing))))
    joined = keyed.join(listed, keys=KEYS, join_type="inner", use_threads=False)
    position = joined.column("_position").to_numpy()
    row = joined.column("_row").to_numpy()
    order = np.lexsort((-row, position))
    return position[order], row[order]


def _firsts(position: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Per position, the first candidate still alive (candidates sorted by position)."""
    live = np.flatnonzero(alive)
    at = position[live]
    return live[np.r_[True, at[1:] != at[:-1]]] if len(live) else live


def chosen_rows(
    index: pa.Table, listing: Listing, catalog: CatalogRef, px_size: int, settings: DecoderSettings
) -> np.ndarray:
    """Per listed file, the index row to reuse (its newest whose shard can be trusted), or -1: decode it.

    Rows hold under the decoder settings: a recorded failure only under those it happened under (raising
    the pixel limit or installing a plugin retries the file), a decoded image only within the pixel limit.

    Local shards are read whole and checksummed, unless the catalog marks them verified whole in their
    present state (see `verified`): then only their url column is read, to check the rows reused. On object stores, where reading would
    download the whole catalog on every run, one listing checks they exist; pages are checksummed as the
    search reads them, and a damaged shard is then set aside and its images decoded again (api.search).
    """
    chosen = np.full(len(listing), -1, np.int64)
    position, rows = candidates(index, listing)
    if not len(rows):
        return chosen
    taken = index.select(["shard", "width", "height", "decoder"]).take(pa.array(rows))
    shards = pc.dictionary_encode(taken.column("shard")).combine_chunks()
    names = shards.dictionary.to_pylist()
    code = pc.fill_null(shards.indices, -1).to_numpy().astype(np.int64)
    failure = code < 0  # a recorded decode failure: no shard to verify
    same_decoder = pc.fill_null(pc.equal(taken.column("decoder"), settings.key), False).to_numpy()
    limit = settings.max_pixels
    if limit:
        pixels = [pc.fill_null(taken.column(c), 0).to_numpy().astype(np.int64) for c in ("width", "height")]
        within = pixels[0] * pixels[1] <= limit
    else:
        within = np.ones(len(rows), bool)
    eligible = np.where(failure, same_decoder, within)
    verdict = np.full(len(names) + 1, -1, np.int8)  # per shard: -1 unknown, 0 untrusted, 1 trusted
    verdict[-1] = 1  # code -1 (a failure) needs none
    if catalog.on_object_store:
        present = catalog.shard_names()
        verdict[:-1] = [name in present for name in names]
    states, marks = verified.shard_states(catalog), verified.read_marks(catalog)
    fresh: dict[str, str] = {}
    while True:
        firsts = _firsts(position, eligible & (verdict[code] != 0))
        unknown = firsts[verdict[code[firsts]] < 0]
        if not len(unknown):
            break
        for k in np.unique(code[unknown]).tolist():
            name, state = names[k], states.get(names[k])
            picked = index.select(["row", "url"]).take(pa.array(rows[unknown[code[unknown] == k]]))
            at, urls = picked.column("row").to_pylist(), picked.column("url").to_pylist()
            if (
                state is not None
                and marks.get(name) == state
                and verified.rows_match(catalog, name, at, urls)
            ):
                verdict[k] = 1  # its bytes were verified whole in this very state: only its urls were read
                continue
            verdict[k] = catalog.check_shard(name, at, urls, tensor_values(px_size))
            if verdict[k] and state is not None:
                fresh[name] = state  # the state seen before reading: a later write shows as a change
            elif not verdict[k]:
                log.warning("catalog shard %s is missing, damaged or foreign: not reused", name)
    chosen[position[firsts]] = rows[firsts]
    verified.remember(catalog, fresh, states)
    return chosen


def removed_count(index: pa.Table, listing: Listing) -> int:
    """Files the catalog saw under the searched inputs that are no longer listed."""
    if index.num_rows == 0:
        return 0
    seen = pc.unique(index.column("url")).cast(pa.large_string())
    gone = seen.filter(pc.invert(pc.is_in(seen, value_set=listing.url.arrow)))
    return sum(under_roots(url, listing.roots) for url in gone.to_pylist())

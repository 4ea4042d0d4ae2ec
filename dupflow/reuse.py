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


def candidates(index: pa.Table, listing: Listing) -> tuple[np.ndarray, np.ndarray]:
    """(listing position, index row) of every index row matching a listed file's (url, size, stamp)
    exactly (never without a stamp), ordered by position and, within one, newest row (last written) first."""
    empty = np.zeros(0, np.int64)
    if index.num_rows == 0 or len(listing) == 0:
        return empty, empty
    listed = listing.url.arrow
    at = pc.index_in(index.column("url").cast(listed.type), value_set=listed)  # null: not listed
    stamp = index.column("stamp")
    hit = pc.and_(pc.is_valid(at), pc.fill_null(pc.not_equal(stamp, ""), False))
    rows = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
    position = pc.fill_null(at, -1).to_numpy()[rows].astype(np.int64)
    same = index.column("size").take(pa.array(rows)).to_numpy() == listing.size[position]
    same &= pc.equal(stamp.take(pa.array(rows)), listing.stamp.arrow.take(pa.array(position))).to_numpy(
        zero_copy_only=False
    )
    position, rows = position[same], rows[same]
    order = np.lexsort((-rows, position))
    return position[order], rows[order]


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
    present state (see `verified`): then nothing of them is read, or only their url column. On
    object stores, where reading would download the whole catalog on every run, one listing checks they
    exist; pages are checksummed as the search reads them, and a damaged shard is then set aside and its
    images decoded again (see api.search).
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
    fresh: dict[str, verified.Mark] = {}
    while True:
        firsts = _firsts(position, eligible & (verdict[code] != 0))
        unknown = firsts[verdict[code[firsts]] < 0]
        if not len(unknown):
            break
        unknown = unknown[np.argsort(code[unknown], kind="stable")]  # grouped by shard
        picked = index.select(["row", "url"]).take(pa.array(rows[unknown]))
        group = code[unknown]
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]).tolist() + [len(group)]
        for a, b in zip(starts, starts[1:]):
            k = int(code[unknown[a]])
            part = picked.slice(a, b - a)  # as Python objects one shard at a time
            at, urls = part.column("row").to_pylist(), part.column("url").to_pylist()
            verdict[k] = _trusted(catalog, names[k], at, urls, px_size, states, marks, fresh)
    chosen[position[firsts]] = rows[firsts]
    verified.remember(catalog, fresh, states)
    return chosen


def _trusted(
    catalog: CatalogRef,
    name: str,
    rows: list[int],
    urls: list[str],
    px_size: int,
    states: dict[str, str],
    marks: dict[str, verified.Mark],
    fresh: dict[str, verified.Mark],
) -> bool:
    """Whether a local shard holds these urls at these rows, sound. Marked verified in its present state:
    nothing is read when these are the rows checked then, else only its url column; otherwise it is read
    whole and checked. Shards checked here go into `fresh` (with the state seen before reading)."""
    state, mark = states.get(name), marks.get(name)
    digest = verified.rows_digest(rows, urls) if state is not None else ""
    if state is not None and mark is not None and mark[0] == state:
        if mark[1] == digest:
            return True
        if verified.rows_match(catalog, name, rows, urls):
            fresh[name] = (state, digest)
            return True
    if catalog.check_shard(name, rows, urls, tensor_values(px_size)):
        if state is not None:
            fresh[name] = (state, digest)  # a later write to the file shows as another state
        return True
    log.warning("catalog shard %s is missing, damaged or foreign: not reused", name)
    return False


def removed_count(index: pa.Table, listing: Listing) -> int:
    """Files the catalog saw under the searched inputs that are no longer listed."""
    if index.num_rows == 0:
        return 0
    seen = pc.unique(index.column("url")).cast(pa.large_string())
    gone = seen.filter(pc.invert(pc.is_in(seen, value_set=listing.url.arrow)))
    return sum(under_roots(url, listing.roots) for url in gone.to_pylist())

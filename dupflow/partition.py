"""One decode partition, run on a worker: fetch its files, decode them, store the tensors as one shard,
then commit the partition's index rows as one index file. Each partition is thus durable on its own: a build
interrupted after some partitions keeps their work, and its rerun decodes only the rest."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from . import kernels
from .catalog import INDEX_SCHEMA, CatalogRef
from .decode import DecoderSettings, decode_image, error_message, lasting_failure
from .fetch import read_batch
from .summaries import summarize

__all__ = ["decode_partition", "decode_tables", "READ_BATCH"]

READ_BATCH = 16  # files fetched per request round within a partition


def _empty_row(url: str, size: int, stamp: str) -> dict:
    """An index row with nothing decoded yet (`cache`: whether the outcome may be recorded for reuse)."""
    row = dict.fromkeys(INDEX_SCHEMA.names)
    row.update(url=url, size=size, stamp=stamp, cache=True)
    return row


def decode_partition(
    items: list[tuple[str, int, str]],
    catalog: CatalogRef,
    storage_options: dict,
    px_size: int,
    mode: str,
    settings: DecoderSettings | None = None,
) -> list[dict]:
    """Decode one partition, store its tensors as one shard and then its index rows as one index file;
    return the rows (failures included; `cache` False on those not recorded).

    Decodes under `settings` (default: this process's); a failure is recorded only if it would recur for
    the same bytes under the same settings, with the settings' key.
    """
    if settings is not None:
        settings.apply()
    decoder = (settings or DecoderSettings.current()).key
    rows: list[dict] = []
    tensors: list[np.ndarray] = []
    ok_urls: list[str] = []
    for start in range(0, len(items), READ_BATCH):
        batch = items[start : start + READ_BATCH]
        fetched = read_batch([url for url, _, _ in batch], storage_options)
        for url, size, stamp in batch:
            data = fetched[url]
            row = _empty_row(url, size, stamp)
            if isinstance(data, BaseException):
                row["error"], row["cache"] = error_message(data), False
            else:
                try:
                    tensor, width, height = decode_image(data, px_size, mode)
                except Exception as exc:  # anything a file contains is a row, never a crash
                    row["error"], row["cache"] = error_message(exc), lasting_failure(exc)
                    row["decoder"] = decoder
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
    recorded = [{k: v for k, v in row.items() if k != "cache"} for row in rows if row["cache"]]
    if recorded:  # after the shard, so every indexed shard exists
        catalog.write_index(pa.Table.from_pylist(recorded, schema=INDEX_SCHEMA))
    return rows


def decode_tables(
    parts: list[pa.Table],
    catalog: CatalogRef,
    storage_options: dict,
    px_size: int,
    mode: str,
    settings: DecoderSettings | None = None,
) -> list[pa.Table]:
    """decode_partition over a bag partition of (url, size, stamp) tables; each one's rows come back as
    one INDEX_SCHEMA table (failures included), compact to send and to hold on the client."""
    out = []
    for keys in parts:
        items = list(zip(*(keys.column(c).to_pylist() for c in ("url", "size", "stamp"))))
        rows = decode_partition(items, catalog, storage_options, px_size, mode, settings)
        out.append(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA))
    return out

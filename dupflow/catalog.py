"""The catalog: Parquet tensor shards plus append-only index files, keyed by (url, size, stamp).

Layout under the catalog root (local folder or any fsspec URL):
    <root>/<namespace>/shards/<time>-<uuid>.parquet  one row per decoded image: url, tensor (px*px*3), grid
    <root>/<namespace>/index/<time>-<uuid>.parquet   the rows of one decode partition, written after its shard
    <root>/<namespace>/absent/<time>-<uuid>.parquet  gc's ledger: since when indexed files are absent
    <root>/<namespace>/maintenance/claim-*.json      claimed while one process compacts or collects garbage
The namespace names px_size, decode mode and Pillow version, so incompatible rows are never reused.
Shards and index files appear whole: locally written under a temporary name and renamed, on object
stores written with one PUT. A run killed mid-write or runs at once leave a usable catalog; shards carry
page checksums, verified before their rows are reused, and a shard is removed only on proof of damage.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass

import numpy as np
import PIL
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .claim import hold
from .kernels import GRID
from .sources import filesystem

INDEX_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("size", pa.int64()),
        ("stamp", pa.string()),
        ("shard", pa.string()),
        ("row", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("hash", pa.binary(16)),
        ("hash_turned", pa.binary(16)),
        ("sum_r", pa.int64()),
        ("sum_g", pa.int64()),
        ("sum_b", pa.int64()),
        ("error", pa.string()),
        (
            "decoder",
            pa.string(),
        ),  # for a recorded failure: the settings it happened under (DecoderSettings.key)
    ]
)
ROW_GROUP = 128  # rows per Parquet row group: a few rows can be read without the whole shard
INDEX_GROUP = 1 << 20  # rows per row group of index files: read whole, 128-row groups read 16x slower
GRID_DTYPE = np.dtype("<i4")  # block sums of a tensor's coarse grid (see kernels.grid_sums)
GRID_BYTES = GRID * GRID * 3 * GRID_DTYPE.itemsize
log = logging.getLogger("dupflow")
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss", "memory"}


def default_root() -> str:
    """The user's cache folder (XDG): reruns reuse it without littering the searched folders."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dupflow", "catalog")


def namespace(root: str, px_size: int, mode: str) -> str:
    """The folder for one (px_size, decode mode, Pillow version): rows there are interchangeable."""
    return f"{root.rstrip('/')}/v1-px{px_size}-{mode}-pillow{PIL.__version__}"


@dataclass(frozen=True)
class CatalogRef:
    """Where a catalog namespace lives; small and picklable, so workers can open it themselves."""

    url: str
    storage_options: dict

    def fs(self):
        return filesystem(self.url, self.storage_options)

    def write_file(self, folder: str, table: pa.Table) -> str:
        """Write a new Parquet file into a folder of the namespace, seen whole or not at all; returns its name.

        Object stores (S3, GCS, Azure, memory) publish an object only when its PUT completes, so the final
        key is written directly (a temp + mv there would be a full copy and a delete). Elsewhere: a
        temporary name, then a rename.
        """
        fs, base = self.fs()
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}.parquet"  # names sort oldest first
        final = f"{base}/{folder}/{name}"
        # tensors barely compress: storing them plain makes reads a copy, not a decompression
        compression = {c: ("none" if c == "tensor" else "zstd") for c in table.column_names}
        # shards: small row groups, so a few rows read little; other files are read whole, in one group
        groups = ROW_GROUP if folder == "shards" else INDEX_GROUP
        options = dict(compression=compression, row_group_size=groups, write_page_checksum=True)
        if self.on_object_store:
            sink = pa.BufferOutputStream()  # whole in memory: one PUT (or one multipart upload) of it
            pq.write_table(table, sink, **options)
            try:
                fs.pipe_file(final, sink.getvalue().to_pybytes())
            except FileNotFoundError as exc:  # drivers say "bucket does not exist" without naming it
                raise FileNotFoundError(f'Catalog "{base}" cannot be written: {exc}') from None
            return name
        fs.makedirs(f"{base}/{folder}", exist_ok=True)
        temporary = f"{base}/{folder}/.tmp-{name}"
        with fs.open(temporary, "wb") as handle:
            pq.write_table(table, handle, **options)
        fs.mv(temporary, final)
        return name

    @property
    def on_object_store(self) -> bool:
        """True on S3, GCS, Azure and the like (and memory://), where each read is a request."""
        fs, _ = self.fs()
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        return bool(protocols & OBJECT_STORES)

    def shard_names(self) -> set[str]:
        """The shards present, from one listing."""
        fs, base = self.fs()
        fs.invalidate_cache(f"{base}/shards")
        try:
            return {p.rsplit("/", 1)[-1] for p in fs.ls(f"{base}/shards", detail=False)}
        except FileNotFoundError:
            return set()

    def set_aside(self, shard: str) -> bool:
        """Remove a shard proven damaged or foreign, so the next build decodes its images again.

        Called when reading it failed: it is read again whole and removed only on proof (a page failing its
        checksum, bytes that are not a shard, rows other than the index says). A shard that cannot be read
        right now (a transient I/O error) is kept. True if removed.
        """
        fs, base = self.fs()
        index = self.read_index()
        mine = index.filter(pc.equal(index.column("shard"), shard))
        try:
            proof = self.verify_shard(shard, mine.column("row").to_pylist(), mine.column("url").to_pylist())
        except OSError as exc:
            log.warning("catalog shard %s could not be read (%s): kept", shard, exc)
            return False
        if proof is None:
            return False
        log.warning("catalog shard %s set aside: %s", shard, proof)
        try:
            fs.rm_file(f"{base}/shards/{shard}")
        except FileNotFoundError:
            pass
        return True

    def verify_shard(self, shard: str, rows: list[int], urls: list[str], d: int | None = None) -> str | None:
        """Why the shard cannot be trusted (damaged pages, not a shard, tensors not `d` bytes, other urls at
        these rows), or None if it is sound. Raises OSError when it cannot be read (missing, or I/O)."""
        fs, base = self.fs()
        data = fs.cat_file(f"{base}/shards/{shard}")  # the only I/O: every failure below is about the bytes
        try:
            parquet = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
            schema = parquet.schema_arrow
            stored = parquet.read(columns=["url", "tensor", "grid"]).column("url").to_pylist()  # every page
        except MemoryError:
            raise
        except Exception as exc:
            return f"damaged ({type(exc).__name__}: {exc})"
        if schema.field("grid").type != pa.binary(GRID_BYTES) or (
            d and schema.field("tensor").type != pa.binary(d)
        ):
            return "foreign (tensors of another size)"
        wrong = [r for r, u in zip(rows, urls) if not 0 <= r < len(stored) or stored[r] != u]
        if wrong:
            return f"foreign ({len(wrong)} row(s) hold other files than the index says)"
        return None

    def write_shard(self, urls: list[str], tensors: np.ndarray, grids: np.ndarray) -> str:
        """Store decoded tensors (n x d uint8) and their block-sum grids as one new shard; returns its name."""
        table = pa.table(
            {
                "url": pa.array(urls, pa.string()),
                "tensor": _fixed(tensors.reshape(len(urls), -1)),
                "grid": _fixed(grids.astype(GRID_DTYPE).reshape(len(urls), -1)),
            }
        )
        return self.write_file("shards", table)

    def read_rows(self, shard: str, rows: np.ndarray, column: str = "tensor") -> np.ndarray:
        """One column's values for the given rows of a shard, as (n x bytes) uint8, reading only their row groups."""
        fs, base = self.fs()
        rows = np.asarray(rows, dtype=np.int64)
        try:
            with fs.open(f"{base}/shards/{shard}", "rb") as handle:
                parquet = pq.ParquetFile(handle, page_checksum_verification=True)
                sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
                starts = np.concatenate([[0], np.cumsum(sizes)])
                if rows.size and (rows.min() < 0 or rows.max() >= starts[-1]):
                    raise CatalogError(
                        f"catalog shard {shard} has {starts[-1]} rows, not {rows.max() + 1}", shard
                    )
                groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
                table = parquet.read_row_groups(groups.tolist(), columns=[column])
        except (OSError, pa.ArrowException) as exc:  # missing, truncated, or a page failing its checksum
            raise CatalogError(f"catalog shard {shard} is missing or damaged ({exc})", shard) from None
        data = _unfixed(table.column(column).combine_chunks())
        # position of each wanted row within the row groups that were read
        read_starts = starts[groups]
        offsets = np.concatenate([[0], np.cumsum([sizes[g] for g in groups])])
        which = np.searchsorted(read_starts, rows, side="right") - 1
        return data[offsets[which] + rows - read_starts[which]]

    def check_shard(self, shard: str, rows: list[int], urls: list[str], d: int) -> bool:
        """True if the shard exists, every page passes its checksum, and it has these urls at these rows."""
        try:
            proof = self.verify_shard(shard, rows, urls, d)
        except OSError as exc:  # missing, or unreadable for now: not reused this time, left in place
            log.warning("catalog shard %s could not be read (%s): not reused", shard, exc)
            return False
        return proof is None

    def write_index(self, table: pa.Table) -> str:
        """Record one run's rows; written after its shards, so every indexed shard exists."""
        return self.write_file("index", table.cast(INDEX_SCHEMA))

    def index_files(self) -> list[str]:
        """The index files' paths, oldest first (listed afresh)."""
        return list(self._index_sizes())

    def _index_sizes(self) -> dict[str, int]:
        """{index file path: bytes}, oldest first (listed afresh)."""
        fs, base = self.fs()
        fs.invalidate_cache(f"{base}/index")  # another process may have added files since we last looked
        try:
            entries = fs.ls(f"{base}/index", detail=True)
        except FileNotFoundError:
            return {}
        return {
            e["name"]: int(e.get("size") or 0)
            for e in sorted(entries, key=lambda e: e["name"])
            if e["name"].endswith(".parquet") and not e["name"].rsplit("/", 1)[-1].startswith(".")
        }

    def read_index_files(self, names: list[str]) -> tuple[list[pa.Table], list[str], list[str]]:
        """The tables of these index files, the names read, and the names gone (compacted away meanwhile)."""
        fs, _ = self.fs()
        tables, read, gone = [], [], []
        for name in names:
            try:
                with fs.open(name, "rb") as handle:
                    tables.append(_conform(pq.read_table(handle, use_threads=False)))  # less RSS, no slower
            except FileNotFoundError:
                gone.append(name)
                continue
            except Exception:  # a foreign or damaged index file is ignored, never trusted
                continue
            read.append(name)
        return tables, read, gone

    def read_index(self) -> pa.Table:
        """Every index row written here (later files may repeat a url; any matching row is valid).

        Index files that vanish while being read were merged by a compaction: the listing is taken again,
        so their rows are read from the merged file.
        """
        tables: list[pa.Table] = []
        done: set[str] = set()
        for _ in range(5):
            todo = [name for name in self.index_files() if name not in done]
            got, read, gone = self.read_index_files(todo)
            tables += got
            done.update(read)
            if not gone:
                break
        return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()

    def maintenance_claim(self, wait: float = 0.0):
        """The namespace's maintenance claim (compaction, gc): one process at a time (see claim.hold)."""
        return hold(self.maintenance_folder, self.storage_options, wait=wait)

    @property
    def maintenance_folder(self) -> str:
        """Where the maintenance claims (numbered files, see dupflow.claim) live."""
        return f"{self.url.rstrip('/')}/maintenance"

    def compact_index(self, most: int = 32) -> bool:
        """Merge the index files into one once there are more than `most` (each decode partition adds one).

        Size-tiered, so a big catalog is not rewritten on every run: the oldest file stays out of the merge
        while it holds more than half the bytes (the base; the newer files merge beside it), unless it was
        written in the small row groups of older versions.
        One process at a time (the maintenance claim); another run's files vanishing meanwhile are skipped, duplicate
        rows are merged into one, and only files whose rows went into the merged file are removed, after it
        is written: a reader sees every row at least once. True if this call merged.
        """
        if len(self._index_sizes()) <= most:
            return False
        with self.maintenance_claim() as held:
            sizes = self._index_sizes() if held else {}
            if len(sizes) <= most:
                return False
            names = list(sizes)
            if 2 * sizes[names[0]] > sum(sizes.values()) and not self._small_groups(names[0]):
                names = names[1:]
            tables, read, _ = self.read_index_files(names)
            self.replace_index(tables, read)
            return True

    def _small_groups(self, name: str) -> bool:
        """True for an index file written in small row groups (before INDEX_GROUP): slow and costly to
        read, so compaction rewrites it even as the base. Unreadable: False (the merge will skip it)."""
        fs, _ = self.fs()
        try:
            with fs.open(name, "rb") as handle:
                meta = pq.ParquetFile(handle).metadata
        except Exception:
            return False
        return meta.num_row_groups > 1 and meta.row_group(0).num_rows < min(meta.num_rows, INDEX_GROUP)

    def replace_index(self, tables: list[pa.Table], names: list[str]) -> None:
        """Write these rows (duplicates merged) as one index file, then remove the files they came from."""
        merged = distinct_rows(pa.concat_tables(tables)) if tables else INDEX_SCHEMA.empty_table()
        if merged.num_rows:
            self.write_index(merged)
        fs, _ = self.fs()
        for name in names:
            try:
                fs.rm_file(name)
            except FileNotFoundError:
                pass


def distinct_rows(table: pa.Table) -> pa.Table:
    """The table without repeated rows, first occurrences kept in order."""
    position = "_position"
    numbered = table.append_column(position, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    firsts = numbered.group_by(table.column_names, use_threads=False).aggregate([(position, "min")])
    return table.take(np.sort(firsts.column(f"{position}_min").to_numpy()))


def _conform(table: pa.Table) -> pa.Table:
    """An index table in INDEX_SCHEMA: columns added since it was written become nulls."""
    if not {"url", "size", "stamp", "shard", "row"} <= set(table.column_names):
        raise ValueError("not a dupflow index file")
    present = set(table.column_names)
    columns = {
        f.name: table.column(f.name) if f.name in present else pa.nulls(table.num_rows, f.type)
        for f in INDEX_SCHEMA
    }
    return pa.table(columns).cast(INDEX_SCHEMA)


def _fixed(values: np.ndarray) -> pa.FixedSizeBinaryArray:
    """Rows of a 2-d array as a fixed-size binary column (zero copy)."""
    raw = np.ascontiguousarray(values)
    width = raw.shape[1] * raw.itemsize
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(raw), [None, pa.py_buffer(raw)])


def _unfixed(column: pa.FixedSizeBinaryArray) -> np.ndarray:
    """A fixed-size binary column as an (n x width) uint8 array (zero copy)."""
    width = column.type.byte_width
    return np.frombuffer(
        column.buffers()[1], dtype=np.uint8, count=len(column) * width, offset=column.offset * width
    ).reshape(len(column), width)


class CatalogError(RuntimeError):
    """The catalog holds something other than what its index says (`shard` names the culprit)."""

    def __init__(self, message: str, shard: str | None = None):
        super().__init__(message, shard)  # both in args, so the error survives pickling between workers
        self.shard = shard

    def __str__(self) -> str:
        return self.args[0]

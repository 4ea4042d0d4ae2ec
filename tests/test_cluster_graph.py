"""The search graph carries addresses (shard, row), never tensors: its size, measured on a synthetic
catalog layout of n images (no decoding), stays small next to the tensors it describes.

Run as a script to measure the plans stated in the README:
    python tests/test_cluster_graph.py 100000 1000000
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from dupflow.catalog import CatalogRef
from dupflow.compare import MatchSpec, Scope, find_edges
from dupflow.ingest import HASH_DTYPE, Decoded

SHARD_ROWS = 1024  # images per decode partition, as ingest writes them
COPIES = 0.12  # share of planted exact copies (hash classes of two)


def synthetic_layout(n: int, px: int = 50, seed: int = 0) -> Decoded:
    """n decoded photos as the catalog would index them: shards of 1,024 rows, photo-like brightness,
    a handful of common sizes, 12% exact copies. Nothing is decoded or written."""
    rng = np.random.default_rng(seed)
    d = 3 * px * px
    means = np.clip(rng.normal(110, 40, n), 0, 255)
    sums = np.repeat((means * d / 3).astype(np.int64)[:, None], 3, axis=1)
    sizes = np.array([(4000, 3000), (3000, 4000), (1920, 1080), (1080, 1920), (1024, 768), (640, 480)])
    dims = sizes[rng.integers(0, len(sizes), n)]
    hashes = np.array([(k + 1).to_bytes(16, "little") for k in range(n)], dtype=HASH_DTYPE)
    copies = rng.choice(n, int(n * COPIES / 2), replace=False)
    for k in copies:  # each copy shares its hash (and size) with a neighbour
        hashes[k] = hashes[(k + 1) % n]
        dims[k] = dims[(k + 1) % n]
    shards = math.ceil(n / SHARD_ROWS)
    return Decoded(
        shards=[f"{k:020d}-{k:032x}.parquet" for k in range(shards)],
        shard=(np.arange(n) // SHARD_ROWS).astype(np.int32),
        row=np.arange(n, dtype=np.int64) % SHARD_ROWS,
        width=dims[:, 0].copy(),
        height=dims[:, 1].copy(),
        error={},
        hash=hashes,
        hash_turned=hashes.copy(),
        sums=sums,
        decoded=0,
        reused=n,
        removed=0,
    )


class _Planned(Exception):
    """Raised by the recording engine once it has seen the graph (nothing is run)."""


class RecordingEngine:
    """Stands where the cluster stands: takes what the search would compute and measures its graph."""

    def __init__(self):
        self.tasks = 0
        self.graph_bytes = 0

    def __call__(self, images: int) -> RecordingEngine:
        return self

    def run(self, tasks, desc, show_progress, images=None):
        """Measure what `Client.compute` would send the scheduler: the expression, serialized."""
        from dask._expr import FinalizeCompute
        from dask.base import collections_to_expr
        from distributed.protocol import serialize, to_serialize
        from distributed.utils import nbytes

        expr = FinalizeCompute(collections_to_expr(list(tasks), True)).optimize()
        self.tasks = len(expr.__dask_graph__())
        header, frames = serialize(to_serialize(expr), on_error="raise")
        self.graph_bytes = sum(map(nbytes, [header, *frames]))
        raise _Planned


def plan(n: int, threshold: float, same_dim: bool, px: int = 50) -> RecordingEngine:
    """Plan a search of n images (one scope) and measure its graph."""
    decoded = synthetic_layout(n, px)
    catalog = CatalogRef("/shared/dupflow-catalog/v1-px50-exact-pillow13.0.0", {})
    engine = RecordingEngine()
    spec = MatchSpec.from_threshold(px, True, same_dim, threshold)
    try:
        find_edges(catalog, decoded, [Scope(np.arange(n))], spec, None, engine, False)
    except _Planned:
        pass
    assert engine.tasks, "the search planned no task"
    return engine


def test_graph_carries_addresses_not_tensors_and_grows_linearly():
    px = 50
    for threshold, same_dim in ((5, False), (5, True), (0, True)):
        small, large = plan(10_000, threshold, same_dim, px), plan(40_000, threshold, same_dim, px)
        per_image = large.graph_bytes / 40_000
        # a tensor is 7,500 bytes; the graph holds tens of bytes per image (shard names, rows, sizes)
        assert per_image < 100, (threshold, same_dim, per_image)
        # ... and 4x the images is 4x the graph, not 16x: nothing in it is per pair of blocks
        assert per_image < 1.5 * small.graph_bytes / 10_000 + 5, (threshold, same_dim)


if __name__ == "__main__":
    print("| images | search | tasks | graph (pickled) | per image | tensors it addresses |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for size in map(int, sys.argv[1:] or ["100000"]):
        for label, threshold, same_dim in (
            ("duplicates", 0, True),
            ("similar, same_dim=False", 5, False),
            ("similar, same_dim=True", 5, True),
        ):
            t0 = time.perf_counter()
            measured = plan(size, threshold, same_dim)
            print(
                f"| {size:,} | {label} | {measured.tasks:,} | {measured.graph_bytes:,} B "
                f"| {measured.graph_bytes / size:,.0f} B | {size * 7500 / 2**30:,.1f} GiB |"
                f"  ({time.perf_counter() - t0:.1f} s to plan)",
                flush=True,
            )

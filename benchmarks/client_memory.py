"""The client's memory at scale: peak of `dupflow.build` (listing + catalog reuse -> Listing and Decoded).

    .venv/bin/python benchmarks/client_memory.py --sizes 100000 1000000
    .venv/bin/python benchmarks/client_memory.py --real /tmp/dupflow-bench/reference_100000_0_quarter \\
        --catalog /tmp/dupflow-bench/work/reference/catalog --px 50

What it measures: one `dupflow.build(FOLDER, catalog=CAT, px_size=PX)` in its own process with every image
already in the catalog (nothing to decode, so no cluster starts: everything measured is the client). Figures:

* peak RSS: the process's ru_maxrss; "above imports" subtracts the RSS right after `import dupflow`.
* retained: what the build object still holds (tracemalloc, `--tracemalloc` only: about 2x slower).
* seconds: wall and CPU (user + system) time of the build, and the build's own list / decode (reuse)
  seconds from its stats. On a busy machine CPU seconds are the steadier figure.

Synthetic data (`--sizes`, cached under --cache/client_N): N empty `.png` files in folders of 1,000 (paths
as long as a real collection's) and a catalog at px_size 10 whose index names exactly those files (url,
size, mtime stamp) with shards of 1,024 random tensors. The files are never opened when the catalog holds
them, so the client does exactly the work of a catalog-built million-image run, minus decoding. `--real`
measures a real folder with its (already built) catalog; the catalog is hard-link copied first so nothing
the benchmark writes (index compaction, verified marks) lands in the original.

`--pythonpath DIR` runs another checkout's dupflow (the before figure: `git archive COMMIT dupflow | tar -x
-C DIR`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

__all__ = ["prepare", "measure"]

PER_FOLDER = 1000
SHARD_ROWS = 1024
SYNTHETIC_PX = 10

CHILD = r"""
import json, resource, sys, time, tracemalloc
folder, catalog, px, trace = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
import dupflow
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss()
if trace:
    tracemalloc.start()
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
t0, c0 = time.perf_counter(), cpu()
dif = dupflow.build(folder, catalog=catalog, px_size=px, show_progress=False)
wall, spent = time.perf_counter() - t0, cpu() - c0
out = {"module": dupflow.__file__, "files": len(dif.files), "wall_s": wall, "cpu_s": spent, "imports_mib": base, "peak_mib": rss()}
out["stats"] = {k: dif.stats["dupflow"]["build"][k] for k in ("decoded", "reused", "removed", "seconds")}
if trace:
    current, peak = tracemalloc.get_traced_memory()
    out["traced_peak_mib"], out["traced_retained_mib"] = peak / 2**20, current / 2**20
print("RESULT " + json.dumps(out))
dif.close()
"""


def prepare(n: int, cache: str, seed: int = 0) -> tuple[str, str]:
    """N empty image files and a catalog (px_size 10) holding all of them; returns (folder, catalog root)."""
    root = os.path.join(cache, f"client_{n}")
    folder, catalog_root = os.path.join(root, "files"), os.path.join(root, "catalog")
    done = os.path.join(root, "READY")
    if os.path.exists(done):
        return folder, catalog_root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import pyarrow as pa

    from dupflow.catalog import INDEX_SCHEMA, CatalogRef, namespace
    from dupflow.kernels import GRID

    rng = np.random.default_rng(seed)
    catalog = CatalogRef(namespace(catalog_root, SYNTHETIC_PX, "exact"), {})
    d = 3 * SYNTHETIC_PX * SYNTHETIC_PX
    urls, sizes, stamps = [], [], []
    for k in range(n):
        sub = os.path.join(folder, f"2024-{k // PER_FOLDER:05d}")
        if k % PER_FOLDER == 0:
            os.makedirs(sub, exist_ok=True)
        path = os.path.join(sub, f"IMG_{k:08d}_holiday_camera_roll.png")
        with open(path, "wb"):
            pass
        st = os.stat(path)
        urls.append(os.path.abspath(path))
        sizes.append(st.st_size)
        stamps.append(str(st.st_mtime_ns))
    tables = []
    for start in range(0, n, SHARD_ROWS):
        part = urls[start : start + SHARD_ROWS]
        m = len(part)
        tensors = rng.integers(0, 256, (m, d), dtype=np.uint8)
        grids = rng.integers(0, 2**20, (m, GRID * GRID * 3), dtype=np.int32)
        shard = catalog.write_shard(part, tensors, grids)
        sums = tensors.reshape(m, -1, 3).sum(axis=1, dtype=np.int64)
        hashes = rng.bytes(16 * m)
        tables.append(
            pa.table(
                {
                    "url": part,
                    "size": sizes[start : start + m],
                    "stamp": stamps[start : start + m],
                    "shard": [shard] * m,
                    "row": np.arange(m, dtype=np.int32),
                    "width": rng.integers(64, 4000, m, dtype=np.int32),
                    "height": rng.integers(64, 4000, m, dtype=np.int32),
                    "hash": [hashes[16 * i : 16 * i + 16] for i in range(m)],
                    "hash_turned": [hashes[16 * i : 16 * i + 16] for i in range(m)],
                    "sum_r": sums[:, 0],
                    "sum_g": sums[:, 1],
                    "sum_b": sums[:, 2],
                    "error": pa.nulls(m, pa.string()),
                    "decoder": pa.nulls(m, pa.string()),
                },
                schema=INDEX_SCHEMA,
            )
        )
    catalog.write_index(pa.concat_tables(tables))
    open(done, "w").close()
    return folder, catalog_root


def measure(folder: str, catalog: str, px: int, trace: bool, pythonpath: str | None = None) -> dict:
    """One build in its own process; its figures (see the module docstring)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    argv = [sys.executable, "-c", CHILD, folder, catalog, str(px), "1" if trace else "0"]
    # `-c` puts the working folder first on sys.path: run from the checkout that is measured
    cwd = pythonpath or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"build failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _copy_catalog(source: str, cache: str) -> str:
    """A hard-linked copy of a catalog (shards shared, nothing written back into the original)."""
    target = os.path.join(cache, "client_real_catalogs", os.path.basename(source.rstrip("/")) + "_copy")
    if os.path.exists(target):
        subprocess.run(["rm", "-rf", target], check=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    subprocess.run(["cp", "-al", source, target], check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[])
    parser.add_argument("--real", help="a real folder whose catalog (--catalog) is already built")
    parser.add_argument("--catalog", help="the catalog root of --real")
    parser.add_argument("--px", type=int, default=50, help="px_size of --real's catalog")
    parser.add_argument("--cache", default="/tmp/dupflow-bench")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--pythonpath", help="run another checkout's dupflow (a before figure)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="builds per point (the catalog is warm after one)"
    )
    args = parser.parse_args(argv)
    runs = []
    for n in args.sizes:
        t0 = time.perf_counter()
        folder, catalog = prepare(n, args.cache)
        print(f"prepared {n} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        runs.append((f"synthetic {n}", folder, catalog, SYNTHETIC_PX))
    if args.real:
        runs.append((f"real {args.real}", args.real, _copy_catalog(args.catalog, args.cache), args.px))
    print(f"load average {os.getloadavg()}", file=sys.stderr)
    print(
        "| run | files | build s | CPU s | list s | reuse s | peak RSS MiB | above imports MiB | traced peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, folder, catalog, px in runs:
        for _ in range(args.repeat):
            r = measure(folder, catalog, px, args.tracemalloc, args.pythonpath)
            seconds = r["stats"]["seconds"]
            traced = f"{r['traced_peak_mib']:.0f}" if "traced_peak_mib" in r else "-"
            print(
                f"| {name} | {r['files']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {seconds['list']:.1f} "
                f"| {seconds['decode']:.1f} "
                f"| {r['peak_mib']:.0f} | {r['peak_mib'] - r['imports_mib']:.0f} | {traced} |",
                flush=True,
            )
            print(json.dumps(r), file=sys.stderr)
    print(f"load average {os.getloadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a cold build's time goes: cProfile over one thread, by stage, next to the real threaded build.

    python benchmarks/build_profile.py DATA [--limit 20000] [--px 50] [--decode exact] [--json out.json]

Two runs over the first --limit files of DATA (dupflow's own listing order), each into a fresh catalog:

1. profiled: listing, then `dupflow.ingest.ingest` (catalog index read, reuse checks, the Dask bag of decode
   partitions, index compaction, the client's table of rows) with the bag computed by Dask's synchronous
   scheduler in this thread, all under cProfile: every CPU second is attributed to a stage (STAGES);
2. real: `dupflow.build` as users call it (its local cluster, threads on a 2-core machine), timed wall and
   CPU (this process's user + system seconds).

The profile counts CPU seconds (time.process_time), so other load on the machine does not inflate it; cProfile's
own overhead does (more for code making many small Python calls), so the shares are what to read, and each is
also applied to the real build's CPU seconds as an estimate of that stage's cost in a plain build.
The profile uses dupflow's internals (sources.list_files, catalog.CatalogRef, ingest.ingest) as they are at
the measured commit.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import dask

__all__ = ["STAGES", "main"]

# stage label -> (module file suffix, function name); cumulative time of each, nested stages subtracted
STAGES: list[tuple[str, str, str]] = [
    ("listing (walk + stat)", "dupflow/sources.py", "list_files"),
    ("catalog index read", "dupflow/catalog.py", "read_index"),
    ("reuse checks", "dupflow/reuse.py", "reusable_rows"),
    ("reuse checks (shard verify)", "dupflow/reuse.py", "trusted_rows"),
    ("file reads (fsspec cat_ranges)", "dupflow/fetch.py", "read_batch"),
    ("decode: Image.open (header)", "PIL/Image.py", "open"),
    ("decode: pixel decode (load)", "PIL/ImageFile.py", "load"),
    ("decode: convert to RGB", "PIL/Image.py", "convert"),
    ("decode: resize to px x px", "PIL/Image.py", "resize"),
    ("decode_image (total)", "dupflow/decode.py", "decode_image"),
    ("grids (block sums)", "dupflow/kernels.py", "grid_sums"),
    ("hashes and channel sums", "dupflow/summaries.py", "summarize"),
    ("Parquet shard writes", "dupflow/catalog.py", "write_shard"),
    ("index file writes", "dupflow/catalog.py", "write_index"),
    ("decode_partition (total)", "dupflow/partition.py", "decode_partition"),
    ("index compaction", "dupflow/catalog.py", "compact_index"),
    ("ingest (total)", "dupflow/ingest.py", "ingest"),
]


# py-spy (a sampling profiler: no overhead in the sampled process, every thread) on the real build: each
# sample goes to the first of these frames found from the innermost outwards; (label, qualified name, file)
SPY_STAGES: list[tuple[str, str, str]] = [
    ("decode: Pillow header parse (Image.open)", "open", "PIL/Image.py"),
    ("decode: pixel decode (ImageFile.load)", "ImageFile.load", "PIL/ImageFile.py"),
    ("decode: convert to RGB", "Image.convert", "PIL/Image.py"),
    ("decode: resize to px x px", "Image.resize", "PIL/Image.py"),
    ("decode: rest of decode_image", "decode_image", "dupflow/decode.py"),
    ("file reads (fsspec cat_ranges)", "read_batch", "dupflow/fetch.py"),
    ("grids (block sums)", "grid_sums", "dupflow/kernels.py"),
    ("hashes and channel sums", "summarize", "dupflow/summaries.py"),
    ("Parquet shard writes", "CatalogRef.write_shard", "dupflow/catalog.py"),
    ("index file writes", "CatalogRef.write_index", "dupflow/catalog.py"),
    ("partition: rest (stacking, rows)", "decode_partition", "dupflow/partition.py"),
    ("partition: rest (stacking, rows)", "decode_tables", "dupflow/partition.py"),
    ("index compaction", "CatalogRef.compact_index", "dupflow/catalog.py"),
    ("catalog index read", "CatalogRef.read_index", "dupflow/catalog.py"),
    ("reuse checks", "reusable_rows", "dupflow/reuse.py"),
    ("reuse checks", "trusted_rows", "dupflow/reuse.py"),
    ("listing (walk + stat)", "list_files", "dupflow/sources.py"),
    ("imports", "_find_and_load", "importlib._bootstrap>"),
    ("cluster start and close", "Engine.__init__", "dupflow/cluster.py"),
    ("cluster start and close", "Engine.close", "dupflow/cluster.py"),
    ("client side of ingest (graph, results table)", "ingest", "dupflow/ingest.py"),
]
SPY_FALLBACK = [
    ("Dask/distributed (scheduler, client, workers' bookkeeping)", ("distributed/", "dask/", "tornado/"))
]
# innermost frames of a thread that waits (py-spy's idle detection misses some)
SPY_IDLE = {"Condition.wait", "Event.wait", "Queue.get", "Thread.join", "sleep", "select", "poll"}


def spy_stages(raw: str) -> dict[str, int]:
    """Samples per stage from py-spy's raw (collapsed) output; waiting threads under "idle"."""
    out: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";")[1:]:
            name, _, where = frame.rpartition(" (")
            frames.append((name, where.rsplit(":", 1)[0].replace(os.sep, "/")))
        label = "other"
        if frames and (frames[-1][0] in SPY_IDLE or frames[-1][0].endswith(".select")):
            label = "idle (waiting)"
        else:
            for name, where in reversed(frames):
                hit = next(
                    (lb for lb, qual, suffix in SPY_STAGES if name == qual and where.endswith(suffix)), None
                )
                if hit is None:
                    hit = next((lb for lb, parts in SPY_FALLBACK if any(p in where for p in parts)), None)
                if hit is not None:
                    label = hit
                    break
        out[label] = out.get(label, 0) + int(count)
    return out


def spy_build(py_spy: str, folder: str, catalog: str, px: int, mode: str, rate: int) -> dict:
    """The real dupflow.build in its own process under `py-spy record`: wall, samples per stage, rate."""
    code = (
        "import sys, dupflow; dupflow.build(sys.argv[1], catalog=sys.argv[2], px_size=int(sys.argv[3]), "
        "decode=sys.argv[4], show_progress=False).close()"
    )
    with tempfile.NamedTemporaryFile(suffix=".txt") as handle:
        cmd = [py_spy, "record", "--format", "raw", "-o", handle.name, "--rate", str(rate), "--subprocesses"]
        cmd += ["--nonblocking", "--", sys.executable, "-c", code, folder, catalog, str(px), mode]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"py-spy run failed ({done.returncode}): {done.stderr[-2000:]}")
        with open(handle.name, encoding="utf-8") as raw:
            stages = spy_stages(raw.read())
    return {"wall": wall, "rate": rate, "samples": stages}


class SyncEngine:
    """What ingest asks of a cluster, run in this thread: Dask's synchronous scheduler (profilable)."""

    workers = 1
    kind = "synchronous (profiled)"

    def run(self, tasks, desc: str, show_progress: bool, images: int | None = None) -> list:
        return list(dask.compute(*list(tasks), scheduler="synchronous"))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds per STAGES entry (summed over every function matching it)."""
    out = dict.fromkeys((label for label, _, _ in STAGES), 0.0)
    for (filename, _, func), (_, _, _, cumulative, _) in stats.stats.items():
        path = filename.replace(os.sep, "/")
        for label, suffix, name in STAGES:
            if func == name and path.endswith(suffix):
                out[label] += cumulative
    return out


def profiled_build(data: str, catalog: str, limit: int, px: int, mode: str) -> tuple[dict, pstats.Stats, int]:
    """(stage seconds, the pstats, files) of listing + ingest of the first `limit` files, in this thread."""
    from dupflow.catalog import CatalogRef, namespace
    from dupflow.ingest import ingest
    from dupflow.sources import list_files

    engine = SyncEngine()
    box: dict = {}

    def work() -> None:
        listing = list_files([data], True, True, {}, [])
        if limit and len(listing) > limit:
            listing = listing.subset(list(range(limit)))
        box["files"] = len(listing)
        ref = CatalogRef(namespace(catalog, px, mode), {})
        box["decoded"] = ingest(listing, ref, {}, px, mode, lambda images: engine, False)

    profile = cProfile.Profile(time.process_time)  # CPU seconds: a loaded machine does not inflate them
    t0, c0 = time.perf_counter(), _cpu()
    profile.runcall(work)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    stats = pstats.Stats(profile, stream=io.StringIO())
    seconds = stage_seconds(stats)
    seconds["profiled wall"], seconds["profiled CPU"] = wall, cpu
    seconds["profiled total (cProfile)"] = stats.total_tt
    return seconds, stats, box["files"]


def real_build(folder: str, catalog: str, px: int, mode: str) -> dict:
    """Wall and CPU seconds of dupflow.build on `folder` into a fresh catalog, and its own stats figures."""
    import dupflow

    t0, c0 = time.perf_counter(), _cpu()
    dif = dupflow.build(folder, catalog=catalog, px_size=px, decode=mode, show_progress=False)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    figures = dif.stats["dupflow"]["build"]
    dif.close()
    return {"wall": wall, "cpu": cpu, "seconds": figures["seconds"], "cluster": figures.get("cluster")}


def subset_folder(data: str, limit: int, into: str) -> str:
    """A folder of hard links to the first `limit` files of data (dupflow's listing order), for the real build."""
    from dupflow.sources import list_files

    listing = list_files([data], True, True, {}, [])
    for url in listing.url[:limit]:
        source = url[len("file://") :] if url.startswith("file://") else url
        target = os.path.join(into, os.path.relpath(source, data))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.link(source, target)
    return into


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="a local folder of images")
    ap.add_argument("--limit", type=int, default=20000, help="profile the first N files (0: all)")
    ap.add_argument("--px", type=int, default=50)
    ap.add_argument("--decode", choices=("exact", "fast"), default="exact")
    ap.add_argument("--top", type=int, default=20, help="functions listed by own time")
    ap.add_argument("--no-real", action="store_true", help="skip the real threaded build")
    ap.add_argument(
        "--py-spy",
        default=None,
        metavar="BIN",
        help="also sample a real build with this py-spy binary (every thread, no overhead in the build)",
    )
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="dupflow-profile-")
    try:
        seconds, stats, files = profiled_build(
            args.data, os.path.join(work, "cat1"), args.limit, args.px, args.decode
        )
        real = None
        if not args.no_real:
            folder = (
                subset_folder(args.data, files, os.path.join(work, "subset")) if args.limit else args.data
            )
            real = real_build(folder, os.path.join(work, "cat2"), args.px, args.decode)
        spy = None
        if args.py_spy:
            if args.no_real:
                folder = (
                    subset_folder(args.data, files, os.path.join(work, "subset")) if args.limit else args.data
                )
            spy = spy_build(args.py_spy, folder, os.path.join(work, "cat3"), args.px, args.decode, args.rate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = seconds["profiled CPU"]
    print(f"\n### cold build profile: {files} files of {args.data}, px {args.px}, decode {args.decode}\n")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; dupflow from {_dupflow_file()}\n")
    total = seconds["profiled total (cProfile)"]
    real_cpu = real["cpu"] if real else None
    print(
        "| stage (cumulative; nested stages are inside their totals) | profiled CPU s | share | "
        "est. ms CPU per file in a real build |"
    )
    print("| --- | ---: | ---: | ---: |")
    for label, _, _ in STAGES:
        value, share = seconds[label], seconds[label] / total
        est = f"{1000 * share * real_cpu / max(files, 1):.3f}" if real_cpu else "-"
        print(f"| {label} | {value:.2f} | {100 * share:.1f}% | {est} |")
    print(f"| whole profiled run: wall / CPU | {seconds['profiled wall']:.2f} / {cpu:.2f} | 100% | |")
    if real:
        print(
            f"| real dupflow.build ({(real['cluster'] or {}).get('kind', '?')}): wall / CPU (this process) | "
            f"{real['wall']:.2f} / {real['cpu']:.2f} | {files / real['wall']:.0f} images/s | "
            f"{1000 * real['cpu'] / files:.3f} |"
        )
    if spy:
        active = sum(v for k, v in spy["samples"].items() if k != "idle (waiting)")
        print(
            f"\npy-spy on a real build of the same files (its own process, {spy['rate']} samples/s per thread, "
            f"wall {spy['wall']:.2f} s incl. py-spy start-up): thread-seconds per stage, innermost stage wins\n"
        )
        print("| stage | thread-seconds | share of active samples | ms per file |")
        print("| --- | ---: | ---: | ---: |")
        for label, count in sorted(spy["samples"].items(), key=lambda kv: -kv[1]):
            secs = count / spy["rate"]
            share = f"{100 * count / active:.1f}%" if label != "idle (waiting)" else "-"
            print(f"| {label} | {secs:.2f} | {share} | {1000 * secs / files:.3f} |")
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("tottime").print_stats(args.top)
    print("\nTop functions by own time (profiled run):\n```")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[-6000:])
    print("```")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(
                {"files": files, "profiled": seconds, "real": real, "py_spy": spy, "load": os.getloadavg()},
                handle,
                indent=1,
            )
    return 0


def _dupflow_file() -> str:
    import dupflow

    return os.path.dirname(dupflow.__file__)


if __name__ == "__main__":
    sys.exit(main())

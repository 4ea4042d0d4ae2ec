"""Scaling series of dupflow alone: how wall time and memory grow with N (issue "Speed at scale").

    python benchmarks/scaling.py -n 10000 30000 100000

For each N the dataset comes from generate.py's cache (``--cache``, default /tmp/dupflow-bench), generated
when missing. Above 30,000 images it is a ``--small`` dataset by default (folder N_seed_small: originals only in
the four smallest sizes, 320x240 to 480x360, so 100,000 images generate in minutes instead of 15-20); the
catalog-built runs do not depend on original size, since the search reads 50x50 thumbnails. ``--small`` /
``--no-small`` force either for every N. Every run is the ``dupflow`` command as its own process (run.py's
``measure``), started from WORK (default CACHE/work/scaling), one after the other:

1. cold: ``dupflow DATA -Z OUT -p false --catalog CAT`` with CAT emptied first (list, decode every image,
   write the catalog, search exact duplicates). On by default only for N <= 30000 (``--cold``/``--no-cold``):
   at 100,000 the images are --small ones, so a cold figure would understate decoding. Without a cold run a
   catalog that is not known complete is filled first by ``dupflow.build`` alone in its own process, reported
   as "prep build" and left out of the growth figures.
2. warm duplicates: the same command again on the filled catalog (nothing to decode).
3. warm similar: ``... -s similar -dim false`` (MSE <= 5, rotations on, any dimensions).

``--runs`` picks other run kinds per N (``cold build``: ``dupflow.build`` alone into an emptied catalog, its
stats kept for the list and decode seconds); ``--mix thumb`` uses generate.py's thumbnail sets (the
1,000,000-image series), ``--catalogs`` one catalog folder per N, ``--pythonpath`` a commit's extracted
``dupflow/`` (``git archive COMMIT dupflow | tar -x -C DIR``) while the working tree is mid-edit.

Figures per run:

* wall s: subprocess start to exit (start-up, cluster, search, reports); images/s = N / wall s; CPU s: user +
  system seconds of the process tree (a loaded machine stretches wall time, not CPU time).
* peak RSS MiB: "main" is the dupflow process itself; "per worker" the largest RSS any single descendant
  reached (the Dask worker processes and their nannies); "tree" run.py's sum over the whole process tree (an
  upper bound: shared pages count once per process). Polled every 50 ms.
* from the stats' ``dupflow`` section: decoded / reused images, decode seconds, compare seconds, match edges,
  the search's cluster kind ("local threads" below 2,000 images to read, which starts no worker process; the
  whole section goes to the JSON).
* growth: between consecutive N of the list, for the same run kind, wall(N) / wall(N_prev) next to
  (N / N_prev)^2 - what a brute-force all-pairs search would grow by - and the fitted exponent
  log(time ratio) / log(N ratio) (2 = brute force, 1 = linear); the same for compare seconds. Below the
  table, per run kind, the least-squares exponent over every N (``exponents`` in the JSON).

Output: one markdown table (stdout; progress on stderr) and the raw figures in WORK/scaling_<timestamp>.json
(``--json``). Logs: WORK/logs/<key>_<run>.log; reports: WORK/out/<key>_<run>/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate  # noqa: E402  (benchmarks/generate.py)
import run  # noqa: E402  (benchmarks/run.py: measure, dupflow_cmd, versions)

SMALL_ABOVE = 30000  # default: --small datasets above this N
COLD_UP_TO = 30000  # default: a cold run up to this N
PREP_CODE = (
    "import sys, dupflow; dupflow.build(sys.argv[1], catalog=sys.argv[2], show_progress=False).close()"
)
# a cold build alone, its stats (list and decode seconds) written for the table
BUILD_CODE = (
    "import json, sys, dupflow\n"
    "dif = dupflow.build(sys.argv[1], catalog=sys.argv[2], show_progress=False)\n"
    "with open(sys.argv[3], 'w', encoding='utf-8') as f: json.dump(dif.stats, f)\n"
    "dif.close()"
)

# run kind -> (dupflow mode, same_dim); "cold build" is dupflow.build alone into an emptied catalog
RUNS = {
    "cold build": (None, None),
    "cold duplicates": ("duplicates", True),
    "warm duplicates": ("duplicates", True),
    "warm similar": ("similar", False),
}
COLD = ("cold build", "cold duplicates", "prep build")  # runs that start from an emptied catalog


@dataclass
class Row:
    """One timed process of the series."""

    n: int
    small: bool
    run: str
    command: list[str]
    mix: str = "photo"
    status: str = "ok"
    wall_s: float | None = None
    cpu_s: float | None = (
        None  # user + system seconds of the process tree (what a busy machine does not inflate)
    )
    images_per_s: float | None = None
    peak_main_mib: float | None = None
    peak_worker_mib: float | None = None
    peak_tree_mib: float | None = None
    rss_samples: int | None = None
    files_searched: int | None = None
    matches_found: dict = field(default_factory=dict)
    dupflow: dict = field(default_factory=dict)  # the stats' "dupflow" section
    growth: dict = field(default_factory=dict)  # vs the previous N of the same run kind
    load_before: list[float] = field(default_factory=list)


def _mib(value: int) -> float | None:
    return round(value / 2**20, 1) if value else None


def timed(row: Row, cwd: str, limit_s: float, log: str, out: str | None, env: dict | None = None) -> Row:
    """Run row.command as run.py does (own session, tree RSS polled, killed at the limit); read its stats."""
    row.load_before = list(os.getloadavg())
    try:
        m = run.measure(row.command, cwd, limit_s, log, env)
    except OSError as exc:
        row.status = f"could not start: {exc}"
        return row
    row.wall_s, row.rss_samples, row.cpu_s = round(m.wall_s, 3), m.samples, round(m.cpu_s, 2)
    row.peak_main_mib, row.peak_worker_mib = _mib(m.peak_root_rss), _mib(m.peak_child_rss)
    row.peak_tree_mib = _mib(m.peak_rss)
    if m.timed_out:
        row.status = f"not finished after {limit_s:g} s"
        return row
    if m.returncode != 0:
        row.status = f"failed (exit {m.returncode}): {run._tail(m.log)}"
        return row
    row.images_per_s = round(row.n / m.wall_s, 1)
    if out is not None:
        stats_path = run._newest(os.path.join(out, "dupflow_*_stats.json"))
        if stats_path is None:
            row.status = f"no stats written: {run._tail(m.log)}"
            return row
        with open(stats_path, encoding="utf-8") as handle:
            stats = json.load(handle)
        search = stats.get("process", {}).get("search", {})
        row.files_searched = search.get("files_searched")
        row.matches_found = search.get("matches_found", {})
        row.dupflow = stats.get("dupflow", {})
    return row


def add_growth(rows: list[Row]) -> None:
    """Fill growth for each row from the row of the same run kind at the previous N (in list order)."""
    last: dict[str, Row] = {}
    for row in rows:
        if row.run == "prep build" or row.status != "ok":
            continue
        prev = last.get(row.run)
        last[row.run] = row
        if prev is None or prev.n == row.n:
            continue
        n_ratio = row.n / prev.n
        growth = {
            "from_n": prev.n,
            "n_ratio": round(n_ratio, 4),
            "n2_ratio": round(n_ratio**2, 4),
            "wall_ratio": round(row.wall_s / prev.wall_s, 4),
            "wall_exponent": round(math.log(row.wall_s / prev.wall_s) / math.log(n_ratio), 3)
            if n_ratio != 1
            else None,
        }
        c_now = row.dupflow.get("search", {}).get("seconds", {}).get("compare")
        c_prev = prev.dupflow.get("search", {}).get("seconds", {}).get("compare")
        if c_now and c_prev:
            growth["compare_ratio"] = round(c_now / c_prev, 4)
            growth["compare_exponent"] = round(math.log(c_now / c_prev) / math.log(n_ratio), 3)
        if prev.small != row.small:
            growth["note"] = "datasets differ in image sizes (--small on one side)"
        row.growth = growth


def fitted_exponents(rows: list[Row]) -> dict[str, dict]:
    """Per run kind over at least two sizes: the least-squares slope of log(time) on log(N), for the wall
    time and the compare stage (1 = linear, 2 = all pairs), and the sizes it was fitted on."""
    out = {}
    for kind in dict.fromkeys(r.run for r in rows):
        ok = [r for r in rows if r.run == kind and r.status == "ok" and r.wall_s]
        if len({r.n for r in ok}) < 2:
            continue
        logn = [math.log(r.n) for r in ok]
        fit = {"sizes": [r.n for r in ok], "wall": round(_slope(logn, [math.log(r.wall_s) for r in ok]), 3)}
        compare = [r.dupflow.get("search", {}).get("seconds", {}).get("compare") for r in ok]
        if all(compare):
            fit["compare"] = round(_slope(logn, [math.log(c) for c in compare]), 3)
        out[kind] = fit
    return out


def _slope(x: list[float], y: list[float]) -> float:
    """The least-squares slope of y on x."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    """The markdown table of the whole series."""
    head = (
        "| N | images | run | wall s | CPU s | images/s | peak RSS main MiB | peak per worker MiB | peak tree MiB | "
        "decoded | reused | list s | decode s | compare s | edges | search on | "
        "wall growth (N² growth, exponent) | compare growth (exponent) | status |\n"
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | "
        "--- | --- | --- |"
    )
    lines = [head]
    for r in rows:
        build = r.dupflow.get("build", {})
        search = r.dupflow.get("search", {})
        g = r.growth
        wall_g = (
            f"×{g['wall_ratio']:.2f} vs ×{g['n2_ratio']:.2f} (exp {_f(g['wall_exponent'], '.2f')})"
            if g
            else "-"
        )
        comp_g = (
            f"×{g['compare_ratio']:.2f} (exp {g['compare_exponent']:.2f})" if g.get("compare_ratio") else "-"
        )
        if g.get("note"):
            wall_g += " †"
        images = (
            "thumbnails"
            if r.mix == "thumb"
            else r.mix
            if r.mix != "photo"
            else "small"
            if r.small
            else "full mix"
        )
        lines.append(
            f"| {r.n} | {images} | {r.run} | {_f(r.wall_s, '.2f')} | {_f(r.cpu_s, '.1f')} | "
            f"{_f(r.images_per_s, '.0f')} | {_f(r.peak_main_mib, '.0f')} | {_f(r.peak_worker_mib, '.0f')} | "
            f"{_f(r.peak_tree_mib, '.0f')} | {_f(build.get('decoded'), 'd')} | {_f(build.get('reused'), 'd')} | "
            f"{_f(build.get('seconds', {}).get('list'), '.2f')} | "
            f"{_f(build.get('seconds', {}).get('decode'), '.2f')} | "
            f"{_f(search.get('seconds', {}).get('compare'), '.2f')} | {_f(search.get('edges'), 'd')} | "
            f"{(search.get('cluster') or {}).get('kind', '-')} | {wall_g} | {comp_g} | {r.status} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="dupflow scaling series (wall time, memory, growth with N).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("-n", type=int, nargs="+", default=[10000, 30000, 100000], help="dataset sizes, in order")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--cold",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"time a cold build+search (default: only for N <= {COLD_UP_TO})",
    )
    ap.add_argument(
        "--small",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"use generate.py --small datasets (default: only for N > {SMALL_ABOVE})",
    )
    ap.add_argument(
        "--mix",
        choices=generate.MIXES,
        default="photo",
        help="dataset mix (generate.py --mix); thumb: thumbnail-sized originals, 1,000,000 files in minutes",
    )
    ap.add_argument(
        "--runs",
        nargs="+",
        choices=list(RUNS),
        default=None,
        help="run kinds per N, in order (default: cold duplicates where --cold, then warm duplicates and "
        "warm similar); a catalog not known complete is filled first by an untimed-for-growth prep build",
    )
    ap.add_argument(
        "--catalogs",
        nargs="+",
        default=None,
        help="one catalog folder per -n, in order (default: WORK/catalog/<dataset key>)",
    )
    ap.add_argument("--cache", default="/tmp/dupflow-bench", help="dataset cache (generate.cached_dataset)")
    ap.add_argument("--work", default=None, help="catalogs, reports, logs (default: CACHE/work/scaling)")
    ap.add_argument("--json", default=None, help="raw figures (default: WORK/scaling_<timestamp>.json)")
    ap.add_argument("--time-limit", type=float, default=3600, help="seconds before one run is killed")
    ap.add_argument("--gen-processes", type=int, default=2, help="processes generating a missing dataset")
    ap.add_argument(
        "--python", default=sys.executable, help="interpreter with dupflow installed (prep build)"
    )
    ap.add_argument("--dupflow-bin", default=None, help="the dupflow command (default: next to --python)")
    ap.add_argument(
        "--pythonpath",
        default=None,
        help="run another checkout's dupflow, e.g. a commit: git archive COMMIT dupflow | tar -x -C DIR",
    )
    args = ap.parse_args(argv)
    if args.catalogs is not None and len(args.catalogs) != len(args.n):
        ap.error(f"--catalogs names {len(args.catalogs)} folders for {len(args.n)} sizes (-n): one per size")
    if args.mix != "photo" and args.small:
        ap.error(f"--mix {args.mix} has its own sizes: no --small")
    args.work = args.work or os.path.join(args.cache, "work", "scaling")
    args.dupflow_bin = args.dupflow_bin or os.path.join(os.path.dirname(args.python), "dupflow")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run.prepare_work(args.work)
    json_path = args.json or os.path.join(args.work, f"scaling_{datetime.now():%Y%m%d%H%M%S}.json")
    report = {**run.report_header(), "pythonpath": args.pythonpath, "datasets": {}, "rows": []}
    env = {**os.environ, "PYTHONPATH": args.pythonpath} if args.pythonpath else None
    rows: list[Row] = []
    notes = []
    for index, n in enumerate(args.n):
        small = args.mix == "photo" and (args.small if args.small is not None else n > SMALL_ABOVE)
        cold = args.cold if args.cold is not None else n <= COLD_UP_TO
        data = generate.cached_dataset(
            args.cache, n, args.seed, args.gen_processes, small=small, mix=args.mix
        )
        key = generate.dataset_key(n, args.seed, small, mix=args.mix)
        if args.mix == "thumb":
            notes.append(
                f"N = {n}: thumbnail-sized dataset ({data}: generate.py --mix thumb, originals 24x32 to 64x48); "
                "catalog-built (warm) timings do not depend on original size; a cold build decodes tiny files"
            )
            print(notes[-1], file=sys.stderr)
        if small:
            notes.append(
                f"N = {n}: --small dataset ({data}: originals only 320x240, 240x320, 480x360, 360x480); "
                "catalog-built (warm) timings do not depend on original size"
                + ("; its cold run decodes smaller images than the full size mix" if cold else "")
            )
            print(notes[-1], file=sys.stderr)
        report["datasets"][str(n)] = {"folder": data, "small": small, "cold": cold, "mix": args.mix}
        catalog = args.catalogs[index] if args.catalogs else os.path.join(args.work, "catalog", key)
        ready = catalog + ".complete"  # written once a run has filled the catalog for this dataset
        if args.runs is not None:
            plan = list(args.runs)
        else:
            plan = (["cold duplicates"] if cold else []) + ["warm duplicates", "warm similar"]
        if not os.path.isfile(ready) and (plan[0] not in COLD) and any(k.startswith("warm") for k in plan):
            plan.insert(0, "prep build")
        for kind in plan:
            if kind in COLD:
                shutil.rmtree(catalog, ignore_errors=True)
                if os.path.exists(ready):
                    os.remove(ready)
            tag = f"{key}_{kind.replace(' ', '_')}"
            if kind == "prep build":
                out, cmd = None, [args.python, "-c", PREP_CODE, data, catalog]
            elif kind == "cold build":
                out = os.path.join(args.work, "out", tag)
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                stats_file = os.path.join(out, "dupflow_build_stats.json")
                cmd = [args.python, "-c", BUILD_CODE, data, catalog, stats_file]
            else:
                out = os.path.join(args.work, "out", tag)
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                mode, same_dim = RUNS[kind]
                cmd = run.dupflow_cmd(args.dupflow_bin, data, out, catalog, mode, same_dim, "exact")
            print(f"[{n}] {kind} ...", file=sys.stderr, flush=True)
            row = timed(
                Row(n, small, kind, cmd, args.mix),
                args.work,
                args.time_limit,
                os.path.join(args.work, "logs", f"{tag}.log"),
                out,
                env,
            )
            if row.status == "ok" and kind in COLD:
                open(ready, "w").close()
            if row.status == "ok" and kind.startswith("warm") and row.dupflow.get("build", {}).get("decoded"):
                row.status = f"ok, but not warm: decoded {row.dupflow['build']['decoded']}"
            print(f"  {row.status}, {_f(row.wall_s, '.1f')} s", file=sys.stderr, flush=True)
            rows.append(row)
            add_growth(rows)
            report["rows"] = [asdict(r) for r in rows]
            report["notes"] = notes
            report["exponents"] = fitted_exponents(rows)
            with open(json_path, "w", encoding="utf-8") as handle:
                json.dump(report, handle, indent=1)
    title = (
        f"### dupflow scaling, seed {args.seed}, {os.cpu_count()} cores "
        f"(duplicates: same_dim on; similar: MSE <= 5, rotations on, -dim false)"
    )
    print(f"\n{title}\n")
    for note in notes:
        print(f"- {note}")
    if any(r.growth.get("note") for r in rows):
        print("- † growth across datasets of different image-size mixes")
    print(
        "- peak per worker: largest RSS of any single child process; '-' = none was started (dupflow ran "
        "the work in threads of the main process, 'search on' = local threads)"
    )
    print(
        "- growth: wall(N) / wall(previous N) vs (N / previous N)^2 (brute force); exponent = "
        "log(time ratio) / log(N ratio)"
    )
    print(f"\n{table(rows)}\n")
    for kind, fit in fitted_exponents(rows).items():
        sizes = ", ".join(f"{n:,}" for n in fit["sizes"])
        compare = f", compare stage {fit['compare']:.2f}" if "compare" in fit else ""
        print(f"- growth exponent, {kind} (least squares over N = {sizes}): wall {fit['wall']:.2f}{compare}")
    print(f"raw figures: {json_path}")
    return 0 if all(r.status.startswith("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

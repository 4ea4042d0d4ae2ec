"""Time dupflow, difPy and czkawka side by side on the same generated datasets.

    python benchmarks/run.py -n 2000 10000 --mode duplicates similar --warm
    python benchmarks/run.py -n 2000 --mix real --mode similar --no-same-dim --decode fast exact --tools dupflow,czkawka

For each N, the dataset comes from generate.py's cache (``--cache``, default /tmp/dupflow-bench/N_seed, or
N_seed_real with ``--mix real``, generated when missing). Each tool runs as its own subprocess, one after the
other:

* dupflow: ``dupflow DIR -Z OUT -p false --catalog CAT [-s similar] [-dim false] [--decode fast]``; "cold" uses a
  fresh, empty catalog folder, "warm" (``--warm``) reruns with the catalog the cold run filled. With several
  ``--decode`` modes, dupflow runs once per mode (each its own catalog), in the order given.
* difPy 4.2.1: ``python -m difPy.dif -D DIR -Z OUT -p False [-s similar] [-dim False]``.
* czkawka 0.1.2: ``python benchmarks/czkawka_find.py DIR OUT.json`` (similarity level 0 for ``duplicates``, the
  binding's default level for ``similar``; czkawka has no same-dimension or exact-decode option).

Measures (one table per N and mode):

* wall s: from just before the subprocess starts to its exit (interpreter start-up, imports, cluster start-up,
  decode, search and writing the reports all included). images/s = N / wall s.
* CPU s: user + system seconds of the subprocess and its descendants: the rusage of the children it reaped
  (``RUSAGE_CHILDREN`` before/after), or, if larger, the sum of each process's last polled CPU times (covers
  descendants nobody waited for; a lower bound by up to one poll interval each).
* peak RSS MiB: the largest sum of RSS over the subprocess and all its descendants (Dask workers, pools),
  polled with psutil every 50 ms. Shared pages are counted once per process, so this overstates real use.
* vs difPy: difPy's wall s / the tool's wall s (a speed-up, > 1 = faster than difPy). When difPy was killed at
  its limit L, it is a lower bound written ">L/wall".
* vs czkawka / CPU vs czkawka: czkawka's wall s (CPU s) / the tool's (> 1 = faster than czkawka).
* recall: the share of planted pairs (ground_truth.json) whose two files end up in the same group, where a
  group is a connected component of the reported links (primary-match for dupflow and difPy; for czkawka each
  group's first file linked to the others). Per planted kind in a second table. A kind the mode cannot find
  (a resize under same_dim=True, a re-encode under "duplicates") shows as low recall on purpose.
* precision: the share of reported links whose two files belong to the same planted family (an original and
  all copies planted from it, so a link between two copies of one original counts as correct). "-" when a
  tool reports nothing.

A tool killed at its time limit is reported as "not finished after L s" (with the peak RSS reached so far).
Raw figures (and versions, load average, commands) go to a JSON file (``--json``, default under the work dir).
The machine should be otherwise idle: the script warns when the load average is high at the start.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Iterable

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate  # noqa: E402  (benchmarks/generate.py)

TOOLS = ("dupflow", "difpy", "czkawka")
POLL_S = 0.05


@dataclass
class Measurement:
    """One timed subprocess: exit status, wall seconds, peak tree RSS, whether it was killed at the limit."""

    returncode: int | None
    wall_s: float
    peak_rss: int
    samples: int
    timed_out: bool
    log: str
    peak_root_rss: int = 0  # the largest RSS of the started process alone
    peak_child_rss: int = 0  # the largest RSS any single descendant (a Dask worker, a pool process) reached
    cpu_s: float = 0.0  # user + system CPU seconds of the process and the descendants it reaped


@dataclass
class Row:
    """One tool run on one dataset: the figures the table and the JSON report."""

    n: int
    mode: str
    tool: str
    run: str
    same_dim: bool
    decode: str
    command: list[str]
    status: str = "ok"
    wall_s: float | None = None
    cpu_s: float | None = None
    images_per_s: float | None = None
    peak_rss_mib: float | None = None
    rss_samples: int | None = None
    limit_s: float | None = None
    files_searched: int | None = None
    reported_links: int | None = None
    groups: int | None = None
    recall: float | None = None
    precision: float | None = None
    recall_per_kind: dict[str, float] = field(default_factory=dict)
    vs_difpy: str | None = None
    vs_czkawka: str | None = None
    cpu_vs_czkawka: str | None = None
    mix: str = "photo"
    load_before: list[float] = field(default_factory=list)
    detail: str = ""


class TreeSampler(threading.Thread):
    """Polls the summed RSS of a process and all its descendants; keeps the peak (and each process's own peak)."""

    def __init__(self, pid: int, interval: float = POLL_S):
        """Watch process pid (and its descendants) every interval seconds once started."""
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak, self.samples = 0, 0
        self.peak_by_pid: dict[int, int] = {}
        self.cpu_by_pid: dict[int, float] = {}  # last user + system seconds seen per process
        self.stopped = threading.Event()

    @property
    def peak_root(self) -> int:
        """The largest RSS seen for the watched process itself."""
        return self.peak_by_pid.get(self.pid, 0)

    @property
    def peak_child(self) -> int:
        """The largest RSS seen for any single descendant (0 when none was seen)."""
        return max((rss for pid, rss in self.peak_by_pid.items() if pid != self.pid), default=0)

    def sample(self) -> int | None:
        """Current summed RSS in bytes, or None once the root process is gone."""
        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return None
        total = 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
                times = proc.cpu_times()
            except psutil.Error:
                continue
            self.cpu_by_pid[proc.pid] = times.user + times.system
            total += rss
            if rss > self.peak_by_pid.get(proc.pid, 0):
                self.peak_by_pid[proc.pid] = rss
        return total

    def run(self) -> None:
        """Sample until stopped (or the root process disappears)."""
        while not self.stopped.is_set():
            rss = self.sample()
            if rss is None:
                break
            self.peak, self.samples = max(self.peak, rss), self.samples + 1
            self.stopped.wait(self.interval)


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group we started (the tool and any worker it left behind)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def measure(cmd: list[str], cwd: str, limit_s: float, log_path: str, env: dict | None = None) -> Measurement:
    """Run cmd in its own session with stdout+stderr to log_path; time it, poll tree RSS, kill it at limit_s."""
    with open(log_path, "wb") as log:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        timed_out = False
        try:
            proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            proc.wait()
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sampler.stopped.set()
        sampler.join()
        _kill_group(proc.pid)  # stragglers (orphaned workers) of a finished run
    return Measurement(
        None if timed_out else proc.returncode,
        wall,
        sampler.peak,
        sampler.samples,
        timed_out,
        log_path,
        sampler.peak_root,
        sampler.peak_child,
        # reaped descendants are in the rusage; a sampled sum covers any the tool did not wait for
        max(
            (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            sum(sampler.cpu_by_pid.values()),
        ),
    )


def _tail(path: str, lines: int = 5) -> str:
    """The last lines of a log file, joined with ' | ' (for a failed run's status)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return " | ".join(line.strip() for line in handle.read().strip().splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------------------
# commands


def dupflow_cmd(
    bin_path: str, data: str, out: str, catalog: str, mode: str, same_dim: bool, decode: str
) -> list[str]:
    """The dupflow command line for one run."""
    cmd = [bin_path, data, "-Z", out, "-p", "false", "--catalog", catalog]
    if mode == "similar":
        cmd += ["-s", "similar"]
    if not same_dim:
        cmd += ["-dim", "false"]
    if decode != "exact":
        cmd += ["--decode", decode]
    return cmd


def difpy_cmd(python: str, data: str, out: str, mode: str, same_dim: bool) -> list[str]:
    """The difPy 4.2.1 command line for one run."""
    cmd = [python, "-m", "difPy.dif", "-D", data, "-Z", out, "-p", "False"]
    if mode == "similar":
        cmd += ["-s", "similar"]
    if not same_dim:
        cmd += ["-dim", "False"]
    return cmd


def czkawka_cmd(python: str, data: str, out_json: str, mode: str) -> list[str]:
    """The czkawka runner command line (level 0 for duplicates, the binding's default for similar)."""
    level = "0" if mode == "duplicates" else "default"
    return [python, os.path.join(HERE, "czkawka_find.py"), data, out_json, "--similarity", level]


# ---------------------------------------------------------------------------------------------------------
# results -> links -> recall / precision


class UnionFind:
    """Disjoint sets over hashable items (path strings)."""

    def __init__(self) -> None:
        """No links yet: every item is its own set."""
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        """Representative of x's set (x alone if never linked)."""
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        """Merge the sets of a and b."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def relative(path: str, root: str) -> str:
    """A tool's reported path, relative to the dataset root and '/'-separated."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    return os.path.relpath(os.path.realpath(path), os.path.realpath(root)).replace(os.sep, "/")


def links_from_result(result: dict, root: str) -> list[tuple[str, str]]:
    """(primary, match) links of a difPy-format result {primary: [[match, mse], ...]}."""
    return [
        (relative(primary, root), relative(match[0], root))
        for primary, matches in result.items()
        for match in matches
    ]


def links_from_groups(groups: Iterable[list[str]], root: str) -> list[tuple[str, str]]:
    """(first, other) links of a list of groups (czkawka)."""
    links = []
    for group in groups:
        paths = [relative(p, root) for p in group]
        links += [(paths[0], other) for other in paths[1:]]
    return links


def score(links: list[tuple[str, str]], truth: list[dict]) -> dict:
    """Recall (overall and per kind), precision, group count for reported links against planted pairs."""
    found = UnionFind()
    for a, b in links:
        found.union(a, b)
    family = UnionFind()
    for pair in truth:
        family.union(pair["a"], pair["b"])
    hits: dict[str, list[int]] = {}
    for pair in truth:
        ok = found.find(pair["a"]) == found.find(pair["b"])
        counts = hits.setdefault(pair["kind"], [0, 0])
        counts[0] += ok
        counts[1] += 1
    total_hits = sum(h for h, _ in hits.values())
    correct = sum(family.find(a) == family.find(b) for a, b in links)
    groups = len({found.find(x) for link in links for x in link})
    return {
        "recall": total_hits / len(truth) if truth else None,
        "precision": correct / len(links) if links else None,
        "recall_per_kind": {k: h / t for k, (h, t) in sorted(hits.items())},
        "reported_links": len(links),
        "groups": groups,
    }


def _newest(pattern: str) -> str | None:
    """The newest file matching a glob pattern, if any."""
    files = sorted(glob.glob(pattern), key=os.path.getmtime)
    return files[-1] if files else None


def read_report(tool: str, out: str) -> tuple[list[tuple[str, str]] | None, int | None, str]:
    """Links and files_searched from a finished run's output folder/file (links None if none was written)."""
    if tool == "czkawka":
        if not os.path.isfile(out):
            return None, None, ""
        with open(out, encoding="utf-8") as handle:
            doc = json.load(handle)
        return doc["groups"], None, f"czkawka similarity={doc['similarity']}"
    prefix = "dupflow" if tool == "dupflow" else "difPy"
    results = _newest(os.path.join(out, f"{prefix}_*_results.json"))
    stats = _newest(os.path.join(out, f"{prefix}_*_stats.json"))
    if results is None:
        return None, None, ""
    with open(results, encoding="utf-8") as handle:
        result = json.load(handle)
    searched, detail = None, ""
    if stats:
        with open(stats, encoding="utf-8") as handle:
            doc = json.load(handle)
        searched = doc.get("process", {}).get("search", {}).get("files_searched")
        ours = doc.get("dupflow", {}).get("build", {})
        if ours:
            detail = f"decoded={ours.get('decoded')} reused={ours.get('reused')}"
    return result, searched, detail


# ---------------------------------------------------------------------------------------------------------
# one benchmark cell


@dataclass
class Setup:
    """Everything fixed for a whole benchmark invocation."""

    work: str
    python: str
    dupflow_bin: str
    same_dim: bool
    decode: str  # the default decode of dupflow runs
    limit_s: float
    difpy_limit_s: float
    mix: str = "photo"


def run_tool(
    setup: Setup,
    tool: str,
    run: str,
    data: str,
    n: int,
    mode: str,
    truth: list[dict],
    decode: str | None = None,
) -> Row:
    """Run one tool once on one dataset (cold, or warm for dupflow; decode: dupflow's, default setup's) and score it."""
    decode = decode or setup.decode
    key = f"{n}_{setup.mix}" if setup.mix != "photo" else f"{n}"
    suffix = f"_{decode}" if tool == "dupflow" and decode != "exact" else ""
    tag = f"{key}_{mode}_{tool}{suffix}_{run}"
    out = os.path.join(setup.work, "out", tag)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    env = dict(os.environ)
    limit = setup.limit_s
    if tool == "dupflow":
        catalog = os.path.join(setup.work, "catalog", f"{key}_{mode}{suffix}")
        if run == "cold":
            shutil.rmtree(catalog, ignore_errors=True)
        cmd = dupflow_cmd(setup.dupflow_bin, data, out, catalog, mode, setup.same_dim, decode)
    elif tool == "difpy":
        cmd, limit = difpy_cmd(setup.python, data, out, mode, setup.same_dim), setup.difpy_limit_s
    else:
        out = os.path.join(out, "groups.json")
        env["XDG_CACHE_HOME"] = os.path.join(setup.work, "out", tag, "xdg-cache")  # no cache reuse, ever
        cmd = czkawka_cmd(setup.python, data, out, mode)
    row = Row(
        n,
        mode,
        tool,
        run,
        setup.same_dim if tool != "czkawka" else False,
        decode if tool == "dupflow" else "-",
        cmd,
        limit_s=limit,
        mix=setup.mix,
        load_before=list(os.getloadavg()),
    )
    try:
        m = measure(cmd, setup.work, limit, os.path.join(setup.work, "logs", f"{tag}.log"), env)
    except OSError as exc:  # the command itself is missing or not executable
        row.status = f"could not start: {exc}"
        return row
    row.wall_s, row.cpu_s, row.peak_rss_mib, row.rss_samples = (
        round(m.wall_s, 3),
        round(m.cpu_s, 2),
        round(m.peak_rss / 2**20, 1),
        m.samples,
    )
    if m.timed_out:
        row.status = f"not finished after {limit:g} s"
        return row
    if m.returncode != 0:
        row.status = f"failed (exit {m.returncode}): {_tail(m.log)}"
        return row
    report, row.files_searched, row.detail = read_report(tool, out)
    if report is None:
        row.status = f"no report written: {_tail(m.log)}"
        return row
    links = links_from_groups(report, data) if tool == "czkawka" else links_from_result(report, data)
    row.images_per_s = round(n / m.wall_s, 1)
    for key, value in score(links, truth).items():
        setattr(row, key, value)
    return row


def add_ratios(rows: list[Row]) -> None:
    """Fill vs_difpy / vs_czkawka (wall) and cpu_vs_czkawka for every row of one (N, mode) cell."""
    cz = next((r for r in rows if r.tool == "czkawka" and r.status == "ok" and r.wall_s), None)
    if cz is not None:
        for row in rows:
            if row.status == "ok" and row.wall_s:
                row.vs_czkawka = f"{cz.wall_s / row.wall_s:.2f}x"
                if row.cpu_s and cz.cpu_s:
                    row.cpu_vs_czkawka = f"{cz.cpu_s / row.cpu_s:.2f}x"
    ref = next((r for r in rows if r.tool == "difpy"), None)
    if ref is None:
        return
    for row in rows:
        if row.status != "ok" or row.wall_s is None:
            continue
        if ref.status == "ok":
            row.vs_difpy = f"{ref.wall_s / row.wall_s:.2f}x"
        elif ref.status.startswith("not finished"):
            row.vs_difpy = f">{ref.limit_s / row.wall_s:.2f}x"


# ---------------------------------------------------------------------------------------------------------
# output


def _fmt(value: float | None, spec: str = ".3f") -> str:
    """A number for the table, '-' when missing."""
    return "-" if value is None else format(value, spec)


def main_table(rows: list[Row]) -> str:
    """The markdown table of one (N, mode) cell."""
    head = (
        "| tool | decode | run | wall s | CPU s | images/s | peak RSS MiB | vs difPy | vs czkawka | "
        "CPU vs czkawka | recall | precision | links | status |\n"
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r.tool} | {r.decode} | {r.run} | {_fmt(r.wall_s, '.2f')} | {_fmt(r.cpu_s, '.1f')} | "
            f"{_fmt(r.images_per_s, '.1f')} | {_fmt(r.peak_rss_mib, '.0f')} | {r.vs_difpy or '-'} | "
            f"{r.vs_czkawka or '-'} | {r.cpu_vs_czkawka or '-'} | {_fmt(r.recall)} | "
            f"{_fmt(r.precision)} | {r.reported_links if r.reported_links is not None else '-'} | "
            f"{r.status} |"
        )
    return "\n".join(lines)


def kind_table(rows: list[Row], truth: list[dict]) -> str:
    """The markdown table of recall per planted kind (columns: tool/run)."""
    counts: dict[str, int] = {}
    for pair in truth:
        counts[pair["kind"]] = counts.get(pair["kind"], 0) + 1
    scored = [r for r in rows if r.status == "ok"]
    lines = [
        "| kind | pairs | "
        + " | ".join(f"{r.tool}{' ' + r.decode if r.tool == 'dupflow' else ''} {r.run}" for r in scored)
        + " |",
        "| --- | ---: |" + " ---: |" * len(scored),
    ]
    for kind in sorted(counts):
        cells = " | ".join(_fmt(r.recall_per_kind.get(kind), ".2f") for r in scored)
        lines.append(f"| {kind} | {counts[kind]} | {cells} |")
    return "\n".join(lines)


def report_header() -> dict:
    """What every benchmark report starts with: when, how it was called, the machine and the versions."""
    return {
        "started": datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
        },
        "versions": versions(),
    }


def versions() -> dict[str, str | None]:
    """Versions of the compared tools and the libraries they share."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("dupflow", "difPy", "czkawka", "Pillow", "numpy", "dask", "distributed", "psutil"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(
        description="Time dupflow vs difPy (and czkawka) on generated datasets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("-n", type=int, nargs="+", default=[2000], help="dataset sizes (image files)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", nargs="+", choices=("duplicates", "similar"), default=["duplicates"])
    ap.add_argument(
        "--same-dim",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="difPy/dupflow same_dim (czkawka has no such option)",
    )
    ap.add_argument(
        "--decode",
        nargs="+",
        choices=("exact", "fast"),
        default=["exact"],
        help="dupflow's --decode; several: one dupflow run (cold, and warm with --warm) per mode, side by side",
    )
    ap.add_argument(
        "--mix",
        choices=generate.MIXES,
        default="photo",
        help="dataset mix (generate.py --mix): photo-like, or real (photos, screenshots, icons, wallpapers)",
    )
    ap.add_argument("--warm", action="store_true", help="also time dupflow rerun on its filled catalog")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    ap.add_argument("--time-limit", type=float, default=600, help="seconds before a run is killed")
    ap.add_argument(
        "--difpy-limit", type=float, default=None, help="difPy's own limit (default: --time-limit)"
    )
    ap.add_argument("--cache", default="/tmp/dupflow-bench", help="dataset cache folder (N_seed sub-folders)")
    ap.add_argument("--work", default=None, help="tool outputs, catalogs, logs (default: CACHE/work)")
    ap.add_argument("--json", default=None, help="raw figures (default: WORK/results_<timestamp>.json)")
    ap.add_argument("--python", default=sys.executable, help="interpreter with difPy and czkawka installed")
    ap.add_argument("--dupflow-bin", default=None, help="the dupflow command (default: next to --python)")
    args = ap.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(args.tools) - set(TOOLS)
    if unknown:
        ap.error(f"unknown tools: {', '.join(sorted(unknown))}")
    args.work = args.work or os.path.join(args.cache, "work")
    args.dupflow_bin = args.dupflow_bin or os.path.join(os.path.dirname(args.python), "dupflow")
    return args


def plan_runs(tools: list[str], warm: bool, decodes: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(tool, run, decode) in the order they execute; only dupflow has a warm rerun and one run per decode."""
    runs = []
    for tool in tools:
        for decode in (decodes or ["exact"]) if tool == "dupflow" else ["-"]:
            runs.append((tool, "cold", decode))
            if tool == "dupflow" and warm:
                runs.append((tool, "warm", decode))
    return runs


def prepare_work(work: str) -> None:
    """Make the work folder's out/logs/catalog sub-folders; warn when the machine is busy (noisy timings)."""
    for sub in ("out", "logs", "catalog"):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: load average {load:.2f} on {os.cpu_count()} cores: timings will be noisy",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    """Generate/reuse datasets, run every tool per N and mode, print tables, write the JSON."""
    args = parse_args(argv)
    prepare_work(args.work)
    setup = Setup(
        args.work,
        args.python,
        args.dupflow_bin,
        args.same_dim,
        args.decode[0],
        args.time_limit,
        args.difpy_limit or args.time_limit,
        args.mix,
    )
    report = {**report_header(), "cells": []}
    json_path = args.json or os.path.join(args.work, f"results_{datetime.now():%Y%m%d%H%M%S}.json")
    for n in args.n:
        data = generate.cached_dataset(args.cache, n, args.seed, mix=args.mix)
        with open(os.path.join(data, "ground_truth.json"), encoding="utf-8") as handle:
            truth = json.load(handle)
        for mode in args.mode:
            rows = []
            for tool, run, decode in plan_runs(args.tools, args.warm, args.decode):
                label = f"{tool} {decode} {run}" if tool == "dupflow" else f"{tool} {run}"
                print(f"[{n} {mode}] {label} ...", file=sys.stderr, flush=True)
                rows.append(
                    run_tool(setup, tool, run, data, n, mode, truth, decode if tool == "dupflow" else None)
                )
            add_ratios(rows)
            title = (
                f"### N = {n}, {args.mix} mix, {mode}, same_dim={args.same_dim}, "
                f"dupflow decode={'/'.join(args.decode)} ({len(truth)} planted pairs, seed {args.seed})"
            )
            print(
                f"\n{title}\n\n{main_table(rows)}\n\nrecall per planted kind:\n\n{kind_table(rows, truth)}\n",
                flush=True,
            )
            report["cells"].append(
                {
                    "n": n,
                    "mode": mode,
                    "mix": args.mix,
                    "dataset": data,
                    "planted_pairs": len(truth),
                    "rows": [asdict(r) for r in rows],
                }
            )
            with open(json_path, "w", encoding="utf-8") as handle:
                json.dump(report, handle, indent=1)
    print(f"raw figures: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

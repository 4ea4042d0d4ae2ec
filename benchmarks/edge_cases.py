"""Two memory edge cases, each run as its own process (wall time and peak RSS of the process tree):

    python benchmarks/edge_cases.py identical [-n 10000]      # N byte-identical images, duplicates
    python benchmarks/edge_cases.py big-px [-n 100] [--px 5000]  # N photos at px_size 5000, both modes

`identical`: N copies of one small PNG under different names (blank scans, black frames). The catalog is
built first in its own process ("build"), then the search runs alone on it ("search", catalog built):
threshold 0 links each copy once to its class head (star edges), so time and memory grow linearly.

`big-px`: N distinct photo-like PNGs (640x480) at a large px_size: duplicates cold (the build decodes and
writes every tensor), then similar (rotations, any size) on the catalog that run built, so the search's own
peak shows without paying the build twice (about 445 s at 5000 px). Blocks and decode partitions are sized by
bytes (float64 included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import run  # noqa: E402  (benchmarks/run.py: measure)
from imagegen import photo  # noqa: E402

__all__ = ["main"]

BUILD = "import sys, dupflow; dupflow.build(sys.argv[1], catalog=sys.argv[2], px_size={px}, show_progress=False).close()"
SEARCH = """import json, sys, time, dupflow
t0 = time.perf_counter()
with dupflow.build(sys.argv[1], catalog=sys.argv[2], px_size={px}, show_progress=False) as dif:
    found = dupflow.search(dif, similarity={similarity}, same_dim=False, show_progress=False)
    print(json.dumps({{"seconds": time.perf_counter() - t0, "groups": len(found.result),
                      "lower_quality": len(found.lower_quality), "edges": found.stats["dupflow"]["search"]["edges"],
                      "matches": found.stats["process"]["search"]["matches_found"]}}))
"""


def _identical(folder: str, n: int) -> None:
    """N copies of one 64x48 PNG, in sub-folders of 1,000."""
    os.makedirs(folder, exist_ok=True)
    data = _png(photo(1, 64, 48))
    for k in range(n):
        sub = os.path.join(folder, f"d{k // 1000:03d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"same_{k:06d}.png"), "wb") as handle:
            handle.write(data)


def _distinct(folder: str, n: int) -> None:
    """N distinct photo-like 640x480 PNGs (two of them byte copies of others, so something matches)."""
    os.makedirs(folder, exist_ok=True)
    for k in range(n):
        Image.fromarray(photo(100 + k % (n - 2), 640, 480)).save(os.path.join(folder, f"p_{k:04d}.png"))


def _png(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _timed(name: str, code: str, args: list[str], work: str, limit: float) -> dict:
    log = os.path.join(work, f"{name}.log")
    m = run.measure([sys.executable, "-c", code, *args], work, limit, log)
    with open(log, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().strip().splitlines()
    out = {
        "run": name,
        "status": m.returncode,
        "wall_s": round(m.wall_s, 2),
        "peak_tree_mib": m.peak_rss >> 20,
    }
    try:
        out.update(json.loads(lines[-1]))
    except (IndexError, ValueError):
        out["log_tail"] = lines[-3:]
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", choices=["identical", "big-px"])
    ap.add_argument("-n", type=int, default=None)
    ap.add_argument("--px", type=int, default=5000)
    ap.add_argument("--work", default="/tmp/dupflow-bench/edge")
    ap.add_argument("--time-limit", type=float, default=1800)
    args = ap.parse_args(argv)
    work = os.path.join(args.work, args.case)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    data, catalog = os.path.join(work, "data"), os.path.join(work, "catalog")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    if args.case == "identical":
        _identical(data, args.n or 10000)
        _timed("build", BUILD.format(px=50), [data, catalog], work, args.time_limit)
        _timed("search", SEARCH.format(px=50, similarity=0), [data, catalog], work, args.time_limit)
    else:
        _distinct(data, args.n or 100)
        for run_name, similarity in (("cold duplicates", 0), ("catalog built, similar", 50)):
            code = SEARCH.format(px=args.px, similarity=similarity)
            _timed(f"{run_name} px {args.px}", code, [data, catalog], work, args.time_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

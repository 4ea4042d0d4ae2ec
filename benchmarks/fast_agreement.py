"""How close `decode="fast"` thumbnails are to exact ones, per image (the figure the README publishes).

    python benchmarks/fast_agreement.py [-n 2000] [--seed 0] [--limit 1000] [--mix photo|real]

Decodes each file of a generated dataset both ways with dupflow's own decoder and prints the distribution
of the per-image MSE between the two 50x50 thumbnails, split by format (and, for the real mix, by kind of
file: photos, screenshots, wallpapers, graphics, copies), plus the CPU time per image of each mode.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from generate import cached_dataset  # noqa: E402

from dupflow.decode import decode_image  # noqa: E402


def image_files(folder: str) -> list[str]:
    """Every image file of a dataset folder, sorted."""
    out = []
    for root, _, names in os.walk(folder):
        out += [os.path.join(root, n) for n in names if n.lower().endswith((".jpg", ".jpeg", ".png"))]
    return sorted(out)


def agreement(paths: list[str], px: int, root: str = "") -> dict[str, dict]:
    """Per-format (per sub-folder and format, given the dataset root) lists of MSE(fast, exact), and the
    CPU milliseconds per image each mode took, per kind and over all files."""
    mses: dict[str, list[float]] = {}
    seconds: dict[str, dict[str, float]] = {}
    for path in paths:
        data = open(path, "rb").read()
        kind = os.path.splitext(path)[1].lower().lstrip(".")
        if root:
            kind = os.path.relpath(path, root).split(os.sep)[0] + "." + kind
        tensors = {}
        for mode in ("exact", "fast"):
            start = time.thread_time()
            tensors[mode] = decode_image(data, px, mode)[0].astype(np.float64)
            for key in (kind, "all"):
                spent = seconds.setdefault(key, {"exact": 0.0, "fast": 0.0})
                spent[mode] += time.thread_time() - start
        mses.setdefault(kind, []).append(float(((tensors["exact"] - tensors["fast"]) ** 2).mean()))
    mses["all"] = [m for kind in list(mses) for m in mses[kind]]
    ms = {k: {m: 1000 * v / len(mses[k]) for m, v in spent.items()} for k, spent in seconds.items()}
    return {"mses": mses, "ms_per_image": ms}


def main(argv: list[str] | None = None) -> int:
    """Command line: print the agreement table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=1000, help="files to decode (evenly spaced)")
    ap.add_argument("--px", type=int, default=50)
    ap.add_argument("--cache", default="/tmp/dupflow-bench", help="dataset cache (generate.cached_dataset)")
    ap.add_argument(
        "--mix", choices=("photo", "real"), default="photo", help="dataset mix (generate.py --mix)"
    )
    args = ap.parse_args(argv)
    root = str(cached_dataset(args.cache, args.n, args.seed, mix=args.mix))
    paths = image_files(root)
    paths = paths[:: max(1, len(paths) // args.limit)][: args.limit]
    found = agreement(paths, args.px, root if args.mix == "real" else "")
    print(
        "| files | n | median MSE | share <= 1 | p99 | max | CPU ms exact | CPU ms fast |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for kind, values in sorted(found["mses"].items()):
        m, ms = np.array(values), found["ms_per_image"][kind]
        print(
            f"| {kind} | {len(m)} | {np.median(m):.3f} | {(m <= 1).mean():.3f} | "
            f"{np.percentile(m, 99):.2f} | {m.max():.2f} | {ms['exact']:.2f} | {ms['fast']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

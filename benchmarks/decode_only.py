"""Decode-only series: plain Pillow decode+resize with a process pool vs dupflow's build, images/s side by side.

    python benchmarks/decode_only.py -n 2000 10000 [--decode exact|fast] [--processes 2] [--mix photo|real]

Over the same generated files (generate.py's cache, as in run.py):

* pillow: a ``multiprocessing.Pool(P)`` mapping difPy's recipe over every file - open, convert to RGB,
  BICUBIC resize to px x px, to a numpy array (the arrays are returned to the parent, as a decoder must).
  Timed from creating the pool to having every array back (pool start-up included).
* pillow+draft (only with ``--decode fast``): the same, with ``Image.draft("RGB", (2px, 2px))`` first, which lets
  libjpeg decode at a reduced DCT scale - the idea behind dupflow's ``--decode fast``.
* decode_image on P threads / P processes: dupflow's own per-file decoder (libdeflate PNG path, fast mode's
  draft and reduction) mapped over every file by a thread pool and by a process pool of the same size, which
  shows whether decoding is held back by the GIL (dupflow's local cluster runs threads on small machines).
* dupflow build: ``dupflow.build(DIR, catalog=<fresh folder>, decode=..., processes=P)`` in this process -
  listing, starting its Dask workers, decoding and writing the Parquet catalog. "decode s" is the build's own
  ``stats["dupflow"]["build"]["seconds"]["decode"]`` (the same minus listing), for reference.

Every row is cold (nothing cached); the files are read once before timing so that every row sees the same
warm page cache. images/s = files / seconds; "vs pillow" = pillow seconds / row seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate  # noqa: E402  (benchmarks/generate.py)

EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(folder: str) -> list[str]:
    """Every image file under folder, sorted by path."""
    found = []
    for dirpath, _, names in os.walk(folder):
        found += [os.path.join(dirpath, n) for n in names if n.lower().endswith(EXTENSIONS)]
    return sorted(found)


def warm_page_cache(paths: list[str]) -> int:
    """Read every file once (so no row pays for the first disk read); return the bytes read."""
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            total += len(handle.read())
    return total


def pillow_thumb(job: tuple[str, int, bool]) -> np.ndarray:
    """difPy's recipe for one file: open, RGB, BICUBIC px x px (optionally with a JPEG draft first)."""
    path, px, draft = job
    with Image.open(path) as img:
        if draft and img.format == "JPEG":
            img.draft("RGB", (2 * px, 2 * px))
        if img.getbands() != ("R", "G", "B"):
            img = img.convert("RGB")
        return np.asarray(img.resize((px, px), resample=Image.BICUBIC), dtype=np.uint8)


def time_pillow(paths: list[str], px: int, processes: int, draft: bool) -> float:
    """Seconds for a Pool(processes) to decode every path into a px x px x 3 array."""
    t0 = time.perf_counter()
    with Pool(processes) as pool:
        arrays = pool.map(pillow_thumb, [(p, px, draft) for p in paths], chunksize=16)
    seconds = time.perf_counter() - t0
    assert len(arrays) == len(paths)
    return seconds


def dupflow_thumb(job: tuple[str, int, str]) -> np.ndarray:
    """dupflow's decoder for one file (read, decode, thumbnail)."""
    from dupflow.decode import decode_image

    path, px, decode = job
    with open(path, "rb") as handle:
        return decode_image(handle.read(), px, decode)[0]


def time_decode_image(paths: list[str], px: int, processes: int, decode: str, threads: bool) -> float:
    """Seconds for `processes` threads (or processes) to run dupflow's decode_image over every path."""
    jobs = [(p, px, decode) for p in paths]
    t0 = time.perf_counter()
    if threads:
        with ThreadPoolExecutor(processes) as pool:
            arrays = list(pool.map(dupflow_thumb, jobs))
    else:
        with Pool(processes) as pool:
            arrays = pool.map(dupflow_thumb, jobs, chunksize=16)
    seconds = time.perf_counter() - t0
    assert len(arrays) == len(paths)
    return seconds


def time_dupflow(folder: str, px: int, processes: int, decode: str) -> tuple[float, float | None, int]:
    """(build seconds, dupflow's own decode seconds, images decoded) for a build into a fresh catalog."""
    import dupflow

    catalog = tempfile.mkdtemp(prefix="dupflow-decode-only-")
    try:
        t0 = time.perf_counter()
        dif = dupflow.build(
            folder, px_size=px, show_progress=False, processes=processes, catalog=catalog, decode=decode
        )
        seconds = time.perf_counter() - t0
        ours = dif.stats.get("dupflow", {}).get("build", {})
        dif.close()
    finally:
        shutil.rmtree(catalog, ignore_errors=True)
    return seconds, ours.get("seconds", {}).get("decode"), int(ours.get("decoded", 0))


def series(folder: str, px: int, processes: int, decode: str) -> list[dict]:
    """The rows of one dataset: pillow (and pillow+draft), then dupflow build."""
    paths = list_images(folder)
    warm_page_cache(paths)
    n = len(paths)
    rows = [{"decoder": "pillow", "seconds": time_pillow(paths, px, processes, False), "decode_s": None}]
    if decode == "fast":
        rows.append(
            {"decoder": "pillow+draft", "seconds": time_pillow(paths, px, processes, True), "decode_s": None}
        )
    for threads in (True, False):
        pool = f"{processes} threads" if threads else f"{processes} processes"
        seconds = time_decode_image(paths, px, processes, decode, threads)
        rows.append(
            {"decoder": f"dupflow decode_image ({decode}), {pool}", "seconds": seconds, "decode_s": None}
        )
    seconds, decode_s, decoded = time_dupflow(folder, px, processes, decode)
    if decoded != n:
        print(f"warning: dupflow decoded {decoded} of {n} files", file=sys.stderr)
    rows.append({"decoder": f"dupflow build ({decode})", "seconds": seconds, "decode_s": decode_s})
    base = rows[0]["seconds"]
    for row in rows:
        row.update(n=n, images_per_s=n / row["seconds"], vs_pillow=base / row["seconds"])
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of all rows."""
    lines = [
        "| N | decoder | seconds | images/s | vs pillow | decode s (dupflow stats) |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        dec = "-" if r["decode_s"] is None else f"{r['decode_s']:.2f}"
        lines.append(
            f"| {r['n']} | {r['decoder']} | {r['seconds']:.2f} | {r['images_per_s']:.1f} | "
            f"{r['vs_pillow']:.2f}x | {dec} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: decode_only.py -n N... [--decode] [--processes] [--px] [--cache] [--json]."""
    ap = argparse.ArgumentParser(
        description="Decode-only images/s: Pillow pool vs dupflow build.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("-n", type=int, nargs="+", default=[2000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decode", choices=("exact", "fast"), default="exact")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--px", type=int, default=50)
    ap.add_argument("--cache", default="/tmp/dupflow-bench")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument(
        "--mix", choices=("photo", "real"), default="photo", help="dataset mix (generate.py --mix)"
    )
    args = ap.parse_args(argv)
    rows: list[dict] = []
    for n in args.n:
        folder = generate.cached_dataset(args.cache, n, args.seed, mix=args.mix)
        rows += series(folder, args.px, args.processes, args.decode)
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

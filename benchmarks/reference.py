"""The ingest gate at scale: 1,000 new images searched against a large reference (`--reference`), catalog built.

    .venv/bin/python benchmarks/reference.py --sizes 25000 100000 --new 1000 --repeat 3 --check 2000

What it measures, per reference size: the whole `dupflow NEW --reference ... -s similar -ro true -dim false`
process (start-up, listing, catalog reuse, search, outputs), the compare stage alone, and the edges found,
with the catalog already holding every thumbnail (one untimed run first builds it). The reference grows 4x
between the two sizes; pruned work that grows with new x reference grows about 4x, work that grew with
reference^2 would grow 16x. `--full` also times a plain search of new + the smaller reference as one set
(what the ingest gate avoids: every reference pair compared again).

Data (deterministic, cached under --cache): the reference is generate.py's plan (photo-like renders, 12%
planted copies inside it) with every size divided by 4 (80x60 ... 120x90), since the search only reads
50x50 thumbnails and rendering 100,000 images at full size takes hours on a shared 2-core machine; the new
batch is a 900-image plan of another seed (its own copies inside it) plus 100 edits of reference originals
(byte copies, quarter turns, brightness +2..+8, JPEG re-encodes, 75% resizes) drawn from the first quarter
of the reference, so both sizes hold them.

`--check K` verifies exactness against a brute-force float64 reference that decodes the files again (never
the catalog): every reported pair (its MSE bit for bit), every new x new pair, and new x (K sampled
reference images + every edited original).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from multiprocessing import Pool

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import ROLL_SIZE, encode, make_original, plan  # noqa: E402

SCALE = 4  # reference and new images are generate.py's small sizes divided by this
EDITS = 100  # new images that are edits of reference originals
PX, THRESHOLD = 50, 5  # "similar"


def _scaled(originals):
    return [
        dataclasses.replace(o, width=max(8, o.width // SCALE), height=max(8, o.height // SCALE))
        for o in originals
    ]


def _render(folder: str, n: int, seed: int, processes: int) -> None:
    originals = _scaled(plan(n, seed, small=True))
    with Pool(processes) as pool:
        for _ in pool.imap_unordered(make_original, [(folder, seed, o) for o in originals], chunksize=64):
            pass


def _edit(job: tuple[str, str, int, int]) -> None:
    source, target, kind, amount = job
    img = Image.open(source).convert("RGB")
    if kind == 0:
        shutil.copyfile(source, target)
        return
    if kind in (1, 2, 3):
        img = img.transpose(
            [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270][kind - 1]
        )
    elif kind == 4:
        img = img.point([min(255, v + amount) for v in range(256)] * 3)
    elif kind == 6:
        img = img.resize((max(8, img.width * 3 // 4), max(8, img.height * 3 // 4)), Image.LANCZOS)
    with open(target, "wb") as handle:
        handle.write(encode(img, "JPEG", 70 if kind == 5 else 90))


def datasets(cache: str, size: int, new: int, processes: int) -> tuple[str, str, list[tuple[str, str]]]:
    """(reference folder, new folder, [(new edit, its reference original)]), generated when missing."""
    lake = os.path.join(cache, f"reference_{size}_0_quarter")
    if not os.path.exists(os.path.join(lake, ".complete")):
        shutil.rmtree(lake, ignore_errors=True)
        t0 = time.perf_counter()
        _render(lake, size, 0, processes)
        open(os.path.join(lake, ".complete"), "w").close()
        print(f"reference of {size} images generated in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    batch = os.path.join(cache, f"new_{new}_7_quarter_of_{size}")
    rng = np.random.default_rng(7)
    first_quarter = max(1, (size // 4) // ROLL_SIZE * ROLL_SIZE)
    sources = rng.choice(min(first_quarter, int(size * 0.88)), size=EDITS, replace=False)
    edits = []
    for k, index in enumerate(sorted(sources.tolist())):
        roll = os.path.join(lake, "photos", f"roll_{index // ROLL_SIZE:03d}")
        original = next(os.path.join(roll, n) for n in os.listdir(roll) if n.startswith(f"IMG_{index:06d}."))
        edits.append(
            (os.path.join(batch, "edits", f"edit_{k:03d}.jpg"), original, k % 7, int(rng.integers(2, 9)))
        )
    if not os.path.exists(os.path.join(batch, ".complete")):
        shutil.rmtree(batch, ignore_errors=True)
        _render(batch, new - EDITS, 7, processes)
        os.makedirs(os.path.join(batch, "edits"))
        for target, source, kind, amount in edits:
            _edit((source, target, kind, amount))
        open(os.path.join(batch, ".complete"), "w").close()
    return lake, batch, [(target, source) for target, source, _, _ in edits]


def reference_inputs(lake: str, size: int, full: int) -> list[str]:
    """The whole lake, or (a smaller size) the rolls of originals that make up `size` images."""
    if size == full:
        return [lake]
    return [os.path.join(lake, "photos", f"roll_{k:03d}") for k in range(size // ROLL_SIZE)]


def timed(argv: list[str], out: str) -> tuple[float, dict]:
    """Run one whole dupflow process; wall seconds and its stats JSON."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(argv + ["-Z", out], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    (name,) = [n for n in os.listdir(out) if n.endswith("_stats.json")]
    with open(os.path.join(out, name)) as handle:
        return wall, json.load(handle)


def _files(roots: list[str]) -> list[str]:
    return sorted(
        os.path.join(base, n)
        for root in roots
        for base, dirs, names in os.walk(root)
        for n in names
        if not n.startswith(".") and not any(part.startswith(".") for part in base[len(root) :].split(os.sep))
    )


def _tensors(paths: list[str], processes: int) -> np.ndarray:
    from dupflow.decode import decode_image

    with Pool(processes) as pool:
        data = pool.map(_read, paths, chunksize=64)
    return np.stack([decode_image(d, PX)[0].reshape(PX, PX, 3) for d in data]).astype(np.float64)


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _sums(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min over the 4 turns of b of sum((a - turn(b))^2), for every (a, b): exact float64 integers."""
    fa = a.reshape(len(a), -1)
    na = (fa**2).sum(axis=1)[:, None]
    best = None
    for k in range(4):
        fb = np.rot90(b, k, axes=(1, 2)).reshape(len(b), -1)
        s = na + (fb**2).sum(axis=1)[None, :] - 2 * fa @ fb.T
        best = s if best is None else np.minimum(best, s)
    return best


def check(new_paths, lake_paths, edits, pairs, sample: int, processes: int) -> dict:
    """Reported pairs and not-reported pairs against the brute-force reference (see the module text)."""
    d = 3 * PX * PX
    limit = Fraction(THRESHOLD) * d
    rng = np.random.default_rng(11)
    chosen = set(rng.choice(len(lake_paths), size=min(sample, len(lake_paths)), replace=False).tolist())
    index = {p: k for k, p in enumerate(lake_paths)}
    chosen |= {index[source] for _, source in edits}
    ref_paths = [lake_paths[k] for k in sorted(chosen)]
    a, b = _tensors(new_paths, processes), _tensors(ref_paths, processes)
    reported = {tuple(sorted((x, y))): mse for x, y, mse in pairs}
    mismatches, checked = [], 0
    for label, left, right, sums in (
        ("new x new", new_paths, new_paths, _sums(a, a)),
        ("new x reference", new_paths, ref_paths, _sums(a, b)),
    ):
        listed = np.zeros(sums.shape, dtype=bool)
        mse = np.full(sums.shape, np.nan)
        column = {p: k for k, p in enumerate(right)}
        for k, p in enumerate(left):
            for key, value in reported.items():
                if p in key:
                    other = key[1] if key[0] == p else key[0]
                    if other in column:
                        listed[k, column[other]], mse[k, column[other]] = True, value
        match = sums <= int(limit)  # S is an integer; the limit 5 * 7500 is one too
        scope = (
            np.triu(np.ones(sums.shape, dtype=bool), 1) if label == "new x new" else np.ones(sums.shape, bool)
        )
        wrong = scope & ((match != listed) | (match & listed & (mse != sums / d)))
        checked += int(scope.sum())
        for i, j in zip(*np.nonzero(wrong)):
            mismatches.append((label, left[i], right[j], float(sums[i, j]) / d, float(mse[i, j])))
    inside = [p for p in reported if not (p[0] in set(new_paths) or p[1] in set(new_paths))]
    return {
        "pairs_checked": checked,
        "reported": len(reported),
        "mismatches": mismatches[:20],
        "mismatch_count": len(mismatches),
        "reference_x_reference_reported": len(inside),
        "reference_sampled": len(ref_paths),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25000, 100000])
    ap.add_argument("--new", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", default="/tmp/dupflow-bench")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--check", type=int, default=0, help="reference images sampled for the exactness check")
    ap.add_argument(
        "--full", action="store_true", help="also time a plain search of new + smallest reference"
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    full = max(args.sizes)
    lake, batch, edits = datasets(args.cache, full, args.new, args.processes)
    work = os.path.join(args.cache, "work", "reference")
    os.makedirs(work, exist_ok=True)
    catalog = os.path.join(work, "catalog")
    dupflow = [sys.executable, "-m", "dupflow.cli"]
    common = ["-s", "similar", "-ro", "true", "-dim", "false", "-p", "false", "--catalog", catalog]
    rows = []
    for size in sorted(args.sizes):
        refs = reference_inputs(lake, size, full)
        argv_ = dupflow + [batch] + [x for r in refs for x in ("--reference", r)] + common
        t0 = time.perf_counter()
        _, first = timed(argv_, os.path.join(work, "out"))  # builds what the catalog lacks
        build_s = time.perf_counter() - t0
        runs = [timed(argv_, os.path.join(work, "out")) for _ in range(args.repeat)]
        walls = sorted(w for w, _ in runs)
        stats = runs[0][1]
        ours = stats["dupflow"]
        row = {
            "reference": ours["build"]["reference"]["files"],
            "new": stats["process"]["search"]["files_searched"],
            "first_run_s": round(build_s, 1),
            "decoded_first_run": first["dupflow"]["build"]["decoded"],
            "wall_s": walls,
            "wall_median_s": walls[len(walls) // 2],
            "list_s": ours["build"]["seconds"]["list"],
            "compare_s": ours["search"]["seconds"]["compare"],
            "edges": ours["search"]["edges"],
            "matches": stats["process"]["search"]["matches_found"],
        }
        if args.check and size == full:
            from dupflow import build, search

            dif = build(batch, reference=refs, catalog=catalog, show_progress=False)
            found = search(dif, similarity="similar", same_dim=False, show_progress=False)
            row["check"] = check(
                _files([batch]), _files(refs), edits, found.pairs, args.check, args.processes
            )
            dif.close()
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.full:
        refs = reference_inputs(lake, min(args.sizes), full)
        argv_ = dupflow + [batch, *refs] + common
        timed(argv_, os.path.join(work, "out"))
        wall, stats = timed(argv_, os.path.join(work, "out"))
        rows.append(
            {
                "plain_search_of": stats["process"]["search"]["files_searched"],
                "wall_s": round(wall, 2),
                "compare_s": stats["dupflow"]["search"]["seconds"]["compare"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) >= 2 and "reference" in rows[1]:
        a, b = rows[0], rows[1]
        ratio = b["reference"] / a["reference"]
        print(
            f"reference x{ratio:.1f}: whole process x{b['wall_median_s'] / a['wall_median_s']:.2f}, "
            f"compare x{b['compare_s'] / max(a['compare_s'], 1e-9):.2f} (new x reference x{ratio:.1f}, "
            f"reference^2 x{ratio**2:.0f})"
        )
    with open(args.json or os.path.join(work, f"reference_{time.strftime('%Y%m%d%H%M%S')}.json"), "w") as h:
        json.dump(rows, h, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Exactness at scale: dupflow's matches against a brute-force float64 reference that never reads the catalog.

    # a finished CLI run (results + stats JSON in OUT_DIR; parameters read from the stats)
    python benchmarks/check_exact.py DATA --run OUT_DIR
    # search in-process (dupflow.build + dupflow.search) and check every pair of found.pairs too
    python benchmarks/check_exact.py DATA --search --catalog CAT -s 5 --no-same-dim

Reference: every image file under DATA (dupflow's extensions, hidden names skipped) is decoded again with
``dupflow.decode.decode_image(bytes, px, decode)`` in a process pool (not from the Parquet catalog); the sum
of squared differences of a pair is S = min over the 4 ``np.rot90`` turns of the second tensor (1 turn
without rotate) of sum((a - b)^2) in float64 - exact, the values being integers far below 2^53 - and its MSE
is S / (3 * px * px). A pair matches when S / d <= threshold in exact rational arithmetic (the threshold
as the decimal written, so 5 means S <= 37500 at px 50) and, with same_dim, the two {width, height} are
equal as unordered pairs (dupflow's rule: a 90-degree turn keeps the size class).

Checks (each counted; every mismatch is listed, the script exits 1 when there is one):

(a) every reported pair - the ``found.pairs`` of an in-process search, and every primary-match link of the
    result - is a reference match and its reported MSE equals the reference MSE bit for bit;
(b) pairs not reported do not match. With ``found.pairs`` (``--search``): every pair not in it. From a result
    alone (``--run``) only the pairs the greedy grouping pins down can be checked: for a primary or an image
    left alone, y, and any image x placed after y walked the keeper ranking (quality_rank: the contract's),
    x matches y exactly when x is in y's group (x in a later group, a later primary or a later loner must
    not match y). The grouping is also checked for shape: each image in at most one group, every match ranked
    below its primary.
    Exhaustively (all N(N-1)/2 pairs, blocked float64 matrix products |a|^2 + |b|^2 - 2 a.b, exact for the
    same reason) when N <= --exhaustive-max (default 3000); else every pair inside a planted family of
    generate.py's ground_truth.json (the pairs likely to sit near the threshold) and a seeded random sample
    of --sample pairs (default 100000) that are not reported (with --run: pinned-down non-group pairs).

Every reported pair is also recomputed element by element, so the matrix reference is itself cross-checked.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from multiprocessing import Pool

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import relative  # noqa: E402  (benchmarks/run.py: a reported path -> path relative to the dataset)

KEEP_RULES = ("resolution", "oldest", "newest", "largest")

EXAMPLES = 20  # mismatches listed per check (all are counted)


# ---------------------------------------------------------------------------------------------------------
# the reference: listing, decoding, sums of squares


def list_images(root: str) -> list[tuple[str, float, int]]:
    """(relative '/'-separated path, mtime, bytes) of the image files under root (dupflow's extension list,
    hidden names skipped), sorted by path; mtime is st_mtime in seconds, as dupflow lists it."""
    from dupflow.sources import supported_extensions

    exts = supported_extensions()
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and "." in name and name.rsplit(".", 1)[1].lower() in exts:
                path = os.path.join(folder, name)
                st = os.stat(path)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                found.append((rel, st.st_mtime, st.st_size))
    return sorted(found)


def _decode_batch(job: tuple[list[str], int, str]) -> tuple[np.ndarray, list, list]:
    """(tensors of the valid files, [(width, height) or None per file], [error or None per file]) of a batch
    of files, decoded the catalog-independent way (one batch per pool task: little pickling per file)."""
    from dupflow.decode import decode_image

    paths, px, mode = job
    tensors, dims, errors = [], [], []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                tensor, width, height = decode_image(handle.read(), px, mode)
        except Exception as exc:  # noqa: BLE001 - any failure is an invalid file, like dupflow
            dims.append(None)
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        tensors.append(tensor)
        dims.append((width, height))
        errors.append(None)
    stacked = np.stack(tensors) if tensors else np.zeros((0, px, px, 3), np.uint8)
    return stacked, dims, errors


class Reference:
    """Decoded tensors (uint8, N x px x px x 3), sorted dimensions, pixel counts, mtimes and bytes of the
    valid images.

    Tensors above `memory_limit` bytes (7.5 GB at 1,000,000 images of px 50) go to a memory-mapped scratch
    file in `scratch` (removed when the process ends), so the page cache, not the heap, holds them.
    """

    def __init__(
        self,
        root: str,
        px: int,
        mode: str,
        processes: int,
        scratch: str | None = None,
        memory_limit: int = 2 * 2**30,
        batch: int = 256,
    ):
        listed = list_images(root)
        n, self.px, self.d = len(listed), px, 3 * px * px
        if n * self.d > memory_limit:
            handle = tempfile.NamedTemporaryFile(prefix="check_exact_", suffix=".u8", dir=scratch)
            self._scratch = handle  # the file goes when this object (the process) does
            store = np.memmap(handle, dtype=np.uint8, mode="w+", shape=(max(n, 1), px, px, 3))
        else:
            store = np.empty((max(n, 1), px, px, 3), dtype=np.uint8)
        self.rels, self.invalid = [], {}
        dims, mtimes, sizes = [], [], []
        jobs = [
            ([os.path.join(root, *rel.split("/")) for rel, _, _ in listed[s : s + batch]], px, mode)
            for s in range(0, n, batch)
        ]
        filled = 0
        with Pool(processes) as pool:
            for start, (tensors, got, errors) in zip(range(0, n, batch), pool.imap(_decode_batch, jobs)):
                store[filled : filled + len(tensors)] = tensors
                filled += len(tensors)
                for (rel, mtime, size), wh, err in zip(listed[start : start + batch], got, errors):
                    if err is not None:
                        self.invalid[rel] = err
                        continue
                    self.rels.append(rel)
                    dims.append(sorted(wh))
                    mtimes.append(mtime)
                    sizes.append(size)
        self.tensors = store[:filled]
        self.dims = np.array(dims, dtype=np.int64).reshape(-1, 2)
        self.pixels = self.dims[:, 0] * self.dims[:, 1]
        self.mtime = np.array(mtimes, dtype=np.float64)
        self.nbytes = np.array(sizes, dtype=np.int64)
        self.index = {rel: i for i, rel in enumerate(self.rels)}

    def __len__(self) -> int:
        return len(self.rels)

    def sums(self, i: np.ndarray, j: np.ndarray, rotate: bool, batch: int = 1024) -> np.ndarray:
        """S for the pairs (i[k], j[k]), element by element in float64 (min over np.rot90 turns of j)."""
        out = np.empty(len(i), dtype=np.float64)
        for s in range(0, len(i), batch):
            a = self.tensors[i[s : s + batch]].astype(np.float64)
            b = self.tensors[j[s : s + batch]].astype(np.float64)
            best = None
            for k in range(4 if rotate else 1):
                diff = a - np.rot90(b, k, axes=(1, 2))
                total = np.einsum("nyxc,nyxc->n", diff, diff)
                best = total if best is None else np.minimum(best, total)
            out[s : s + batch] = best
        return out

    def all_sums(self, rotate: bool, block: int = 512) -> np.ndarray:
        """The full symmetric N x N matrix of S (diagonal included), by blocked float64 matrix products."""
        n = len(self)
        flat = self.tensors.reshape(n, -1).astype(np.float64)
        norms = np.einsum("ij,ij->i", flat, flat)
        out = np.full((n, n), np.inf)
        for k in range(4 if rotate else 1):
            turned = (
                np.ascontiguousarray(np.rot90(self.tensors, k, axes=(1, 2))).reshape(n, -1).astype(np.float64)
            )
            for r0 in range(0, n, block):
                r1 = min(n, r0 + block)
                part = norms[r0:r1, None] + norms[None, r0:] - 2.0 * (flat[r0:r1] @ turned[r0:].T)
                np.minimum(out[r0:r1, r0:], part, out=out[r0:r1, r0:])
            del turned
        upper = np.triu(out)
        return np.where(np.triu(np.ones((n, n), dtype=bool)), upper, upper.T)

    def same_dim(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Whether the pairs' {width, height} are equal as unordered pairs."""
        return (self.dims[i] == self.dims[j]).all(axis=1)


def threshold_limit(similarity: float | int, d: int) -> int:
    """The largest integer S with S / d <= similarity, the similarity taken as the decimal written."""
    value = Fraction(repr(float(similarity))) if isinstance(similarity, float) else Fraction(similarity)
    return math.floor(value * d)


# ---------------------------------------------------------------------------------------------------------
# what dupflow reported


def _newest(folder: str, suffix: str) -> str:
    """The newest dupflow_*_<suffix>.json in folder."""
    files = sorted(glob.glob(os.path.join(folder, f"dupflow_*_{suffix}.json")), key=os.path.getmtime)
    if not files:
        raise FileNotFoundError(f"no dupflow_*_{suffix}.json in {folder}")
    return files[-1]


def load_run(folder: str) -> tuple[dict, dict]:
    """(result, stats) of a finished CLI run's output folder."""
    with open(_newest(folder, "results"), encoding="utf-8") as handle:
        result = json.load(handle)
    with open(_newest(folder, "stats"), encoding="utf-8") as handle:
        stats = json.load(handle)
    return result, stats


def search_in_process(
    data: str, catalog: str, similarity, rotate: bool, same_dim: bool, decode: str, px: int, keep: str
) -> tuple[dict, dict, list, float]:
    """(result, stats, pairs, seconds) of dupflow.build + dupflow.search run here."""
    import dupflow

    t0 = time.perf_counter()
    with dupflow.build(data, catalog=catalog, show_progress=False, px_size=px, decode=decode) as dif:
        found = dupflow.search(
            dif, similarity=similarity, rotate=rotate, same_dim=same_dim, show_progress=False, keep=keep
        )
    return found.result, found.stats, found.pairs, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------
# checks


class Check:
    """One named check: pairs checked, mismatches counted, the first few described."""

    def __init__(self, name: str):
        self.name, self.checked, self.mismatches, self.examples = name, 0, 0, []

    def fail(self, text: str) -> None:
        self.mismatches += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "checked": self.checked,
            "mismatches": self.mismatches,
            "examples": self.examples,
        }


class Checker:
    """The reference plus the search parameters: match rule and pair descriptions."""

    def __init__(self, ref: Reference, similarity, rotate: bool, same_dim: bool):
        self.ref, self.rotate, self.same_dim = ref, rotate, same_dim
        self.limit = threshold_limit(similarity, ref.d)

    def matches(self, sums: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Reference decision for pairs with reference sums S."""
        ok = sums <= self.limit
        if self.same_dim:
            ok &= self.ref.same_dim(i, j)
        return ok

    def describe(self, a: int, b: int, s: float) -> str:
        r, s = self.ref, float(s)
        return (
            f"{r.rels[a]} ~ {r.rels[b]}: reference S={s:.0f} mse={s / r.d!r} dims {r.dims[a].tolist()} "
            f"{r.dims[b].tolist()}"
        )

    def reported(self, name: str, pairs: list[tuple[str, str, float]], root: str) -> tuple[Check, set]:
        """(a): every reported (path, path, mse) is a reference match with the bit-identical MSE."""
        check, ids, seen = Check(name), [], set()
        for pa, pb, mse in pairs:
            check.checked += 1
            a, b = self.ref.index.get(rel_path(pa, root)), self.ref.index.get(rel_path(pb, root))
            if a is None or b is None or a == b:
                check.fail(f"{pa} ~ {pb}: not two distinct valid images of the dataset")
                continue
            ids.append((a, b, float(mse)))
            seen.add((min(a, b), max(a, b)))
        if ids:
            i = np.array([x[0] for x in ids])
            j = np.array([x[1] for x in ids])
            sums = self.ref.sums(i, j, self.rotate)
            ok = self.matches(sums, i, j)
            for (a, b, mse), s, good in zip(ids, sums.tolist(), ok.tolist()):
                want = s / self.ref.d
                if not good or want != mse:
                    check.fail(
                        f"{self.describe(a, b, s)}; reported mse={mse!r} ({float(mse).hex()} vs "
                        f"{want.hex()}){'' if good else ', not a match'}"
                    )
        return check, seen


def result_links(result: dict) -> list[tuple[str, str, float]]:
    """(primary, match, mse) of a difPy-format result."""
    return [(primary, match, mse) for primary, matches in result.items() for match, mse in matches]


def rel_path(path: str, root: str) -> str:
    """A reported path relative to the dataset root, '/'-separated: a prefix cut when the path is under the
    root as given (no system call; a million paths in a second), else run.py's `relative` (links resolved)."""
    prefix = os.path.join(os.path.abspath(root), "")
    plain = path[len("file://") :] if path.startswith("file://") else path
    if os.path.isabs(plain) and plain.startswith(prefix) and ".." not in plain:
        return plain[len(prefix) :].replace(os.sep, "/")
    return relative(path, root)


def quality_rank(ref: Reference, keep: str = "resolution") -> np.ndarray:
    """Each image's place in the keeper ranking (0 = best), from the contract: `resolution` = pixels
    descending, then modification time ascending, then bytes descending, then path ascending; `oldest` /
    `newest` put the modification time first, `largest` the bytes."""
    if keep not in KEEP_RULES:
        raise ValueError(f"keep {keep!r}: not one of {', '.join(KEEP_RULES)}")
    n = len(ref)
    path_order = np.empty(n, dtype=np.int64)
    path_order[np.argsort(np.array(ref.rels, dtype=str), kind="stable")] = np.arange(n)
    px, when, size = -ref.pixels, ref.mtime, -ref.nbytes
    keys = {
        "resolution": [px, when, size],
        "oldest": [when, px, size],
        "newest": [-when, px, size],
        "largest": [size, px, when],
    }[keep] + [path_order]
    order = np.lexsort(keys[::-1])  # lexsort's primary key is its last
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    return pos


def grouping(
    ref: Reference, result: dict, root: str, keep: str = "resolution"
) -> tuple[Check, np.ndarray, np.ndarray]:
    """Shape of the result (one group per image, matches ranked below their primary) -> (check, placer, pos).

    placer[x] is the primary of x's group, or x itself; pos[x] is x's place in the quality ranking
    (quality_rank: 0 = best).
    """
    check = Check("result grouping shape")
    n = len(ref)
    pos = quality_rank(ref, keep)
    placer = np.arange(n)
    placed = set()
    for primary, matches in result.items():
        p = ref.index.get(rel_path(primary, root))
        check.checked += 1
        if p is None or p in placed:
            check.fail(f"primary {primary}: unknown or already placed")
            continue
        placed.add(p)
        for match, _ in matches:
            check.checked += 1
            m = ref.index.get(rel_path(match, root))
            if m is None or m in placed:
                check.fail(f"match {match} of {primary}: unknown or in two groups")
                continue
            placed.add(m)
            placer[m] = p
            if pos[m] <= pos[p]:
                check.fail(f"match {match} ranks above its primary {primary}")
    return check, placer, pos


def pinned(
    placer: np.ndarray, pos: np.ndarray, y: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For ordered pairs (y, x): (pinned down by the grouping, expected match) - y a primary or loner, x != y
    placed no earlier than y's turn; then x matches y iff y placed x."""
    pin = (placer[y] == y) & (x != y) & (pos[placer[x]] >= pos[y])
    return pin, pin & (placer[x] == y)


def verify(
    checker: Checker,
    i: np.ndarray,
    j: np.ndarray,
    sums: np.ndarray,
    reported: set | None,
    placer: np.ndarray,
    pos: np.ndarray,
    label: str,
) -> list[Check]:
    """(b) for the unordered pairs (i[k], j[k]), i < j, with reference sums S: against found.pairs (every pair)
    when there is one, and against the grouping (the pairs it pins down, in either orientation)."""
    ref, n = checker.ref, len(checker.ref)
    match = checker.matches(sums, i, j)
    checks = []
    if reported is not None:
        check = Check(f"{label} vs found.pairs")
        check.checked = len(i)
        keys = np.array(sorted(a * n + b for a, b in reported), dtype=np.int64)
        listed = np.isin(i.astype(np.int64) * n + j, keys)
        for k in np.nonzero(match != listed)[0].tolist():
            a, b = int(i[k]), int(j[k])
            check.fail(
                f"{checker.describe(a, b, sums[k])}: "
                f"{'reference match missing from found.pairs' if match[k] else 'reported, reference says no'}"
            )
        checks.append(check)
    check = Check(f"{label} pinned down by the grouping")
    for y, x in ((i, j), (j, i)):
        pin, expect = pinned(placer, pos, y, x)
        check.checked += int(pin.sum())
        for k in np.nonzero(pin & (match != expect))[0].tolist():
            a, b = int(y[k]), int(x[k])
            why = (
                "grouped together but no reference match"
                if expect[k]
                else f"reference match, yet {ref.rels[b]} was left out of {ref.rels[a]}'s group"
            )
            check.fail(f"{checker.describe(a, b, sums[k])}: {why}")
    checks.append(check)
    return checks


def exhaustive(
    checker: Checker, sums: np.ndarray, reported: set | None, placer: np.ndarray, pos: np.ndarray
) -> list[Check]:
    """(b) over every pair, from the full matrix of S."""
    rows, cols = np.triu_indices(len(checker.ref), k=1)
    return verify(checker, rows, cols, sums[rows, cols], reported, placer, pos, "all pairs (exhaustive)")


def family_pairs(ref: Reference, data: str) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i < j) inside a planted family of generate.py's ground_truth.json (an original and all its
    copies): the pairs most likely to sit near the threshold. Empty without a ground_truth.json."""
    path = os.path.join(data, "ground_truth.json")
    if not os.path.isfile(path):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    with open(path, encoding="utf-8") as handle:
        truth = json.load(handle)
    families: dict[int, set[int]] = {}
    for pair in truth:
        a, b = ref.index.get(pair["a"]), ref.index.get(pair["b"])
        if a is not None and b is not None:
            families.setdefault(a, {a}).add(b)
    pairs = sorted(
        {(min(x, y), max(x, y)) for members in families.values() for x in members for y in members if x != y}
    )
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def _draw(
    rng: np.random.Generator, n: int, k: int, keep, exclude: set | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Up to k distinct ordered pairs (x, y), x != y, drawn uniformly, that keep(x, y) (vectorised) accepts
    and `exclude` (unordered (min, max) pairs) does not hold; sorted."""
    got = np.zeros(0, dtype=np.int64)
    excluded = np.array(sorted(a * n + b for a, b in exclude or ()), dtype=np.int64)
    for _ in range(100):
        if len(got) >= k:
            break
        x, y = rng.integers(0, n, 2 * k), rng.integers(0, n, 2 * k)
        ok = (x != y) & keep(x, y)
        if len(excluded):
            ok &= ~np.isin(np.minimum(x, y) * n + np.maximum(x, y), excluded)
        fresh = np.setdiff1d(np.unique(x[ok] * n + y[ok]), got)
        got = np.union1d(got, fresh[: k - len(got)])
    return got // n, got % n


def sampled(
    checker: Checker, k: int, seed: int, reported: set | None, placer: np.ndarray, pos: np.ndarray
) -> list[Check]:
    """(b) over k seeded random pairs that are not reported (and, for the result, pinned-down non-matches)."""
    n, rng = len(checker.ref), np.random.default_rng(seed)
    checks = []
    if n < 2:
        return checks
    if reported is not None:
        check = Check(f"random pairs not in found.pairs (sample of {k}, seed {seed})")
        i, j = _draw(rng, n, k, lambda x, y: x < y, reported)
        s = checker.ref.sums(i, j, checker.rotate)
        check.checked = len(i)
        for idx in np.nonzero(checker.matches(s, i, j))[0].tolist():
            check.fail(
                f"{checker.describe(int(i[idx]), int(j[idx]), s[idx])}: reference match missing from found.pairs"
            )
        checks.append(check)
    check = Check(f"random pairs the grouping rules out (sample of {k}, seed {seed})")

    def ruled_out(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        pin, expect = pinned(placer, pos, y, x)
        return pin & ~expect

    y, x = _draw(rng, n, k, ruled_out)
    s = checker.ref.sums(y, x, checker.rotate)
    check.checked = len(y)
    for idx in np.nonzero(checker.matches(s, y, x))[0].tolist():
        check.fail(
            f"{checker.describe(int(y[idx]), int(x[idx]), s[idx])}: reference match, yet "
            f"{checker.ref.rels[int(x[idx])]} was left out of {checker.ref.rels[int(y[idx])]}'s group"
        )
    checks.append(check)
    return checks


# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("data", help="the dataset folder dupflow searched (one input folder)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="OUT_DIR", help="a finished CLI run's -Z folder (newest results/stats)")
    src.add_argument("--search", action="store_true", help="run dupflow.build + dupflow.search in-process")
    ap.add_argument(
        "--catalog", default=None, help="with --search: the catalog (default: a fresh temporary one)"
    )
    ap.add_argument(
        "-s", "--similarity", default="5", help="with --search: 'duplicates' (0), 'similar' (5) or a number"
    )
    ap.add_argument("--same-dim", action=argparse.BooleanOptionalAction, default=False, help="with --search")
    ap.add_argument("--rotate", action=argparse.BooleanOptionalAction, default=True, help="with --search")
    ap.add_argument("--decode", choices=("exact", "fast"), default="exact", help="with --search")
    ap.add_argument("--px", type=int, default=50, help="with --search: px_size")
    ap.add_argument(
        "--keep", choices=KEEP_RULES, default="resolution", help="the run's keep rule (its stats do not say)"
    )
    ap.add_argument(
        "--scratch", default=None, help="folder of the memory-mapped reference above 2 GiB (default: TMPDIR)"
    )
    ap.add_argument(
        "--sample", type=int, default=100000, help="random non-reported pairs checked above the limit"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    ap.add_argument("--exhaustive-max", type=int, default=3000, help="check all pairs up to this many images")
    ap.add_argument("--processes", type=int, default=2, help="reference decode processes")
    ap.add_argument("--json", default=None, help="write the checks (counts, mismatches) here")
    args = ap.parse_args(argv)
    sim = {"duplicates": 0, "similar": 5}.get(args.similarity, args.similarity)
    if isinstance(sim, str):
        try:
            sim = int(sim)
        except ValueError:
            sim = float(sim)
    args.similarity = sim
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data
    report: dict = {"data": os.path.abspath(data), "argv": sys.argv[1:]}
    pairs = None
    if args.run:
        result, stats = load_run(args.run)
        report["source"] = {"run": os.path.abspath(args.run)}
    else:
        catalog = args.catalog or tempfile.mkdtemp(prefix="dupflow-check-")
        try:
            result, stats, pairs, seconds = search_in_process(
                data, catalog, args.similarity, args.rotate, args.same_dim, args.decode, args.px, args.keep
            )
        finally:
            if args.catalog is None:
                shutil.rmtree(catalog, ignore_errors=True)
        report["source"] = {"search": True, "catalog": args.catalog, "seconds": round(seconds, 3)}
        print(f"dupflow in-process build+search: {seconds:.1f} s, {len(pairs)} pairs", file=sys.stderr)
    params = stats["process"]["search"]["parameters"]
    similarity, rotate, same_dim = params["similarity_mse"], params["rotate"], params["same_dim"]
    px = stats["process"]["build"]["parameters"]["px_size"]
    decode = stats.get("dupflow", {}).get("build", {}).get("decode", "exact")
    if stats["process"]["build"]["parameters"].get("in_folder"):
        print("check_exact.py: in_folder results are not supported", file=sys.stderr)
        return 2
    report["parameters"] = {
        "similarity_mse": similarity,
        "rotate": rotate,
        "same_dim": same_dim,
        "px_size": px,
        "decode": decode,
        "keep": args.keep,
    }

    t0 = time.perf_counter()
    ref = Reference(data, px, decode, args.processes, args.scratch)
    t_decode = time.perf_counter() - t0
    n = len(ref)
    print(
        f"reference: {n} images decoded in {t_decode:.1f} s ({len(ref.invalid)} invalid); "
        f"similarity {similarity}, rotate {rotate}, same_dim {same_dim}, px {px}, decode {decode}",
        file=sys.stderr,
    )
    checker = Checker(ref, similarity, rotate, same_dim)
    checks = []
    count = Check("files searched (dupflow) = valid images (reference)")
    count.checked = 1
    searched = stats["process"]["search"]["files_searched"]
    if searched != n:
        count.fail(f"dupflow searched {searched} files, the reference decoded {n} valid images")
    checks.append(count)

    reported = None
    if pairs is not None:
        check, reported = checker.reported("found.pairs: reported MSE = reference, bit for bit", pairs, data)
        checks.append(check)
    check, links = checker.reported(
        "result links: reported MSE = reference, bit for bit", result_links(result), data
    )
    checks.append(check)
    if reported is not None:
        extra = Check("result links are found.pairs")
        extra.checked = len(links)
        for a, b in sorted(links - reported)[:EXAMPLES]:
            extra.fail(f"{ref.rels[a]} ~ {ref.rels[b]}: in the result, not in found.pairs")
        checks.append(extra)
    shape, placer, pos = grouping(ref, result, data, args.keep)
    checks.append(shape)

    t1 = time.perf_counter()
    mode = "exhaustive" if n <= args.exhaustive_max else f"sample of {args.sample}"
    if n <= args.exhaustive_max:
        sums = ref.all_sums(rotate)
        # cross-check the matrix reference against the element-wise one on the reported pairs
        cross = Check("matrix reference = element-wise reference (reported pairs)")
        both = sorted(links | (reported or set()))
        if both:
            i = np.array([p[0] for p in both])
            j = np.array([p[1] for p in both])
            direct = ref.sums(i, j, rotate)
            cross.checked = len(both)
            for k in np.nonzero(direct != sums[i, j])[0].tolist():
                cross.fail(f"{ref.rels[i[k]]} ~ {ref.rels[j[k]]}: {direct[k]} vs {sums[i[k], j[k]]}")
        checks.append(cross)
        checks += exhaustive(checker, sums, reported, placer, pos)
        del sums
    else:
        i, j = family_pairs(ref, data)
        if len(i):
            checks += verify(
                checker,
                i,
                j,
                ref.sums(i, j, rotate),
                reported,
                placer,
                pos,
                f"pairs within planted families (ground_truth.json: {len(i)} pairs)",
            )
        checks += sampled(checker, args.sample, args.seed, reported, placer, pos)
    t_check = time.perf_counter() - t1

    total = sum(c.mismatches for c in checks)
    print(
        f"\n### exactness check: {n} images, {mode}, similarity {similarity}, rotate {rotate}, "
        f"same_dim {same_dim}\n"
    )
    print("| check | pairs checked | mismatches |\n| --- | ---: | ---: |")
    for c in checks:
        print(f"| {c.name} | {c.checked} | {c.mismatches} |")
    for c in checks:
        for text in c.examples:
            print(f"MISMATCH [{c.name}] {text}")
    print(
        f"\n{'OK' if total == 0 else 'FAILED'}: {total} mismatches "
        f"(reference decode {t_decode:.1f} s, checks {t_check:.1f} s)"
    )
    report.update(
        {
            "images": n,
            "invalid": len(ref.invalid),
            "mode": mode,
            "mismatches": total,
            "seconds": {"reference_decode": round(t_decode, 3), "checks": round(t_check, 3)},
            "checks": [c.as_dict() for c in checks],
        }
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

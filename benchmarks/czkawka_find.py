"""Run czkawka's similar-image finder (PyPI package `czkawka`, Python bindings of czkawka_core) on one folder.

    python benchmarks/czkawka_find.py DIR OUT.json [--similarity default|0..50]

Used by run.py as the timed subprocess. The binding (czkawka 0.1.2) exposes only `set_directories`,
`set_similarity` and `find_similar`: hash algorithm, hash size, resize filter and thread count are fixed by
the binding (czkawka_core defaults: 8-byte perceptual hash, rayon threads = all cores), and it keeps no hash
cache between runs, so every run is cold. `--similarity default` leaves the binding's own threshold in place.
Writes {"similarity": ..., "groups": [[path, ...], ...], "seconds": search seconds} to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def find_groups(folder: str, similarity: int | None) -> list[list[str]]:
    """Groups of similar images in folder (recursive), as absolute path strings."""
    import czkawka

    finder = czkawka.ImageSimilarity()
    finder.set_directories([folder])
    if similarity is not None:
        finder.set_similarity(similarity)
    return [[str(path) for path in group] for group in finder.find_similar()]


def main(argv: list[str] | None = None) -> int:
    """Command line: czkawka_find.py DIR OUT.json [--similarity default|N]."""
    ap = argparse.ArgumentParser(description="czkawka similar-image groups of a folder, as JSON")
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--similarity", default="default", help="'default' or 0..50 (hamming distance level)")
    args = ap.parse_args(argv)
    level = None if args.similarity == "default" else int(args.similarity)
    t0 = time.perf_counter()
    groups = find_groups(args.folder, level)
    seconds = time.perf_counter() - t0
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"similarity": args.similarity, "groups": groups, "seconds": round(seconds, 4)}, handle)
    print(f"{len(groups)} groups, {sum(len(g) for g in groups)} images in groups, {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

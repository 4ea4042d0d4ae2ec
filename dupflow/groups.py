"""Stage 5: match edges -> groups (best image first), result dicts and lower_quality."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = [
    "KEEP_RULES",
    "class_groups",
    "count_matches",
    "greedy_groups",
    "lower_quality",
    "quality_order",
    "result_dict",
]


KEEP_RULES = ("resolution", "oldest", "newest", "largest")


def quality_order(
    positions: np.ndarray,
    pixels: np.ndarray,
    paths: list[str],
    mtime: np.ndarray | list[float] | None = None,
    nbytes: np.ndarray | list[int] | None = None,
    keep: str = "resolution",
    reference: np.ndarray | list[bool] | None = None,
) -> list[int]:
    """Positions ranked best first, so that the greedy walk keeps the original of each group.

    `keep="resolution"` (the contract's rule): pixel count descending, then modification time ascending
    (copies are made after their originals), then file bytes descending, then path ascending.
    `"oldest"` / `"newest"` put modification time first (ascending / descending), `"largest"` file bytes;
    the other keys follow in the resolution rule's order. Reference images (`reference[p]` true) come
    before every other image. An unknown modification time (nan) ranks after every known one.
    """
    if keep not in KEEP_RULES:
        raise ValueError(f'Invalid value for "keep" parameter: must be one of {", ".join(KEEP_RULES)}.')
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions) == 0:
        return []
    n = len(paths)
    mtime = np.zeros(n) if mtime is None else np.asarray(mtime, dtype=np.float64)
    nbytes = np.zeros(n, dtype=np.int64) if nbytes is None else np.asarray(nbytes, dtype=np.int64)
    px = np.asarray(pixels, dtype=np.int64)[positions]
    when = mtime[positions]
    known = ~np.isnan(when)
    when = np.where(known, when, 0.0)
    size = nbytes[positions]
    path_rank = np.argsort(np.argsort(np.array([paths[p] for p in positions], dtype=str), kind="stable"))
    older, newer = (~known, when), (~known, -when)  # unknown times last either way
    keys = {
        "resolution": [(-px,), older, (-size,)],
        "oldest": [older, (-px,), (-size,)],
        "newest": [newer, (-px,), (-size,)],
        "largest": [(-size,), (-px,), older],
    }[keep]
    columns = [column for key in keys for column in key] + [path_rank]
    if reference is not None:
        columns.insert(0, ~np.asarray(reference, dtype=bool)[positions])
    order = np.lexsort(columns[::-1])  # lexsort's primary key is its last
    return positions[order].tolist()


def greedy_groups(
    ranking: list[int], i: np.ndarray, j: np.ndarray, sums: np.ndarray
) -> list[tuple[int, list[tuple[int, float]]]]:
    """Walk the ranking; each unplaced image becomes a primary and takes every unplaced image it matches."""
    neighbours: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for a, b, s in zip(i.tolist(), j.tolist(), sums.tolist()):
        neighbours[a].append((b, s))
        neighbours[b].append((a, s))
    placed: set[int] = set()
    groups = []
    for primary in ranking:
        if primary in placed:
            continue
        placed.add(primary)
        taken = [(m, s) for m, s in neighbours.get(primary, ()) if m not in placed]
        placed.update(m for m, _ in taken)
        if taken:
            groups.append((primary, taken))
    return groups


def class_groups(
    ranking: list[int], i: np.ndarray, j: np.ndarray, reference: np.ndarray | None = None
) -> list[tuple[int, list[tuple[int, float]]]]:
    """Groups of equal images from star edges (threshold 0), in linear time and memory.

    Equality is transitive, so each connected class is one group: its best-ranked image is the primary
    and takes the rest (a reference primary never takes another reference image). The same groups, in
    the same order, as greedy_groups over every pair of each class.
    """
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = x = parent[parent[x]]
        return x

    for a, b in zip(i.tolist(), j.tolist()):
        parent[root(a)] = root(b)
    classes: dict[int, list[int]] = {}
    for p in ranking:
        if p in parent:
            classes.setdefault(root(p), []).append(p)
    groups = []
    for primary, *rest in classes.values():
        skip_reference = reference is not None and bool(reference[primary])
        taken = [(m, 0.0) for m in rest if not (skip_reference and reference[m])]
        if taken:
            groups.append((primary, taken))
    return groups


def result_dict(
    groups: list[tuple[int, list[tuple[int, float]]]], paths: list[str], d: int
) -> dict[str, list[list]]:
    """difPy's result format: {primary: [[match, mse], ...]}, matches by ascending MSE, then path."""
    result = {}
    for primary, taken in groups:
        entries = sorted(([paths[m], float(s) / d] for m, s in taken), key=lambda e: (e[1], e[0]))
        result[paths[primary]] = entries
    return result


def lower_quality(groups: list[tuple[int, list[tuple[int, float]]]], paths: list[str]) -> list[str]:
    """Every match of every group (never a primary), sorted."""
    return sorted(paths[m] for _, taken in groups for m, _ in taken)


def count_matches(groups: list[tuple[int, list[tuple[int, float]]]]) -> dict[str, int]:
    """difPy's matches_found: MSE 0 is a duplicate, anything else similar."""
    duplicates = sum(1 for _, taken in groups for _, s in taken if s == 0)
    total = sum(len(taken) for _, taken in groups)
    return {"duplicates": duplicates, "similar": total - duplicates}

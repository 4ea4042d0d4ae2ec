"""Stage 5: match edges -> groups (best image first), result dicts and lower_quality."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def quality_order(positions: np.ndarray, pixels: np.ndarray, paths: list[str]) -> list[int]:
    """Positions ranked best first: pixel count descending, then path descending (string order)."""
    return sorted((int(p) for p in positions), key=lambda p: (int(pixels[p]), paths[p]), reverse=True)


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

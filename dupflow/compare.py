"""Stage 4, the Dask graph: catalog rows -> match edges (i, j, S) as file-table positions.

What is compared is a list of scopes: each scope's members are compared with each other and with the
scope's reference images, never reference with reference (so 1,000 new images against 100,000 already
kept ones costs 1,000 x 100,000 pruned work, not 101,000^2). Threshold 0 is a hash join: equal tensors
(up to a quarter turn) have equal hashes, and each hash class is then checked tensor by tensor. Any other
threshold is planned by `similar`: brightness bands, a region bound through a k-d tree, then exact sums of
the pairs it leaves in doubt.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import kernels
from .catalog import CatalogRef
from .cluster import Engine
from .gather import Tensors, graph, tensor_parts
from .ingest import Decoded
from .similar import band_size, similar_edges

VERIFY_IMAGES = 4096  # images checked per hash-join task
VERIFY_SLICE = 1024  # rows compared with a class head at once
VERIFY_COPIES = 3  # a verify task's bytes per image: its tensor, a slice's comparison, the head's turns

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]

__all__ = ["Edges", "MatchSpec", "Scope", "expand_stars", "find_edges"]


@dataclass(frozen=True)
class MatchSpec:
    """What makes two images a match: tensor side, quarter turns, equal sizes, and the largest S allowed."""

    px: int
    rotate: bool
    same_dim: bool
    limit: float  # the largest sum of squared differences that still matches (kernels.match_limit)

    @property
    def d(self) -> int:
        """Values per tensor (px x px x 3): MSE = S / d."""
        return kernels.tensor_values(self.px)

    @classmethod
    def from_threshold(cls, px: int, rotate: bool, same_dim: bool, threshold: float) -> MatchSpec:
        """The spec for a user's MSE threshold, decided exactly (see kernels.match_limit)."""
        return cls(px, rotate, same_dim, kernels.match_limit(threshold, kernels.tensor_values(px)))


def _no_positions() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Scope:
    """Images compared together: members with each other and with every reference image, reference
    images never with each other (positions in the file table; a position in both counts as a member)."""

    members: np.ndarray
    reference: np.ndarray = field(default_factory=_no_positions)

    def __post_init__(self) -> None:
        members = np.asarray(self.members, dtype=np.int64)
        reference = np.setdiff1d(np.asarray(self.reference, dtype=np.int64), members)
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "reference", reference)


@dataclass(frozen=True)
class Rows:
    """Where some images' tensors live: their file-table positions, shard (by index) and row."""

    members: np.ndarray
    shards: tuple[str, ...]
    shard: np.ndarray
    row: np.ndarray

    def subset(self, picks: np.ndarray) -> Rows:
        return Rows(self.members[picks], self.shards, self.shard[picks], self.row[picks])


def _rows(decoded: Decoded, positions: list[int]) -> Rows:
    """Address the given positions in the catalog."""
    positions = np.array(positions, dtype=np.int64)
    ids, shard = np.unique(decoded.shard[positions], return_inverse=True)
    return Rows(positions, tuple(decoded.shards[k] for k in ids), shard, decoded.row[positions])


def _load(catalog: CatalogRef, rows: Rows, column: str = "tensor") -> np.ndarray:
    """Read one column for these rows on a worker, each shard opened once (never through the client)."""
    out = None
    for k in np.unique(rows.shard):
        places = np.nonzero(rows.shard == k)[0]
        values = catalog.read_rows(rows.shards[k], rows.row[places], column)
        if out is None:
            out = np.empty((len(rows.members), values.shape[1]), dtype=np.uint8)
        out[places] = values
    return out if out is not None else np.empty((0, 0), dtype=np.uint8)


# ---- threshold 0: hash join -------------------------------------------------------------------


def _split_equal(
    fetch: Callable[[np.ndarray], np.ndarray], n: int, px: int, rotate: bool, step: int
) -> list[list[int]]:
    """Partition rows 0..n-1 into classes of tensors equal up to a quarter turn (or exactly equal), each
    class in row order (so its first row is its head); `fetch` gives the tensors of some rows, asked for
    `step` rows at a time, so memory stays bounded however large a class is."""
    left = np.arange(n)
    classes = []
    while len(left):
        head, rest = left[0], left[1:]
        first = fetch(left[:1])
        turns: list[np.ndarray] = []  # the head turned 1-3 times, made only when a row differs as is
        same = np.zeros(len(rest), dtype=bool)
        for start in range(0, len(rest), step):
            part = slice(start, start + step)
            tensors = fetch(rest[part])
            equal = (tensors == first[0]).all(axis=1)
            if rotate and not equal.all():
                turns = turns or [kernels.turned(first, px, k)[0] for k in (1, 2, 3)]
                for form in turns:
                    equal |= (tensors == form).all(axis=1)
            same[part] = equal
        classes.append([int(head)] + rest[same].tolist())
        left = rest[~same]
    return classes


def _equal_classes(
    fetch: Callable[[np.ndarray], np.ndarray],
    members: np.ndarray,
    sizes: list[tuple[int, int]],
    px: int,
    rotate: bool,
    step: int,
) -> list[list[int]]:
    """Check hash classes (size, members among them, members first; `fetch` gives the tensors of some
    of `members`' places) tensor by tensor; the classes of really equal images holding a member
    (positions, a member first)."""
    out, start = [], 0
    for size, n_members in sizes:
        for part in _split_equal(lambda picks, base=start: fetch(base + picks), size, px, rotate, step):
            if len(part) > 1 and part[0] < n_members:
                out.append([int(members[start + k]) for k in part])
        start += size
    return out


def _verify(parts: list, members: np.ndarray, sizes: list[tuple[int, int]], px: int, rotate: bool) -> list:
    """Hash classes that fit one task, their tensors handed over by gather's fetch tasks."""
    got = Tensors(parts)
    at = got.rows(members)
    return _equal_classes(lambda picks: got.tensors[at[picks]], members, sizes, px, rotate, VERIFY_SLICE)


def _verify_slices(
    catalog: CatalogRef, rows: Rows, sizes: list[tuple[int, int]], px: int, rotate: bool
) -> list:
    """One hash class too large for a task's bytes, read from the catalog slice by slice."""
    step = max(1, kernels.images_per_task(px, VERIFY_COPIES, VERIFY_IMAGES) // 2)
    fetch = lambda picks: _load(catalog, rows.subset(picks))  # noqa: E731
    return _equal_classes(fetch, rows.members, sizes, px, rotate, step)


def _hash_classes(decoded: Decoded, scope: Scope, spec: MatchSpec) -> list[list[int]]:
    """Images sharing a content hash (turn-invariant when rotating) and, with same_dim, a size; only
    classes holding a member and another image are kept, members first (so a class's first image is a
    member when it has one)."""
    positions = np.concatenate([scope.members, scope.reference])
    if not len(positions):
        return []
    hashes = (decoded.hash_turned if spec.rotate else decoded.hash)[positions]
    key = [np.frombuffer(hashes.astype("S16").tobytes(), dtype=np.uint64).reshape(-1, 2)]
    if spec.same_dim:
        dims = np.sort(np.stack([decoded.width, decoded.height], axis=1)[positions], axis=1)
        key.append(dims.astype(np.uint64))
    _, cls = np.unique(np.concatenate(key, axis=1), axis=0, return_inverse=True)
    cls = cls.reshape(-1)
    is_reference = np.arange(len(positions)) >= len(scope.members)
    order = np.lexsort((is_reference, cls))  # by class, members first, each in scope order
    starts = np.flatnonzero(np.r_[True, cls[order][1:] != cls[order][:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    keep = (sizes > 1) & ~is_reference[order[starts]]
    return [positions[order[a : a + n]].tolist() for a, n in zip(starts[keep], sizes[keep])]


def _duplicate_tasks(
    catalog: CatalogRef, decoded: Decoded, scope: Scope, spec: MatchSpec, key: str
) -> tuple[list, int]:
    """Tasks checking each hash class tensor by tensor, and how many images they read."""
    fits = kernels.images_per_task(spec.px, VERIFY_COPIES, VERIFY_IMAGES)
    batches, batch, sizes = [], [], []
    is_member = np.zeros(len(decoded.row), dtype=bool)
    is_member[scope.members] = True
    for cls in _hash_classes(decoded, scope, spec):
        if batch and len(batch) + len(cls) > fits:  # a batch over `fits` is one class alone
            batches.append((np.array(batch, dtype=np.int64), sizes))
            batch, sizes = [], []
        batch.extend(cls)
        sizes.append((len(cls), int(is_member[cls].sum())))
    if batch:
        batches.append((np.array(batch, dtype=np.int64), sizes))
    dsk: dict = {}
    small = [t for t, (b, _) in enumerate(batches) if len(b) <= fits]
    parts = tensor_parts(dsk, catalog, decoded, [np.unique(batches[t][0]) for t in small], spec.px, key)
    for t, part in zip(small, parts):
        members, sizes = batches[t]
        dsk[(key, t)] = (_verify, part, members, sizes, spec.px, spec.rotate)
    for t, (members, sizes) in enumerate(batches):
        if len(members) > fits:
            dsk[(key, t)] = (_verify_slices, catalog, _rows(decoded, members), sizes, spec.px, spec.rotate)
    tasks = graph(dsk, [(key, t) for t in range(len(batches))], key) if batches else []
    return tasks, sum(len(b) for b, _ in batches)


def _class_edges(results: list[list[list[int]]]) -> Edges:
    """Star edges, S = 0: each image of a class of equal images linked once to the class's head (a
    member: members come first), not every pair. Equality is transitive, so the class is still
    whole (groups.class_groups), in linear time and memory; expand_stars lists every pair."""
    heads, others = [], []
    for classes in results:
        for cls in classes:
            heads.extend(cls[:1] * (len(cls) - 1))
            others.extend(cls[1:])
    return np.array(heads, dtype=np.int64), np.array(others, dtype=np.int64), np.zeros(len(heads))


def expand_stars(edges: Edges, reference: np.ndarray | None = None) -> Edges:
    """Every pair of each class that star edges (threshold 0, i = head) describe, S = 0, except two
    reference images (given as a bool per position), which are never compared."""
    heads, others, _ = edges
    order = np.argsort(heads, kind="stable")
    heads, others = heads[order], others[order]
    starts = np.flatnonzero(np.r_[True, heads[1:] != heads[:-1]]) if len(heads) else []
    i, j = [], []
    for a, b in zip(starts, [*starts[1:], len(heads)]):
        cls = [int(heads[a])] + others[a:b].tolist()
        for x in range(len(cls)):
            for y in range(x + 1, len(cls)):
                if reference is None or not (reference[cls[x]] and reference[cls[y]]):
                    i.append(cls[x])
                    j.append(cls[y])
    return np.array(i, dtype=np.int64), np.array(j, dtype=np.int64), np.zeros(len(i))


def find_edges(
    catalog: CatalogRef,
    decoded: Decoded,
    scopes: list[Scope],
    spec: MatchSpec,
    chunksize: int | None,
    engine: Callable[[int], Engine],
    show_progress: bool,
) -> list[Edges]:
    """Every matching pair within each scope, as (i, j, S) arrays of file-table positions per scope.

    Parameters
    ----------
    catalog, decoded
        Where each image's tensor and summaries live.
    scopes
        What is compared: each scope's members with each other and with its reference images.
    spec
        The match rule (tensor side, turns, same_dim, largest S).
    chunksize
        Images per brightness band (threshold above 0), or None for similar.BAND_IMAGES.
    engine
        Returns the cluster for a job of so many images.
    show_progress
        Show a progress bar.
    """
    run = uuid.uuid4().hex[:8]  # task names unique to this call: searches may share one cluster
    if spec.limit > 0:
        return similar_edges(catalog, decoded, scopes, spec, band_size(chunksize), engine, show_progress, run)
    per_scope, images = [], 0
    for s, scope in enumerate(scopes):
        tasks, n = _duplicate_tasks(catalog, decoded, scope, spec, f"dupflow-verify-{run}-{s}")
        per_scope.append(tasks)
        images += n
    flat = [task for tasks in per_scope for task in tasks]
    results = engine(images).run(flat, "dupflow comparing", show_progress, images) if flat else []
    out, start = [], 0
    for tasks in per_scope:
        out.append(_class_edges(results[start : start + len(tasks)]))
        start += len(tasks)
    return out

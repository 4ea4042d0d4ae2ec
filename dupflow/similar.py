"""Stage 4 for a threshold above 0: brightness bands, a region bound found through a k-d tree, exact sums.

Two passes over the cluster, each reading every shard once, sequentially:
1. Bounds. Each shard task reads the grid column of its rows and hands each brightness band its rows'
   region sums (kernels.region_sums). A band holds images of neighbouring mean brightness, so a band
   meets only the bands within the brightness radius: the work follows the pairs that can match, not
   blocks². Each band pair keeps the pairs whose region bound (a lower bound on S, per turn) is within
   the limit, found through a k-d tree, and returns them to the client.
2. Exact sums. The surviving pairs are cut into tasks of bounded bytes; fetch tasks (a few shards each)
   read only the tensors those tasks need and hand each its part; each task computes S exactly for the
   turns still in doubt.
Both passes are one hand-built graph each (see gather.graph), so planning a million images takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import kernels
from .catalog import GRID_DTYPE, CatalogRef
from .cluster import Engine
from .gather import Tensors, by_shard, graph, tensor_parts

if TYPE_CHECKING:
    from .compare import MatchSpec, Scope
    from .ingest import Decoded

BAND_IMAGES = 1 << 15  # images per band (region sums: about 1 KB per image while a band pair runs)
EXACT_PAIRS = 1 << 16  # candidate pairs per exact task
EXACT_COPIES = 6  # an exact task's bytes per image: its tensor, four turns, a float64 slice
WAVE_SHARE = 4  # the exact pass holds at most 1/WAVE_SHARE of the workers' memory in tensors at once
WAVE_BYTES = 256 * 2**20  # ... and at least this much (see exact_waves)

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]

__all__ = ["Band", "Plan", "band_size", "bound_tasks", "exact_tasks", "exact_waves", "plan", "similar_edges"]


def band_size(chunksize: int | None) -> int:
    """Images per band: the user's chunksize, or BAND_IMAGES (a band holds region sums, not tensors)."""
    return chunksize if chunksize is not None else BAND_IMAGES


@dataclass(frozen=True)
class Band:
    """Images of neighbouring brightness (positions), which of them are reference images, their sizes."""

    positions: np.ndarray
    reference: np.ndarray
    dims: np.ndarray  # sorted (short side, long side) per image
    low: float  # least and greatest mean brightness
    high: float


@dataclass(frozen=True)
class Plan:
    """One scope's bands and which band pairs can hold a match."""

    bands: list[Band]
    pairs: list[tuple[int, int]]


def plan(
    positions: np.ndarray,
    reference: np.ndarray,
    sums: np.ndarray,
    dims: np.ndarray,
    spec: MatchSpec,
    size: int,
) -> Plan:
    """Cut a scope into bands by mean brightness; keep the band pairs within the brightness radius whose
    images are not all reference images (and, with same_dim, share a size)."""
    means = sums[positions].sum(axis=1) / spec.d
    order = np.argsort(means, kind="stable")
    small = positions.astype(np.int32 if len(dims) < 2**31 else np.int64)  # the graph carries these
    bands = []
    for start in range(0, len(order), size):
        pick = order[start : start + size]
        band_dims = dims[positions[pick]].astype(np.int32)
        bands.append(Band(small[pick], reference[pick], band_dims, means[pick[0]], means[pick[-1]]))
    radius = kernels.mean_radius(spec.limit, spec.d)
    codes = [np.unique((b.dims[:, 0].astype(np.int64) << 32) + b.dims[:, 1]) for b in bands]
    pairs = []
    for x, bx in enumerate(bands):
        for y in range(x, len(bands)):
            by = bands[y]
            if by.low - bx.high > radius:
                break  # bands are in brightness order: every later band is farther
            if bx.reference.all() and by.reference.all():
                continue
            if spec.same_dim and not len(np.intersect1d(codes[x], codes[y])):
                continue
            pairs.append((x, y))
    return Plan(bands, pairs)


def _shard_regions(
    catalog: CatalogRef, shard: str, rows: np.ndarray, positions: np.ndarray, band: np.ndarray
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Read one shard's grids for these rows; each band's positions and region sums."""
    g = kernels.GRID
    grids = catalog.read_rows(shard, rows, "grid").view(GRID_DTYPE).reshape(len(rows), g, g, 3)
    sums = kernels.region_sums(grids)
    return {int(b): (positions[band == b], sums[band == b]) for b in np.unique(band)}


def _band_regions(pieces: list[dict], band: int, positions: np.ndarray) -> np.ndarray:
    """One band's region sums, in the band's order of positions, from the shards it spans (a worker
    receives each shard's pieces once, whichever of their bands it runs, and takes only its own)."""
    mine = [piece[band] for piece in pieces]
    got = np.concatenate([p for p, _ in mine])
    sums = np.concatenate([s for _, s in mine])
    order = np.argsort(got)
    return sums[order[np.searchsorted(got, positions, sorter=order)]]


def _band_pair(
    sums_x: np.ndarray, sums_y: np.ndarray, bx: Band, by: Band, spec: MatchSpec, same: bool
) -> tuple:
    """The pairs of two bands (or one band with itself) that the region bound leaves in doubt, as
    positions and live turns; never two reference images, and with same_dim only equal sizes."""
    keep_x = np.arange(len(bx.positions))
    keep_y = np.arange(len(by.positions))
    if not same:  # only the edges facing each other can be within the radius
        radius = kernels.mean_radius(spec.limit, spec.d)
        keep_x = keep_x[sums_x.sum(axis=(1, 2)) / spec.d >= by.low - radius]
        keep_y = keep_y[sums_y.sum(axis=(1, 2)) / spec.d <= bx.high + radius]
    i, j, alive = kernels.region_candidates(
        sums_x[keep_x], sums_y[keep_y], spec.px, spec.rotate, spec.limit, upper=same
    )
    i, j = keep_x[i], keep_y[j]
    keep = ~(bx.reference[i] & by.reference[j])
    if spec.same_dim:
        keep &= (bx.dims[i] == by.dims[j]).all(axis=1)
    return bx.positions[i[keep]].astype(np.int64), by.positions[j[keep]].astype(np.int64), alive[keep]


def bound_tasks(catalog: CatalogRef, decoded: Decoded, the_plan: Plan, spec: MatchSpec, key: str) -> list:
    """Pass 1: one task per band pair, fed by one task per shard (its rows' region sums)."""
    if not the_plan.pairs:
        return []
    positions = np.concatenate([b.positions for b in the_plan.bands])
    band = np.concatenate([np.full(len(b.positions), x, np.int32) for x, b in enumerate(the_plan.bands)])
    dsk: dict = {}
    spans: list[list] = [[] for _ in the_plan.bands]
    for k, places in by_shard(decoded.shard[positions]):
        name = (f"{key}-shard", k)
        here = positions[places]
        rows = decoded.row[here].astype(np.int32)
        dsk[name] = (_shard_regions, catalog, decoded.shards[k], rows, here, band[places])
        for b in np.unique(band[places]).tolist():
            spans[b].append(name)
    for x, b in enumerate(the_plan.bands):
        dsk[(f"{key}-band", x)] = (_band_regions, spans[x], x, b.positions)
    bands = the_plan.bands
    for x, y in the_plan.pairs:
        dsk[(key, x, y)] = (
            _band_pair,
            (f"{key}-band", x),
            (f"{key}-band", y),
            bands[x],
            bands[y],
            spec,
            x == y,
        )
    return graph(dsk, [(key, x, y) for x, y in the_plan.pairs], key)


def _chunks(i: np.ndarray, j: np.ndarray, most_images: int) -> list[tuple[slice, np.ndarray]]:
    """Cut the candidate pairs into runs of at most EXACT_PAIRS pairs and most_images distinct images;
    each run with the images it needs."""
    out, start = [], 0
    while start < len(i):
        stop = min(len(i), start + EXACT_PAIRS)
        needed = np.unique(np.concatenate([i[start:stop], j[start:stop]]))
        while stop - start > 1 and len(needed) > most_images:
            stop = start + (stop - start) // 2
            needed = np.unique(np.concatenate([i[start:stop], j[start:stop]]))
        out.append((slice(start, stop), needed))
        start = stop
    return out


def _exact(parts: list, i: np.ndarray, j: np.ndarray, alive: np.ndarray, spec: MatchSpec) -> Edges:
    """Exact S for candidate pairs over their live turns; the pairs within the limit."""
    got = Tensors(parts)
    li, lj = got.rows(i), got.rows(j)
    if 4 * len(li) <= len(got.positions) ** 2:
        a, b, sums = kernels.exact_matches(got.tensors, got.tensors, spec.px, spec.limit, li, lj, alive)
        return got.positions[a], got.positions[b], sums
    # most pairs in doubt (a high threshold): one matrix product per turn beats pair by pair; a turn the
    # bound ruled out has S above the limit, so the least S over all turns decides the same
    sums = kernels.pair_sums(got.tensors, got.tensors, spec.px, alive.shape[1] > 1)[li, lj]
    hit = sums <= spec.limit
    return i[hit], j[hit], sums[hit]


Wave = list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # per exact task: i, j, live turns, images


def exact_waves(found: list, spec: MatchSpec, budget: int) -> list[Wave]:
    """The band pairs' candidates cut into exact tasks, and the tasks into waves whose tensors stay within
    `budget` bytes: every exact task needs tensors from almost every shard, so a wave's tensors are all in
    memory at once. Each wave reads the shards again (at 1,000,000 images: 1 wave, 2.7 GB peak, 12 CPU s;
    4 waves, 1.6 GB, 31 CPU s), hence waves as large as the workers' memory allows."""
    found = [f for f in found if len(f[0])]
    if not found:
        return []
    i = np.concatenate([f[0] for f in found])
    j = np.concatenate([f[1] for f in found])
    alive = np.concatenate([f[2] for f in found])
    most = kernels.images_per_task(spec.px, EXACT_COPIES, 8192)
    waves: list[Wave] = [[]]
    held = 0
    for c, needed in _chunks(i, j, most):
        if waves[-1] and (held + len(needed)) * spec.d > budget:
            waves.append([])
            held = 0
        waves[-1].append((i[c], j[c], alive[c], needed))
        held += len(needed)
    return waves


def exact_tasks(catalog: CatalogRef, decoded: Decoded, wave: Wave, spec: MatchSpec, key: str) -> list:
    """Pass 2, one wave: a task per chunk of candidate pairs, fed their tensors by gather's fetch tasks."""
    dsk: dict = {}
    parts = tensor_parts(dsk, catalog, decoded, [needed for *_, needed in wave], spec.px, key)
    for t, (i, j, alive, _) in enumerate(wave):
        dsk[(key, t)] = (_exact, parts[t], i, j, alive, spec)
    return graph(dsk, [(key, t) for t in range(len(wave))], key)


def similar_edges(
    catalog: CatalogRef,
    decoded: Decoded,
    scopes: list[Scope],
    spec: MatchSpec,
    size: int,
    engine: Callable[[int], Engine],
    show_progress: bool,
    run: str,
) -> list[Edges]:
    """Every pair within the limit in each scope (members with members and with reference images)."""
    dims = np.sort(np.stack([decoded.width, decoded.height], axis=1), axis=1)
    plans, images = [], 0
    for scope in scopes:
        positions = np.concatenate([scope.members, scope.reference])
        reference = np.r_[np.zeros(len(scope.members), bool), np.ones(len(scope.reference), bool)]
        plans.append(plan(positions, reference, decoded.sums, dims, spec, size))
        images += len(positions)
    bounds = [bound_tasks(catalog, decoded, p, spec, f"dupflow-bound-{run}-{s}") for s, p in enumerate(plans)]
    flat = [t for tasks in bounds for t in tasks]
    found = engine(images).run(flat, "dupflow bounding", show_progress, images) if flat else []
    budget = max(WAVE_BYTES, engine(images).memory // WAVE_SHARE) if found else WAVE_BYTES
    waves, start = [], 0
    for s, tasks in enumerate(bounds):
        waves.extend((s, w) for w in exact_waves(found[start : start + len(tasks)], spec, budget))
        start += len(tasks)
    parts: list[list] = [[] for _ in scopes]
    for k, (s, wave) in enumerate(waves):
        tasks = exact_tasks(catalog, decoded, wave, spec, f"dupflow-exact-{run}-{s}-{k}")
        label = "dupflow comparing" + (f" ({k + 1}/{len(waves)})" if len(waves) > 1 else "")
        parts[s].extend(engine(images).run(tasks, label, show_progress, images // len(waves)))
    return [
        tuple(np.concatenate([part[k] for part in chunk]) for k in range(3))
        if chunk
        else kernels.no_matches()
        for chunk in parts
    ]

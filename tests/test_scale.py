"""The code that runs at scale, against brute force: the pruned path at S == limit exactly, many small
blocks with whole block pairs skipped, scopes with reference images, and fast decoding's stated agreement.

Each test here was checked against the bug it is meant to catch (see the issue-10 closing note): the
pruned path deciding with `<` instead of `<=`, a halved block-skip radius, and a coarser JPEG draft.
"""

from __future__ import annotations

import io
import os
import tracemalloc

import numpy as np
import pytest
from imagegen import photo, reference_tensor, save
from PIL import Image

import dupflow
from dupflow import kernels, similar
from dupflow.cluster import Engine
from dupflow.compare import MatchSpec, Scope, expand_stars, find_edges
from dupflow.decode import decode_image
from dupflow.groups import class_groups, greedy_groups

PX = 10


def _families(root: str, n_unrelated: int = 110, n_families: int = 12) -> None:
    """Unrelated photos over the whole brightness range, plus families of near copies: uniform brightness
    shifts (S = d * c^2, so the pair sits exactly on the brightness radius), noise, turns, byte copies."""
    rng = np.random.default_rng(10)
    for k in range(n_unrelated):
        img = photo(9000 + k, 40, 30).astype(np.int64) + int(rng.integers(-90, 90))
        save(np.clip(img, 0, 255).astype(np.uint8), f"{root}/u/{k:03d}.png")
    for f in range(n_families):
        base = photo(500 + f, 48, 36).astype(np.int64) // 2 + 40 + 6 * f  # no wrap-around under the shifts
        save(base.astype(np.uint8), f"{root}/f{f:02d}/base.png")
        save(base.astype(np.uint8), f"{root}/f{f:02d}/copy.png")
        for shift in (1, 2, 3, 5):
            save((base + shift).astype(np.uint8), f"{root}/f{f:02d}/plus{shift}.png")
        noise = np.random.default_rng(f).integers(-2, 3, base.shape)
        save((base + noise).astype(np.uint8), f"{root}/f{f:02d}/noise.png")
        save(np.rot90(base + 1).astype(np.uint8), f"{root}/f{f:02d}/turned_plus1.png")


@pytest.fixture(scope="module")
def families(tmp_path_factory, client):
    """The images built into a catalog, their tensors (Pillow's recipe) and every pair's exact S."""
    root = str(tmp_path_factory.mktemp("scale"))
    _families(f"{root}/img")
    dif = dupflow.build(
        f"{root}/img", px_size=PX, show_progress=False, scheduler=client, catalog=f"{root}/cat"
    )
    catalog, decoded, paths = dif._catalog, dif._decoded, list(dif._listing.path)
    tensors = np.stack([reference_tensor(p, PX) for p in paths]).astype(np.float64)
    sums = {}
    for rotate in (True, False):
        best = np.full((len(paths), len(paths)), np.inf)
        for k in range(4 if rotate else 1):
            turned = np.rot90(tensors, k, axes=(1, 2)).reshape(len(paths), -1)
            flat = tensors.reshape(len(paths), -1)
            for i in range(len(paths)):
                best[i] = np.minimum(best[i], ((flat[i] - turned) ** 2).sum(axis=1))
        sums[rotate] = best
    yield catalog, decoded, paths, tensors, sums
    dif.close()


def _small_subset(path: str) -> bool:
    """Families f00-f04 and the first 40 unrelated images."""
    folder, name = os.path.basename(os.path.dirname(path)), os.path.basename(path)
    return folder in {f"f{f:02d}" for f in range(5)} or (folder == "u" and name < "040")


def _brute(sums: np.ndarray, limit: float, members: np.ndarray, reference: np.ndarray) -> dict:
    """{(i, j): S} for every member-member and member-reference pair within the limit."""
    out = {}
    for a in members.tolist():
        for b in np.concatenate([members, reference]).tolist():
            if a != b and sums[a, b] <= limit:
                out[(min(a, b), max(a, b))] = sums[a, b]
    return out


def _got(edges) -> dict:
    i, j, s = edges
    got = {}
    for a, b, v in zip(i.tolist(), j.tolist(), s.tolist()):
        assert (min(a, b), max(a, b)) not in got, "a pair reported twice"
        got[(min(a, b), max(a, b))] = v
    return got


def _limits(sums: np.ndarray, count: int = 9) -> list[float]:
    """0, distinct S values of planted near copies spread over their range (so pairs sit at S == limit
    exactly, including uniform brightness shifts on the brightness radius), and one above them all."""
    upper = sums[np.triu_indices(len(sums), 1)]
    near = np.unique(upper[(upper > 0) & (upper <= 3 * PX * PX * 26)])
    shifts = [float(3 * PX * PX * c * c) for c in (1, 2, 3, 5) if 3 * PX * PX * c * c in near]
    spread = near[np.linspace(0, len(near) - 1, count).astype(int)].tolist()
    return sorted({0.0, *shifts, *spread, float(near.max() + 1)})


@pytest.mark.slow
@pytest.mark.parametrize("chunksize", [None, 1, 3])
def test_every_threshold_equals_brute_force(families, client, chunksize):
    """Whole set in one block (the pruned path, checked to be taken) and many tiny blocks (whole block
    pairs skipped on their brightness ranges): the same pairs and sums as brute force at every S."""
    catalog, decoded, paths, tensors, sums = families
    engine = Engine(client)
    everyone = np.arange(len(paths))
    if chunksize is not None:  # tiny blocks mean many tasks: five families and 40 unrelated images
        everyone = np.array([k for k, p in enumerate(paths) if _small_subset(p)])
    grids = kernels.grid_sums(tensors.astype(np.uint8).reshape(len(paths), -1), PX, kernels.grid_edges(PX))
    regions = kernels.region_sums(grids[everyone])
    limits = _limits(sums[True][np.ix_(everyone, everyone)], 9 if chunksize is None else 5)
    assert len(limits) > 6
    pairs_at_limit = 0
    for limit in limits:
        for rotate in (True, False) if chunksize is None else (True,):
            spec = MatchSpec(PX, rotate, False, limit)
            edges = find_edges(catalog, decoded, [Scope(everyone)], spec, chunksize, lambda n: engine, False)
            want = _brute(sums[rotate], limit, everyone, everyone[:0])
            assert _got(edges[0]) == want, (limit, rotate, chunksize)
            pairs_at_limit += sum(1 for s in want.values() if s == limit)
            if 0 < limit < float(3 * PX * PX * 26):  # the region bound really prunes: most pairs never
                i, _, _ = kernels.region_candidates(regions, regions, PX, rotate, limit, upper=True)
                assert len(i) < 0.5 * len(everyone) * (len(everyone) - 1) / 2  # reach an exact sum
    assert pairs_at_limit >= len(limits) - 1  # every non-zero limit is some pair's exact S


def test_exact_pass_in_waves_equals_brute_force(families, client, monkeypatch):
    """With a wave budget of a few tensors the exact pass runs in many waves (each fetching only its own
    images): the same pairs and sums as brute force."""
    catalog, decoded, paths, _, sums = families
    engine = Engine(client)
    everyone = np.arange(len(paths))
    monkeypatch.setattr(similar, "WAVE_BYTES", 12 * 3 * PX * PX)
    monkeypatch.setattr(similar, "WAVE_SHARE", 10**12)  # so the floor, 12 tensors, is the budget
    monkeypatch.setattr(similar, "EXACT_PAIRS", 8)  # exact tasks of 8 pairs: many tasks, many waves
    spec = MatchSpec(PX, True, False, float(3 * PX * PX * 10))
    pairs = [(everyone[:-1], everyone[1:], np.ones((len(everyone) - 1, 4), bool))]
    found = similar.exact_waves(pairs, spec, similar.WAVE_BYTES)
    assert len(found) > 5  # many waves, each within the budget unless one task alone exceeds it
    edges = find_edges(catalog, decoded, [Scope(everyone)], spec, 5, lambda n: engine, False)
    want = _brute(sums[True], spec.limit, everyone, everyone[:0])
    assert len(want) > 20 and _got(edges[0]) == want


def test_scope_compares_members_with_reference_never_reference_with_reference(families, client):
    """New images against kept ones: member x member and member x reference pairs, as brute force."""
    catalog, decoded, paths, _, sums = families
    engine = Engine(client)
    rng = np.random.default_rng(4)
    picks = rng.permutation(len(paths))
    members, reference = np.sort(picks[:40]), np.sort(picks[40:])
    for limit in (0.0, 300.0, 1200.0, 2700.0, 7500.0):
        for chunksize in (None, 3):
            spec = MatchSpec(PX, True, False, limit)
            scope = Scope(members, reference)
            got = _got(find_edges(catalog, decoded, [scope], spec, chunksize, lambda n: engine, False)[0])
            want = _brute(sums[True], limit, members, reference)
            assert got == want, (limit, chunksize)
            assert any(a in reference or b in reference for a, b in want) or limit == 0
    # reference x reference is never planned: with nothing skippable, exactly the band pairs holding a member
    spec = MatchSpec(PX, True, False, float(3 * PX * PX * 255**2))
    positions = np.concatenate([members, reference])
    is_reference = np.r_[np.zeros(len(members), bool), np.ones(len(reference), bool)]
    dims = np.sort(np.stack([decoded.width, decoded.height], axis=1), axis=1)
    got = similar.plan(positions, is_reference, decoded.sums, dims, spec, 7)
    bands = got.bands
    assert all(len(b.positions) <= 7 for b in bands) and sum(len(b.positions) for b in bands) == len(
        positions
    )
    assert got.pairs == [
        (x, y)
        for x in range(len(bands))
        for y in range(x, len(bands))
        if not (bands[x].reference.all() and bands[y].reference.all())
    ]
    assert len(got.pairs) < len(bands) * (len(bands) + 1) // 2  # some pairs were all reference: skipped
    assert similar.band_size(7) == 7


def test_threshold_zero_with_reference(families, client):
    """Equal images: one star edge per image to its class head (a member), expanding to the pairs among
    members and with reference images, never two reference images."""
    catalog, decoded, paths, _, sums = families
    engine = Engine(client)
    copies = [k for k, p in enumerate(paths) if p.endswith("/copy.png")]
    bases = [k for k, p in enumerate(paths) if p.endswith("/base.png")]
    members = np.array(copies[:4] + bases[4:6])
    reference = np.array(bases[:4] + copies[4:8] + bases[7:8])  # f06, f07: only reference images
    spec = MatchSpec(PX, True, False, 0.0)
    edges = find_edges(catalog, decoded, [Scope(members, reference)], spec, None, lambda n: engine, False)[0]
    is_reference = np.isin(np.arange(len(paths)), reference)
    assert len(edges[0]) == 6 and not is_reference[edges[0]].any()  # heads are members
    assert _got(expand_stars(edges, is_reference)) == _brute(sums[True], 0.0, members, reference)


def test_threshold_zero_reads_large_classes_in_slices(tmp_path, monkeypatch):
    """A class too large for a task's bytes is checked slice by slice: the same classes as at once."""
    for k in range(5):
        save(photo(1, 40, 30), tmp_path / "img" / f"a{k}.png")
    for k in range(3):
        save(photo(2, 40, 30), tmp_path / "img" / f"b{k}.png")
    save(photo(3, 40, 30), tmp_path / "img" / "c.png")
    with dupflow.build(
        str(tmp_path / "img"), px_size=PX, show_progress=False, catalog=str(tmp_path / "cat")
    ) as dif:
        catalog, decoded, paths = dif._catalog, dif._decoded, list(dif._listing.path)
        engine = Engine(None, 1, 0)  # threads in this process, which see the patched budget
        everyone = np.arange(len(paths))
        spec = MatchSpec(PX, True, False, 0.0)
        whole = find_edges(catalog, decoded, [Scope(everyone)], spec, None, lambda n: engine, False)[0]
        monkeypatch.setattr(kernels, "TASK_BYTES", 3 * 3 * PX * PX)  # one image per task's bytes
        sliced = find_edges(catalog, decoded, [Scope(everyone)], spec, None, lambda n: engine, False)[0]
        engine.close()
    names = {
        tuple(sorted((os.path.basename(paths[i]), os.path.basename(paths[j]))))
        for i, j, _ in zip(*expand_stars(sliced))
    }
    assert _got(expand_stars(sliced)) == _got(expand_stars(whole))
    assert names == {(f"a{x}.png", f"a{y}.png") for x in range(5) for y in range(x + 1, 5)} | {
        (f"b{x}.png", f"b{y}.png") for x in range(3) for y in range(x + 1, 3)
    }


def test_class_groups_equal_greedy_groups_over_every_pair():
    """Star edges grouped transitively give exactly the greedy groups of all pairs, references too."""
    rng = np.random.default_rng(7)
    n = 400
    labels = rng.integers(0, 60, n)  # 60 classes of equal images among 400
    reference = rng.random(n) < 0.3
    heads, others = [], []
    for label in range(60):
        cls = np.flatnonzero(labels == label)
        cls = np.concatenate([cls[~reference[cls]], cls[reference[cls]]])
        if len(cls) > 1 and not reference[cls[0]]:
            heads += [cls[0]] * (len(cls) - 1)
            others += cls[1:].tolist()
    star = (np.array(heads), np.array(others), np.zeros(len(heads)))
    for ref in (None, reference):
        every = expand_stars(star, ref)
        assert len(every[0]) > 3 * len(star[0])
        ranking = rng.permutation(n).tolist()
        if ref is not None:
            ranking.sort(key=lambda p: not ref[p])  # reference images first, as quality_order ranks them
        got, want = class_groups(ranking, star[0], star[1], ref), greedy_groups(ranking, *every)
        assert [(p, sorted(t)) for p, t in got] == [(p, sorted(t)) for p, t in want]  # taken: any order


@pytest.mark.parametrize("px", [1000, 2000])
def test_exact_tasks_stay_within_their_bytes(px):
    """At the exact stage's images per task, a task's whole work (the shards' pieces it holds, its own
    copy, turned copies, float64 temporaries) stays within kernels.TASK_BYTES."""
    most, d = kernels.images_per_task(px, similar.EXACT_COPIES, 8192), 3 * px * px
    assert 1 < most < kernels.images_per_task(10, similar.EXACT_COPIES, 8192)  # sized by bytes
    rng = np.random.default_rng(px)
    a = rng.integers(0, 256, (most, d), dtype=np.uint8)
    even = a[0 : most // 2 * 2 : 2]
    a[1 : most // 2 * 2 : 2] = np.clip(even.astype(np.int16) + rng.integers(-2, 3, even.shape), 0, 255)
    positions = np.arange(most) * 3
    pieces = [(positions[::2], a[::2]), (positions[1::2], a[1::2])]  # two shards' parts, as received
    i = positions[np.repeat(np.arange(most), 2)]  # each image against two others, every turn in doubt
    j = positions[(np.repeat(np.arange(most), 2) + np.tile([1, 2], most)) % most]
    alive = np.ones((len(i), 4), bool)
    spec = MatchSpec(px, True, False, float(4 * d))
    tracemalloc.start()
    found = similar._exact(pieces, i, j, alive, spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert a.nbytes + peak <= kernels.TASK_BYTES, (px, most, a.nbytes + peak)
    assert len(found[0]) >= most // 2  # the near rows match: the work really ran


def _jpeg(seed: int, width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(seed, width, height)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(640, 480), (1024, 768)])
def test_fast_jpeg_decode_keeps_its_stated_agreement(size):
    """decode="fast" (JPEG draft at 2 x px) stays close to exact: the README states a median per-image
    MSE of 0.23 and 98% of images within 1 on photos; a coarser draft breaks this."""
    mses = []
    for seed in range(12):
        data = _jpeg(seed, *size)
        exact = decode_image(data, 50, "exact")[0].astype(np.float64)
        fast, width, height = decode_image(data, 50, "fast")
        assert (width, height) == size  # fast mode reports the original size, not the draft's
        mses.append(((exact - fast) ** 2).mean())
    mses = np.array(mses)
    assert np.median(mses) <= 0.5 and (mses <= 1).mean() >= 0.95, (np.median(mses), (mses <= 1).mean())
    assert mses.max() > 0  # the draft really decoded at a reduced scale


def test_fast_decode_leaves_png_exact(tmp_path):
    png = save(photo(3, 333, 217), os.path.join(tmp_path, "a.png"))
    data = open(png, "rb").read()
    assert np.array_equal(decode_image(data, 50, "fast")[0], decode_image(data, 50, "exact")[0])

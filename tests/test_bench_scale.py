"""The 1,000,000-image benchmark tools: generate.py --mix thumb, check_exact.py on a run, scaling.py fits.

The thumbnail generator must be deterministic whatever the number of processes, write distinct originals and
plant the near copies it promises; check_exact.py must pass a correct run and catch a tampered one (a wrong
MSE in the last bit, a match left out of its group); the growth exponent must be the slope it claims.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import check_exact
import generate
import numpy as np
import pytest
import scaling
from test_actions import tree

from dupflow.decode import decode_image

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(os.path.dirname(HERE), "benchmarks")


@pytest.fixture(scope="module")
def thumbs(tmp_path_factory):
    """A 400-file --mix thumb set, generated with 2 processes."""
    out = str(tmp_path_factory.mktemp("thumbs") / "set")
    generate.generate(out, 400, seed=3, processes=2, mix="thumb")
    return out


def _tensor(root: str, rel: str) -> np.ndarray:
    with open(os.path.join(root, rel), "rb") as handle:
        return decode_image(handle.read(), 50, "exact")[0].astype(np.float64)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return min(float(((a - np.rot90(b, k)) ** 2).sum()) for k in range(4)) / 7500


def test_thumb_set_is_deterministic_and_as_planned(thumbs, tmp_path):
    again = str(tmp_path / "again")
    generate.generate(again, 400, seed=3, processes=1, mix="thumb")
    first, second = tree(thumbs), tree(again)
    assert first == second  # byte for byte, 2 processes vs 1
    images = [rel for rel in first if not rel.endswith(".json")]
    assert len(images) == 400
    info = json.loads(first["dataset.json"])
    assert info["mix"] == "thumb" and info["originals"] + info["copies"] == 400
    truth = json.loads(first["ground_truth.json"])
    assert len(truth) == info["copies"] and {p["b"] for p in truth} <= set(images)
    sizes = {(w, h) for w, h, _ in generate.THUMB_SIZES}
    for rel in images:
        if rel.startswith("photos"):
            from PIL import Image

            with Image.open(os.path.join(thumbs, rel)) as img:
                assert img.size in sizes


def test_thumb_originals_distinct_and_copies_near(thumbs):
    truth = json.loads(open(os.path.join(thumbs, "ground_truth.json"), encoding="utf-8").read())
    originals = sorted({p["a"] for p in truth})[:60]
    tensors = np.stack([_tensor(thumbs, rel).reshape(-1) for rel in originals])
    norms = (tensors**2).sum(axis=1)
    d = (norms[:, None] + norms[None, :] - 2 * tensors @ tensors.T) / 7500
    np.fill_diagonal(d, np.inf)
    assert d.min() > 50  # distinct originals, far apart at px 50
    means = tensors.mean(axis=1)
    assert means.max() - means.min() > 100  # brightness spread over the range
    by_kind: dict[str, list[float]] = {}
    for pair in truth:
        by_kind.setdefault(pair["kind"], []).append(
            _mse(_tensor(thumbs, pair["a"]), _tensor(thumbs, pair["b"]))
        )
    for kind in ("byte_copy", "png_resave"):
        assert by_kind.get(kind) and max(by_kind[kind]) == 0, kind
    assert by_kind["brightness"] and max(by_kind["brightness"]) <= 4
    near = [m for k in ("rot90", "rot180", "rot270", "resize_150", "resize_200") for m in by_kind.get(k, [])]
    assert near and np.mean(np.array(near) <= 5) >= 0.9
    assert by_kind.get("crop") and min(by_kind["crop"]) > 5  # planted, but beyond the similar threshold


def _check(data: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        os.path.join(BENCH, "check_exact.py"),
        data,
        "--run",
        out,
        "--processes",
        "1",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_check_exact_passes_a_run_and_catches_tampering(thumbs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "dupflow.cli", thumbs, "-Z", str(out), "-p", "false"]
    cmd += ["--catalog", str(tmp_path / "cat"), "-s", "similar", "-dim", "false"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for extra in ((), ("--exhaustive-max", "10", "--sample", "3000")):  # all pairs; families + sample
        ok = _check(thumbs, str(out), *extra)
        assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
        assert "OK: 0 mismatches" in ok.stdout
    results = next(p for p in out.iterdir() if p.name.endswith("_results.json"))
    result = json.loads(results.read_text())
    primary, matches = next((p, m) for p, m in result.items() if m and m[0][1] > 0)
    # a reported MSE off by one unit in the last place
    wrong = json.loads(json.dumps(result))
    wrong[primary][0][1] = float(np.nextafter(matches[0][1], np.inf))
    results.write_text(json.dumps(wrong))
    bad = _check(thumbs, str(out), "--exhaustive-max", "10", "--sample", "100")
    assert bad.returncode == 1 and "bit for bit | " in bad.stdout and "MISMATCH" in bad.stdout
    # a true match left out of its group: the copy becomes a loner
    dropped = json.loads(json.dumps(result))
    loner = dropped[primary].pop(0)[0]
    if not dropped[primary]:
        del dropped[primary]
    results.write_text(json.dumps(dropped))
    bad = _check(thumbs, str(out), "--exhaustive-max", "10", "--sample", "100")
    assert bad.returncode == 1 and "was left out of" in bad.stdout, bad.stdout[-3000:]
    assert os.path.relpath(loner, thumbs).replace(os.sep, "/") in bad.stdout


def test_fitted_exponent_is_the_slope():
    def row(n: int, wall: float, compare: float) -> scaling.Row:
        r = scaling.Row(n, False, "warm similar", [], wall_s=wall)
        r.dupflow = {"search": {"seconds": {"compare": compare}}}
        return r

    rows = [row(n, 0.5 * n / 1000, 2e-6 * n**2) for n in (1000, 3000, 10000)]
    fit = scaling.fitted_exponents(rows)["warm similar"]
    assert fit["sizes"] == [1000, 3000, 10000]
    assert fit["wall"] == pytest.approx(1.0, abs=1e-3) and fit["compare"] == pytest.approx(2.0, abs=1e-3)
    assert "warm similar" not in scaling.fitted_exponents(rows[:1])


def test_check_exact_keeper_ranking_follows_the_contract():
    class Ref:
        rels = ["b.png", "a.png", "c.png", "d.png"]
        pixels = np.array([100, 100, 100, 400])
        mtime = np.array([5.0, 5.0, 1.0, 9.0])
        nbytes = np.array([10, 10, 10, 1])

        def __len__(self):
            return 4

    pos = check_exact.quality_rank(Ref())
    # pixels first (d), then older (c), then bytes (tie), then path ascending (a before b)
    assert [Ref.rels[k] for k in np.argsort(pos)] == ["d.png", "c.png", "a.png", "b.png"]
    newest = check_exact.quality_rank(Ref(), "newest")
    assert [Ref.rels[k] for k in np.argsort(newest)] == ["d.png", "a.png", "b.png", "c.png"]

"""Reference inputs (the ingest gate): new images are compared with each other and with the reference,
reference images never with each other; a reference image is always kept, never moved; exact against a
brute-force reference over every new x new and new x reference pair."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from fractions import Fraction

import numpy as np
import pytest
from imagegen import make_photo_set, photo, reference_tensor, save
from PIL import Image

import dupflow
from dupflow import cli
from dupflow.hygiene import run


def _files(root) -> list[str]:
    return sorted(os.path.join(base, n) for base, _, names in os.walk(root) for n in names)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A reference collection with copies inside itself, and new uploads: copies of reference images,
    near variants at several distances, quarter turns, other sizes, copies among themselves."""
    root = tmp_path_factory.mktemp("gate")
    make_photo_set(root / "lake", n_unrelated=9, seed=21)  # its own copies: never reported
    new = root / "new"
    base = np.asarray(Image.open(root / "lake" / "img_01.png"))
    for shift in (1, 2, 4, 9):
        save(np.clip(base.astype(int) + shift, 0, 255).astype(np.uint8), new / f"plus{shift}.png")
    save(np.rot90(base, 1).copy(), new / "turned.png")
    save(base, new / "again_q92.jpg", quality=92)
    save(np.asarray(Image.fromarray(base).resize((48, 36))), new / "half.png")
    shutil.copy(root / "lake" / "img_04.png", new / "upload_of_img_04.png")
    shutil.copy(root / "lake" / "img_04.png", new / "second_upload_of_img_04.png")
    fresh = photo(999, 70, 70)
    save(fresh, new / "fresh.png")
    save(np.clip(fresh.astype(int) + 3, 0, 255).astype(np.uint8), new / "fresh_plus3.png")
    for k in range(4):
        save(photo(600 + k, 64, 48), new / "unrelated" / f"u{k}.png")
    return root


def brute_force(new: list[str], reference: list[str], px: int, threshold, rotate: bool, same_dim: bool):
    """Every new x new and new x reference pair within threshold: float64 sums, exact decisions."""
    paths = new + reference
    tensors = [reference_tensor(p, px).astype(np.float64) for p in paths]
    sizes = [tuple(sorted(Image.open(p).size)) for p in paths]
    d = 3 * px * px
    pairs = itertools.chain(
        itertools.combinations(range(len(new)), 2),
        itertools.product(range(len(new)), range(len(new), len(paths))),
    )
    found = {}
    for i, j in pairs:
        if same_dim and sizes[i] != sizes[j]:
            continue
        best = min(((tensors[i] - np.rot90(tensors[j], k)) ** 2).sum() for k in range(4 if rotate else 1))
        if Fraction(int(best), d) <= Fraction(str(threshold)):
            found[tuple(sorted((paths[i], paths[j])))] = best / d
    return found


def test_pairs_equal_brute_force_over_new_and_reference(lake, client, tmp_path):
    new, reference = _files(lake / "new"), _files(lake / "lake")
    dif = dupflow.build(
        lake / "new",
        reference=[lake / "lake"],
        show_progress=False,
        scheduler=client,
        catalog=str(tmp_path / "cat"),
    )
    inside_lake = 0
    checked = 0
    for threshold, rotate, same_dim, chunksize in itertools.product(
        [0, 5, 60, 600], [True, False], [True, False], [None, 7]
    ):
        found = dupflow.search(
            dif,
            similarity=threshold,
            rotate=rotate,
            same_dim=same_dim,
            chunksize=chunksize,
            show_progress=False,
        )
        expected = brute_force(new, reference, 50, threshold, rotate, same_dim)
        got = {(a, b): mse for a, b, mse in found.pairs}
        assert got.keys() == expected.keys(), (threshold, rotate, same_dim, chunksize)
        assert all(got[k] == v for k, v in expected.items())
        checked += len(expected)
        # the lake holds copies of its own images: never compared, so never reported
        everything = brute_force(reference, [], 50, threshold, rotate, same_dim)
        inside_lake += len(everything)
        assert not set(everything) & set(got)
    assert checked > 100 and inside_lake > 20  # both kinds of pairs really occur


def test_reference_images_are_kept_and_never_moved(lake, client, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(lake, work)
    reference = set(_files(work / "lake"))
    contents = {p: open(p, "rb").read() for p in reference}
    dif = dupflow.build(
        work / "new",
        reference=work / "lake",
        show_progress=False,
        scheduler=client,
        catalog=str(tmp_path / "c"),
    )
    found = dupflow.search(dif, similarity=60, same_dim=False, show_progress=False)
    assert not reference & set(found.lower_quality)
    lake_primaries = [p for p in found.result if p in reference]
    assert lake_primaries  # uploads found in the lake are grouped under the lake's image
    for matches in found.result.values():
        assert all(m not in reference for m, _ in matches)  # a group needs an ordinary image to clean
    upload = str(work / "new" / "upload_of_img_04.png")
    assert upload in found.lower_quality and upload not in found.result
    # groups among new images still form, with a new image as primary
    assert any(p.startswith(str(work / "new")) for p in found.result)
    stats = found.stats
    assert stats["dupflow"]["build"]["reference"] == {"inputs": [str(work / "lake")], "files": len(reference)}
    assert stats["process"]["search"]["files_searched"] == len(_files(work / "new"))
    assert stats["directory"] == [str(work / "new")]
    found.move_to(str(tmp_path / "quarantine"))
    assert {p: open(p, "rb").read() for p in reference} == contents
    assert len(os.listdir(tmp_path / "quarantine")) == len(found.lower_quality)


def test_in_folder_searches_each_input_against_the_reference(lake, client, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(lake / "new", work / "a")
    os.makedirs(work / "b")
    shutil.copy(lake / "lake" / "img_04.png", work / "b" / "also_img_04.png")
    dif = dupflow.build(
        work / "a",
        work / "b",
        in_folder=True,
        reference=[lake / "lake"],
        show_progress=False,
        scheduler=client,
        catalog=str(tmp_path / "c"),
    )
    found = dupflow.search(dif, show_progress=False)
    lake_img = str(lake / "lake" / "img_04.png")
    assert found.result[str(work / "b")] == {lake_img: [[str(work / "b" / "also_img_04.png"), 0.0]]}
    assert lake_img in found.result[str(work / "a")]


@pytest.mark.parametrize(
    "reference, error, words",
    [
        (123, TypeError, '"reference" parameter'),
        ([""], TypeError, '"reference" parameter'),
        ("NEW", ValueError, "given twice"),
        (["lake", "lake/"], ValueError, "given twice"),
    ],
)
def test_bad_reference_is_a_clear_error(lake, reference, error, words):
    reference = [str(lake / r) if r else r for r in reference] if isinstance(reference, list) else reference
    if reference == "NEW":
        reference = str(lake / "new")
    with pytest.raises(error, match=words):
        dupflow.build(lake / "new", reference=reference, show_progress=False)


def test_cli_reference_flag_repeatable(lake, tmp_path, capsys):
    work = tmp_path / "w"
    shutil.copytree(lake / "new", work / "new")
    os.makedirs(work / "other")
    save(photo(600, 64, 48), work / "other" / "u0_elsewhere.png")  # a copy of new/unrelated/u0.png
    code = cli.main(
        [
            str(work / "new"),
            "--reference",
            str(lake / "lake"),
            "--reference",
            str(work / "other"),
            "-p",
            "false",
            "-Z",
            str(tmp_path / "out"),
            "--catalog",
            str(tmp_path / "cat"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    (name,) = [n for n in os.listdir(tmp_path / "out") if n.endswith("_results.json")]
    result = json.load(open(tmp_path / "out" / name))
    assert result[str(work / "other" / "u0_elsewhere.png")] == [
        [str(work / "new" / "unrelated" / "u0.png"), 0.0]
    ]
    assert str(lake / "lake" / "img_04.png") in result
    assert os.path.exists(work / "other" / "u0_elsewhere.png")


def test_hygiene_gate_quarantines_uploads_already_in_the_lake(lake, tmp_path):
    shutil.copytree(lake, tmp_path / "data")
    reference = {p: open(p, "rb").read() for p in _files(tmp_path / "data" / "lake")}
    config = tmp_path / "job.toml"
    config.write_text(
        'sources = ["data/new"]\nreference = ["data/lake"]\nreports = "reports"\n'
        'action = "quarantine"\nquarantine = "q"\ncatalog = "cat"\n'
    )
    summary = run(config)
    assert summary.status == "done" and summary.reference == len(reference)
    # the two byte copies of a lake image go (similarity "duplicates"); the lake's images stay
    moved = ["second_upload_of_img_04.png", "upload_of_img_04.png"]
    assert sorted(os.listdir(tmp_path / "q")) == moved and summary.quarantined == 2
    assert {p: open(p, "rb").read() for p in reference} == reference

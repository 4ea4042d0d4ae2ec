"""move_to, delete and undo on real files: journaled, never overwriting, never losing the last copy."""

from __future__ import annotations

import builtins
import json
import os
import re
import uuid
from datetime import datetime

import numpy as np
import pytest
from imagegen import make_photo_set, photo, reference_tensor, save

import dupflow
from dupflow import actions
from dupflow.actions import Journal, Removal, delete_files

PROMPT = re.compile(  # difPy's question, with how many files and bytes it is about
    r"Are you sure you want to delete (all|\d+) lower quality matched image.*\? \n"
    r"! This cannot be undone\. \(y/n\)"
)


def tree(root) -> dict[str, bytes]:
    """Every file under root: {relative path: bytes}."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = handle.read()
    return out


def records(journal: str) -> list[dict]:
    with open(journal, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def copies(root, names, seed=1, w=96, h=72) -> list[str]:
    """The same photo saved under each name (PNG: identical pixels); returns the paths."""
    base = photo(seed, w, h)
    return [save(base, os.path.join(root, name)) for name in names]


def test_delete_silent_removes_exactly_lower_quality(run, tmp_path, capsys):
    root = tmp_path / "set"
    make_photo_set(root)
    before = tree(root)
    _, found = run(str(root))
    low = {os.path.relpath(p, root) for p in found.lower_quality}
    primaries = {os.path.relpath(p, root) for p in found.result}
    assert len(low) >= 6 and not low & primaries  # copies, re-saves and rotations were found
    found.delete(silent_del=True)

    after = tree(root)
    assert set(after) == set(before) - low  # exactly lower_quality is gone
    assert all(after[p] == before[p] for p in after)
    for key, matches in found.result.items():  # one copy of every group is kept
        assert os.path.relpath(key, root) in after
        assert all(os.path.relpath(m, root) not in after for m, _ in matches)
    assert f"Deleted {len(low)} file(s)" in capsys.readouterr().out
    recs = records(found.journal)
    assert recs[0]["action"] == "delete"
    kept = {r["source"]: r["kept"] for r in recs if r.get("op") == "plan"}
    assert {os.path.relpath(s, root) for s in kept} == low
    assert all(os.path.exists(k) for k in kept.values())
    assert sum(r.get("op") == "done" for r in recs) == len(low)
    assert dupflow.undo(found.journal) == {"restored": 0, "skipped": 0, "not_restorable": len(low)}


@pytest.mark.parametrize(
    "answer, deleted", [("n", False), ("", False), ("yes", False), ("y", True), ("Y", True)]
)
def test_delete_asks_first(run, tmp_path, monkeypatch, capsys, answer, deleted):
    d = tmp_path / "d"
    primary, low = copies(d, ["b.png", "a.png"])
    _, found = run(str(d))
    assert found.lower_quality == [low]
    prompts = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": prompts.append(prompt) or answer)
    found.delete()
    assert len(prompts) == 1 and PROMPT.fullmatch(prompts[0]), prompts
    assert os.path.exists(low) is not deleted
    assert os.path.exists(primary)
    out = capsys.readouterr().out
    assert ("Deletion canceled." in out) is not deleted


def test_nothing_to_delete_or_move_is_not_an_error(run, tmp_path, monkeypatch, capsys):
    d = tmp_path / "d"
    save(photo(1), d / "a.png")
    save(photo(2), d / "b.png")
    before = tree(d)
    _, found = run(str(d))
    assert found.result == {} and found.lower_quality == []
    monkeypatch.setattr(
        builtins, "input", lambda prompt="": pytest.fail("must not ask when nothing is to delete")
    )
    found.delete()
    found.delete(silent_del=True)
    assert "Deleted 0 file(s)" in capsys.readouterr().out
    found.move_to(str(tmp_path / "q"))
    assert found.lower_quality == [] and os.listdir(tmp_path / "q") == []
    assert tree(d) == before


def test_invalid_parameters_use_difpy_messages(run, tmp_path):
    d = tmp_path / "d"
    primary, low = copies(d, ["b.png", "a.png"])
    (tmp_path / "file.txt").write_text("x")
    _, found = run(str(d))
    for bad in (5, None, b"dest", ["dest"]):
        with pytest.raises(
            TypeError, match=re.escape('Invalid value for "move_to" parameter: must be of type STR')
        ):
            found.move_to(bad)
    for bad in ("yes", 1, None):
        with pytest.raises(
            TypeError, match=re.escape('Invalid value for "silent_del" parameter: must be of type BOOL.')
        ):
            found.delete(silent_del=bad)
    target = str(tmp_path / "file.txt")
    with pytest.raises(
        ValueError, match=re.escape(f'Invalid value for "move_to" parameter: "{target}" is not a directory.')
    ):
        found.move_to(target)
    below = os.path.join(target, "sub")
    with pytest.raises(
        ValueError, match=re.escape(f'Invalid value for "move_to" parameter: "{below}" does not exist.')
    ):
        found.move_to(below)
    assert os.path.exists(low) and os.path.exists(primary)
    assert (tmp_path / "file.txt").read_text() == "x"
    assert found.lower_quality == [low]
    found.move_to(tmp_path / "as_pathlike")  # os.PathLike is accepted
    assert os.listdir(tmp_path / "as_pathlike") == ["a.png"]


@pytest.mark.parametrize("in_folder", [False, True])
def test_overlapping_inputs_never_delete_the_only_copy(run, tmp_path, in_folder):
    d = tmp_path / "d"
    only = save(photo(1), d / "a.png")
    save(photo(2), d / "b.png")
    _, found = run(str(d), only, in_folder=in_folder)  # the folder and a file inside it
    assert found.result == {} and found.lower_quality == []
    assert found.stats["total_files"] == 2
    found.delete(silent_del=True)
    assert os.path.exists(only)

    copy = copies(d, ["a_copy.png"], seed=1)[0]  # a real duplicate
    _, found = run(str(d), only, in_folder=in_folder)
    # in_folder: a.png belongs to its own input (the most specific), so it is compared with nothing
    assert len(found.lower_quality) == (0 if in_folder else 1)
    found.delete(silent_del=True)
    assert os.path.exists(only) and os.path.exists(copy) == in_folder


def shifted(base, shift: int):
    """The image with every value raised by `shift` (no clipping for bases within 20..230)."""
    return (base.astype(int) + shift).astype(np.uint8)


def thumbnail_mse(a: str, b: str, px: int = 50) -> float:
    """The true MSE of two files' thumbnails, computed here from difPy's recipe (not by dupflow)."""
    ta, tb = (reference_tensor(p, px).astype(np.int64) for p in (a, b))
    return float(((ta - tb) ** 2).sum()) / ta.size


def test_overlapping_in_folder_inputs_give_each_file_to_the_most_specific_one(run, tmp_path):
    """d and d/sub with in_folder: sub's files belong to sub only, so no file is a primary in one group and
    a match in another, each match is counted once, and deleting lower_quality keeps a primary in reach."""
    d = tmp_path / "d"
    base = np.clip(photo(3), 20, 230)
    y = save(base, d / "y.png")
    x2 = save(shifted(base, 2), d / "sub" / "x2.png")  # MSE 4 from y and from x4; x4 is 16 from y
    x4 = save(shifted(base, 4), d / "sub" / "x4.png")
    for age, path in enumerate([y, x2, x4]):  # y oldest: a ranking by age would put it first
        os.utime(path, (1_600_000_000 + age, 1_600_000_000 + age))
    assert thumbnail_mse(y, x2) <= 5 < thumbnail_mse(y, x4) and thumbnail_mse(x2, x4) <= 5

    _, found = run(str(d), str(d / "sub"), in_folder=True, search={"similarity": 5})
    assert set(found.result) == {str(d / "sub")}  # y has no match within d alone
    groups = found.result[str(d / "sub")]
    primaries = set(groups)
    matches = [m for entries in groups.values() for m, _ in entries]
    assert sorted(primaries | set(matches)) == [x2, x4]
    assert not primaries & set(found.lower_quality)
    assert found.lower_quality == sorted(set(matches)) == sorted(matches)
    counted = found.stats["process"]["search"]["matches_found"]
    assert counted["duplicates"] + counted["similar"] == len(found.lower_quality) == 1

    removed = list(found.lower_quality)
    mse = {(a, b): thumbnail_mse(a, b) for a in (y, x2, x4) for b in removed}  # from pixels, before deleting
    found.delete(silent_del=True)
    kept = [p for p in (y, x2, x4) if os.path.exists(p)]
    assert all(not os.path.exists(p) for p in removed) and len(kept) == 2
    for path in removed:
        assert any(mse[primary, path] <= 5 for primary in primaries if primary in kept)


def test_a_link_to_the_primary_is_never_removed(run, tmp_path):
    d = tmp_path / "d"
    real = save(photo(1), d / "a.png")
    os.symlink(real, d / "b_link.png")  # the same file under two names
    _, found = run(str(d))
    assert found.lower_quality and len(found.result) == 1
    found.delete(silent_del=True)
    assert os.path.isfile(real) and os.path.islink(d / "b_link.png")
    assert any(r.get("reason", "").startswith("it is the same file") for r in records(found.journal))


def test_matches_of_a_vanished_primary_are_kept(run, tmp_path):
    d = tmp_path / "d"
    primary, low_a, low_b = copies(d, ["z.png", "a.png", "b.png"])
    _, found = run(str(d))
    assert list(found.result) == [primary]
    os.remove(primary)
    found.delete(silent_del=True)
    assert os.path.exists(low_a) and os.path.exists(low_b)
    reasons = {r["reason"] for r in records(found.journal) if r.get("op") == "skip"}
    assert reasons == {"its primary no longer exists"}
    found.move_to(str(tmp_path / "q"))
    assert os.path.exists(low_a) and os.path.exists(low_b) and os.listdir(tmp_path / "q") == []


def test_changed_primary_guard(tmp_path):
    """A Removal that carries its primary's scanned size and stamp is kept when the primary changed."""
    primary, low = copies(tmp_path / "d", ["z.png", "a.png"])
    st_p, st_l = os.stat(primary), os.stat(low)

    def removal(primary_stamp):
        return Removal(
            low,
            os.path.abspath(low),
            st_l.st_size,
            str(st_l.st_mtime_ns),
            os.path.abspath(primary),
            st_p.st_size,
            primary_stamp,
        )

    roots = ["file://" + str(tmp_path / "d")]
    count, journal = delete_files([removal("1")], roots, {os.path.abspath(primary)}, {}, str(tmp_path / "j"))
    assert count == 0 and os.path.exists(low)
    assert [r["reason"] for r in records(journal) if r.get("op") == "skip"] == [
        "its primary changed since the scan"
    ]
    count, _ = delete_files(
        [removal(str(st_p.st_mtime_ns))], roots, {os.path.abspath(primary)}, {}, str(tmp_path / "j")
    )
    assert count == 1 and not os.path.exists(low) and os.path.exists(primary)


def test_matches_of_a_rewritten_primary_are_kept(run, tmp_path):
    """Through the public API: a primary overwritten after the scan no longer vouches for its matches."""
    primary, low = copies(tmp_path / "d", ["z.png", "a.png"])
    _, found = run(str(tmp_path / "d"))
    assert found.lower_quality == [low]
    with open(primary, "ab") as handle:
        handle.write(b"appended after the scan")
    found.delete(silent_del=True)
    assert os.path.exists(low)


def test_files_outside_the_roots_are_never_touched(tmp_path):
    primary, low = copies(tmp_path, ["in/z.png", "out/a.png"])
    st = os.stat(low)
    sp = os.stat(primary)
    item = Removal(
        low,
        os.path.abspath(low),
        st.st_size,
        str(st.st_mtime_ns),
        os.path.abspath(primary),
        sp.st_size,
        str(sp.st_mtime_ns),
    )
    count, _ = delete_files([item], ["file://" + str(tmp_path / "in")], set(), {}, str(tmp_path / "j"))
    assert count == 0 and os.path.exists(low)


def test_undo_never_overwrites_and_rejects_other_files(run, tmp_path):
    d, dest = tmp_path / "d", tmp_path / "dest"
    primary, low = copies(d, ["z.png", "a.png"])
    _, found = run(str(d))
    found.move_to(str(dest))
    with open(low, "wb") as handle:  # something new took the old place
        handle.write(b"new")
    assert dupflow.undo(found.journal) == {"restored": 0, "skipped": 1, "not_restorable": 0}
    assert open(low, "rb").read() == b"new" and os.listdir(dest) == ["a.png"]

    for content in (b"not a journal\n", b"\xff\xfe\x00garbage", b"", b'{"journal": "other"}\n'):
        path = tmp_path / f"bad_{uuid.uuid4().hex}.jsonl"
        path.write_bytes(content)
        with pytest.raises(ValueError, match="is not a dupflow journal"):
            dupflow.undo(str(path))


def test_undo_restores_a_move_cut_short_before_it_was_recorded(run, tmp_path):
    d, dest = tmp_path / "d", tmp_path / "dest"
    _, low_a, low_b = copies(d, ["z.png", "a.png", "b.png"])
    originals = tree(d)
    _, found = run(str(d))
    found.move_to(str(dest))
    recs = records(found.journal)
    dropped = next(r for r in recs if r.get("op") == "done")
    with open(found.journal, "w", encoding="utf-8") as handle:  # as if the run died right after that move
        handle.writelines(json.dumps(r) + "\n" for r in recs if r is not dropped)
    assert dupflow.undo(found.journal)["restored"] == 2
    assert tree(d) == originals and os.listdir(dest) == []


def test_journal_names_are_never_reused(tmp_path, monkeypatch):
    fixed = datetime(2024, 1, 2, 3, 4, 5, 678901)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    monkeypatch.setattr(actions, "datetime", Frozen)
    first, second = Journal("move", str(tmp_path)), Journal("move", str(tmp_path))
    first.close()
    second.close()
    assert first.path != second.path
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in (first.path, second.path))
    assert records(first.path)[0]["journal"] == "dupflow"

"""Journals as users meet them: the README's Python snippet, run top to bottom, ends with the files back."""

from __future__ import annotations

import os
import re

from imagegen import photo, save


def readme_snippet() -> str:
    """The first python block of the README's "Python API" section."""
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def tree(root) -> dict[str, bytes]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def test_readme_snippet_moves_then_undo_restores(tmp_path, monkeypatch):
    p1, p2 = photo(11, 80, 60), photo(12, 80, 60)
    save(p1, tmp_path / "photos" / "a.png")
    save(p1, tmp_path / "photos" / "a_copy.png")
    save(p1, tmp_path / "more_photos" / "a.png")
    save(p2, tmp_path / "photos" / "b.png")
    save(p2 // 2 + 1, tmp_path / "more_photos" / "other.png")
    before = {
        **tree(tmp_path / "photos"),
        **{"more/" + k: v for k, v in tree(tmp_path / "more_photos").items()},
    }
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_snippet(), "README.md", "exec"), scope)  # noqa: S102 - the documented snippet
    found = scope["found"]
    # move_to wrote one journal; delete found nothing left (all moved) and wrote none
    assert len(found.journals) == 1 and found.journal == found.journals[0]
    assert found.journal.endswith("_move.jsonl")
    after = {
        **tree(tmp_path / "photos"),
        **{"more/" + k: v for k, v in tree(tmp_path / "more_photos").items()},
    }
    assert after == before  # the snippet's last step, dupflow.undo(found.journal), put both copies back
    assert os.listdir(tmp_path / "quarantine") == []


def test_each_action_keeps_its_own_journal(run, tmp_path):
    import dupflow

    p1 = photo(13, 80, 60)
    for name in ("x.png", "x_1.png", "x_2.png"):
        save(p1, tmp_path / "in" / name)
    dif, found = run(str(tmp_path / "in"))
    found.move_to(str(tmp_path / "q"))
    moved = found.journal
    found.delete(silent_del=True)  # lower_quality now lists the moved files: nothing here to delete
    assert found.journals == [moved] and found.journal == moved
    again = dupflow.search(dif, show_progress=False)
    assert dupflow.undo(moved)["restored"] == 2
    again.delete(silent_del=True)
    assert len(again.journals) == 1 and again.journal.endswith("_delete.jsonl")
    assert sorted(os.listdir(tmp_path / "in")) == ["x.png"]
    again.delete(silent_del=True)  # the same files again: refused (gone), journaled apart
    assert len(again.journals) == 2 and len(set(again.journals)) == 2
    assert found.journals == [moved]  # the first search's journal list is its own

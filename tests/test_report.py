"""The report's data and HTML without a browser: thumbnails through fsspec, journals, safe embedding."""

from __future__ import annotations

import io
import json
import re
import subprocess

import fsspec
import pytest
from imagegen import photo, save
from PIL import Image
from test_cli import COMMAND

import dupflow
from dupflow.actions import undo
from dupflow.report import collect, journal_events, render_html, write_report
from dupflow.thumbnails import THUMB_PX, make_thumbnail, thumbnails


def test_thumbnail_keeps_the_aspect_and_the_original_size():
    buffer = io.BytesIO()
    Image.fromarray(photo(1, 640, 320)).save(buffer, format="PNG")
    uri, width, height = make_thumbnail(buffer.getvalue())
    assert (width, height) == (640, 320)
    assert uri.startswith("data:image/jpeg;base64,")
    shown = Image.open(io.BytesIO(__import__("base64").b64decode(uri.split(",", 1)[1])))
    assert shown.size == (THUMB_PX, THUMB_PX // 2)


def test_thumbnails_of_objects_and_of_broken_files(tmp_path):
    """memory:// objects are read through fsspec on the (threaded) cluster; a broken file gets its error."""
    fs = fsspec.filesystem("memory")
    buffer = io.BytesIO()
    Image.fromarray(photo(2, 120, 90)).save(buffer, format="PNG")
    fs.pipe("/thumbs/ok.png", buffer.getvalue())
    fs.pipe("/thumbs/bad.png", b"not an image")
    try:
        got = thumbnails(["memory://thumbs/ok.png", "memory://thumbs/bad.png", "memory://thumbs/gone.png"])
    finally:
        fs.rm("/thumbs", recursive=True)
    ok, bad, gone = (got[f"memory://thumbs/{n}.png"] for n in ("ok", "bad", "gone"))
    assert ok.uri and (ok.width, ok.height, ok.bytes) == (120, 90, len(buffer.getvalue())) and ok.mtime > 0
    assert bad.uri is None and "identified" in bad.error and bad.bytes == 12
    assert gone.uri is None and gone.error


def test_report_data_follows_the_search_and_its_journals(run, tmp_path, monkeypatch):
    p1, p2 = photo(3, 80, 60), photo(4, 80, 60)
    save(p1, tmp_path / "in" / "a.png")
    save(p1, tmp_path / "in" / "a_copy.png")
    save(p2, tmp_path / "in" / "b.png")
    save(p2, tmp_path / "in" / "b_copy.png")
    save(p2, tmp_path / "in" / "b_copy2.png")
    (tmp_path / "in" / "x.png").write_bytes(b"broken")
    dif, found = run(str(tmp_path / "in"))
    size = (tmp_path / "in" / "a_copy.png").stat().st_size + 2 * (
        tmp_path / "in" / "b_copy.png"
    ).stat().st_size
    before = collect(found.result, found.stats)
    assert before["summary"]["groups"] == 2 and before["summary"]["matches"] == 3
    assert before["summary"]["bytes_reclaimable"] == size and before["summary"]["invalid"] == 1
    assert before["invalid"] == [[str(tmp_path / "in" / "x.png"), dupflow.decode.UNIDENTIFIED]]
    assert all(f["i"] >= 0 and "s" not in f for f in before["files"])
    found.move_to(str(tmp_path / "q"))
    moved = collect(found.result, found.stats, found.journals)
    status = {f["p"].rsplit("/", 1)[-1]: f.get("s") for f in moved["files"]}
    assert status == {
        "a.png": None,
        "a_copy.png": "moved",
        "b.png": None,
        "b_copy.png": "moved",
        "b_copy2.png": "moved",
    }
    assert all(f["i"] >= 0 for f in moved["files"])  # thumbnails from the quarantine
    assert moved["summary"]["bytes_reclaimable"] == size and moved["summary"]["acted"] == 3
    undo(found.journal)
    restored = collect(found.result, found.stats, found.journals)
    assert {f.get("s") for f in restored["files"]} == {None, "restored"}
    events = journal_events(found.journals)
    assert {e["status"] for e in events.values()} == {"moved"}
    # deleted: no thumbnail any more, the size from the journal, the summary unchanged
    again = dupflow.search(dif, show_progress=False)
    again.delete(silent_del=True)
    gone = collect(again.result, again.stats, again.journals)
    deleted = [f for f in gone["files"] if f.get("s") == "deleted"]
    assert len(deleted) == 3 and all(f["i"] == -1 and f["b"] > 0 and "e" not in f for f in deleted)
    assert gone["summary"]["bytes_reclaimable"] == size and gone["summary"]["acted"] == 3
    with pytest.raises(ValueError, match="is not a dupflow journal"):
        journal_events([str(tmp_path / "in" / "x.png")])


def test_html_is_self_contained_and_safe_with_odd_names(tmp_path):
    """A file named with </script> cannot end the data block; no URL outside the file is referenced."""
    save(photo(5, 60, 40), tmp_path / "odd" / "x</script><b>.png")  # a folder "x<", a file "script><b>.png"
    save(photo(5, 60, 40), tmp_path / "odd" / "x & copy.png")
    found_dif = dupflow.build(str(tmp_path / "odd"), show_progress=False, catalog=str(tmp_path / "cat"))
    with found_dif:
        found = dupflow.search(found_dif, show_progress=False)
    path = write_report(str(tmp_path / "r.html"), collect(found.result, found.stats))
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert text.count("</script>") == 2  # the data block's and the code's own
    data = json.loads(
        re.search(r'id="dupflow-data" type="application/json">(.*?)</script>', text, re.S).group(1)
    )
    root = str(tmp_path / "odd")
    assert sorted(f["p"] for f in data["files"]) == [f"{root}/x & copy.png", f"{root}/x</script><b>.png"]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "default-src 'none'" in text  # the browser may not fetch anything
    assert render_html(data).count('class="card"') == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["empty"], 'no dupflow results (dupflow_<timestamp>_results.json) in "empty"'),
        (
            ["notes.json"],
            '"notes.json" is neither an output folder nor a dupflow_<timestamp>_results.json file',
        ),
        (["empty", "-o", "empty"], '"empty" is a folder; name an HTML file'),
        (["empty", "--journal", "missing.jsonl"], 'journal "missing.jsonl" does not exist'),
    ],
)
def test_report_command_usage_errors(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.json").write_text("{}")
    done = subprocess.run(
        [*COMMAND, "report", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout == ""
    assert (
        done.stderr.startswith("dupflow: error: ") and message in done.stderr and done.stderr.count("\n") == 1
    )


def test_huge_reports_get_smaller_thumbnails(tmp_path, monkeypatch):
    import base64

    from dupflow import report

    a = save(photo(6, 640, 480), tmp_path / "a.png")
    b = save(photo(6, 640, 480), tmp_path / "b.png")
    result = {a: [[b, 0.0]]}

    def sides(data):
        return {Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size for uri in data["thumbs"]}

    assert sides(collect(result, {})) == {(THUMB_PX, THUMB_PX * 3 // 4)}
    monkeypatch.setattr(report, "LARGE_REPORT_FILES", 1)  # two files: "huge"
    assert sides(collect(result, {})) == {(report.SMALL_THUMB_PX, report.SMALL_THUMB_PX * 3 // 4)}

"""The HTML report in a real browser (Debian's chromium, driven by Playwright): what a person sees.

A real search (the dupflow command, with a move) writes the report; chromium opens the file with no
network; the test reads the page as a person would: the summary numbers, the thumbnails, the kept image
of each group, what the filters and the keyboard do, and that nothing logs an error. Screenshots are kept
in the test's tmp folder (desktop and phone widths).
"""

from __future__ import annotations

import base64
import io
import os
import random
import shutil
import subprocess
import time

import numpy as np
import pytest
from imagegen import photo, save
from PIL import Image
from test_cli import COMMAND, QUICK, dupflow_cmd, outputs

from dupflow.outputs import human_bytes

CHROMIUM = (
    shutil.which("chromium") or "/usr/bin/chromium"
)  # Debian's (apt-get install chromium); .ci/run installs it


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


class Page:
    """A page plus every console error and uncaught exception it produced."""

    def __init__(self, browser, path, width=1280, height=900):
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(f"file://{path}")
        self.page.wait_for_selector("html[data-ready='1']")

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def shown_groups(self) -> list[dict]:
        """Each group on screen: its kept path and match paths with their MSE badges."""
        return self.page.eval_on_selector_all(
            "section.group",
            """els => els.map(g => ({
                kept: [...g.querySelectorAll('figure.kept .file')].map(e => e.textContent),
                matches: [...g.querySelectorAll('figure:not(.kept)')].map(f => [
                    f.querySelector('.file').textContent, f.querySelector('.badge.mse').textContent]),
                status: [...g.querySelectorAll('.badge.moved, .badge.deleted')].map(e => e.textContent),
                dest: [...g.querySelectorAll('.dest')].map(e => e.textContent),
            }))""",
        )

    def close(self):
        self.page.close()


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Two folders with exact copies, near copies (MSE 1..4), a quarter turn and an unreadable file;
    `dupflow -s 5 -mv quarantine --report` then moves the lower-quality files and writes the report."""
    root = tmp_path_factory.mktemp("report")
    t0 = 1_700_000_000
    for k in range(6):
        base = photo(100 + k, 160, 120)
        save(base, root / "a" / f"img{k}.png")
        os.utime(root / "a" / f"img{k}.png", (t0, t0))
        if k % 2 == 0:
            save(base, root / "b" / f"img{k}_copy.png")
        if k % 3 == 0:
            shifted = np.clip(base.astype(int) + 1 + k // 3, 0, 255).astype(np.uint8)
            save(shifted, root / "b" / f"img{k}_brighter.png")
        if k == 5:
            save(np.rot90(base).copy(), root / "b" / "img5_turned.jpg", quality=95)
    save(photo(200, 100, 80), root / "a" / "unique.png")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    sizes = {f"{d}/{n}": os.path.getsize(root / d / n) for d in ("a", "b") for n in os.listdir(root / d)}
    done = dupflow_cmd(
        root, "a", "b", "-s", "5", "-Z", "out", "-mv", "quarantine", "--report", "report.html", *QUICK
    )
    assert done.returncode == 0, done.stderr
    return root, outputs(root / "out"), sizes


def test_report_shows_the_search(browser, searched):
    root, got, sizes = searched
    result, stats, lower = got["results"], got["stats"], got["lower_quality"]
    page = Page(browser, root / "report.html")
    # the summary numbers are the result's
    value = lambda key: page.page.get_attribute(f"#sum-{key}", "data-value")  # noqa: E731
    assert int(value("files")) == stats["process"]["search"]["files_searched"] == 13
    assert int(value("invalid")) == stats["invalid_files"]["count"] == 1
    assert int(value("groups")) == len(result)
    assert int(value("matches")) == sum(len(m) for m in result.values()) == len(lower)
    assert int(value("bytes")) == sum(sizes[p] for p in lower)
    assert "reclaimable" in page.text(".cards").lower() and page.text("#sum-groups") == str(len(result))
    assert page.text("#sum-bytes") == human_bytes(sum(sizes[p] for p in lower))
    # invalid files, collapsed until opened, with their reasons
    assert not page.page.is_visible("ul.invalid")
    page.page.click("#invalid summary")
    assert "a/broken.jpg" in page.text("ul.invalid") and "identified" in page.text("ul.invalid")
    # every group with its kept image (the result's primary) and each match with its MSE
    shown = page.shown_groups()
    assert sorted(g["kept"][0] for g in shown) == sorted(result)
    for group in shown:
        expected = {m: mse for m, mse in result[group["kept"][0]]}
        assert {path for path, _ in group["matches"]} == set(expected)
        for path, badge in group["matches"]:
            assert badge == "MSE " + (
                str(int(expected[path])) if expected[path] == int(expected[path]) else f"{expected[path]:.3f}"
            )
        assert len(group["status"]) == len(group["matches"])  # all moved, from the journal
        assert group["status"] == ["moved"] * len(group["matches"])
        assert all(d.startswith("→ ") and "/quarantine/" in d for d in group["dest"])
    # thumbnails have loaded (moved files are shown from the quarantine), each with alt text
    images = page.page.eval_on_selector_all(
        "section.group img", "els => els.map(e => [e.complete, e.naturalWidth, e.alt])"
    )
    assert len(images) == len(result) + len(lower)
    assert all(complete and width > 0 and alt for complete, width, alt in images)
    assert all(alt.startswith(("Kept image: ", "Match (MSE ")) for _, _, alt in images)
    # no network: a self-contained file
    assert all(url.startswith(("file://", "data:")) for url in page.requests), page.requests
    page.page.screenshot(path=str(root / "report-desktop.png"), full_page=True)
    assert not page.errors, page.errors
    page.close()


def test_filters_sort_and_keyboard(browser, searched):
    root, got, _ = searched
    result = got["results"]
    page = Page(browser, root / "report.html")
    total = len(result)
    assert page.text("#shown") == f"Showing {total} of {total} groups"
    # MSE from 0.5: only groups with a near (not exact) match stay, and only those matches are shown
    page.page.fill("#mse-min", "0.5")
    near = {k: [m for m, mse in v if mse >= 0.5] for k, v in result.items()}
    near = {k: v for k, v in near.items() if v}
    assert 0 < len(near) < total
    assert page.text("#shown") == f"Showing {len(near)} of {total} groups"
    shown = page.shown_groups()
    assert {g["kept"][0]: sorted(p for p, _ in g["matches"]) for g in shown} == {
        k: sorted(v) for k, v in near.items()
    }
    # MSE to 0: exact duplicates only
    page.page.fill("#mse-min", "")
    page.page.fill("#mse-max", "0")
    exact = {k for k, v in result.items() if any(mse == 0 for _, mse in v)}
    assert {g["kept"][0] for g in page.shown_groups()} == exact
    page.page.fill("#mse-max", "")
    # folder b: the groups with a file in b (every group here); folder a holds every kept image
    page.page.select_option("#folder", "b")
    in_b = {k for k, v in result.items() if any(m.startswith("b/") for m, _ in v) or k.startswith("b/")}
    assert {g["kept"][0] for g in page.shown_groups()} == in_b
    page.page.select_option("#folder", "")
    # sort by group size: the largest group first
    page.page.select_option("#sort", "size")
    sizes = [len(g["matches"]) for g in page.shown_groups()]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == max(len(v) for v in result.values())
    # keyboard: j moves to the first group, j again to the second, k back
    page.page.locator("body").click(position={"x": 5, "y": 5})
    page.page.keyboard.press("j")
    first = page.page.evaluate("document.activeElement.dataset.group")
    page.page.keyboard.press("j")
    second = page.page.evaluate("document.activeElement.dataset.group")
    page.page.keyboard.press("k")
    assert first and second and first != second
    assert page.page.evaluate("document.activeElement.dataset.group") == first
    page.page.keyboard.press("/")
    assert page.page.evaluate("document.activeElement.id") == "mse-min"
    assert not page.errors, page.errors
    page.close()


def test_report_on_a_phone(browser, searched):
    root, _, _ = searched
    page = Page(browser, root / "report.html", width=390, height=844)
    overflow = page.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0  # nothing wider than the screen
    columns = page.page.evaluate(
        "getComputedStyle(document.querySelector('.grid')).gridTemplateColumns.split(' ').length"
    )
    assert columns == 2
    page.page.screenshot(path=str(root / "report-phone.png"), full_page=False)
    assert not page.errors, page.errors
    page.close()


def test_report_command_from_the_output_folder(browser, searched, tmp_path):
    """`dupflow report OUT -o FILE` finds the latest run and its journals: the same numbers and statuses."""
    root, got, _ = searched
    done = subprocess.run(
        [*COMMAND, "report", "out", "-o", str(tmp_path / "again.html"), "-p", "false"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(got['results'])} groups" in done.stdout
    page = Page(browser, tmp_path / "again.html")
    assert int(page.page.get_attribute("#sum-groups", "data-value")) == len(got["results"])
    assert all(len(g["status"]) == len(g["matches"]) for g in page.shown_groups())
    assert not page.errors
    page.close()


def _synthetic_report(groups: int, seed: int = 0) -> dict:
    """collect()'s data shape: `groups` groups of 2-4 files, each file with its own small JPEG thumbnail."""
    rng = random.Random(seed)
    files, thumbs, rows = [], [], []
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for g in range(groups):
        members = []
        for m in range(rng.randint(2, 4)):
            pixels[g % 48, m % 64] = (g * 7 + m) % 256  # a distinct picture for every file
            out = io.BytesIO()
            Image.fromarray(pixels).save(out, format="JPEG", quality=60)
            thumbs.append("data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode())
            folder = f"photos/{g % 37:02d}"
            files.append(
                {
                    "p": f"{folder}/img_{g}_{m}.jpg",
                    "f": folder,
                    "w": 4000,
                    "h": 3000,
                    "b": rng.randint(100_000, 5_000_000),
                    "t": 1.7e9 + g,
                    "i": len(thumbs) - 1,
                }
            )
            members.append(len(files) - 1)
        rows.append({"k": members[0], "m": [[i, round(rng.random() * 5, 3)] for i in members[1:]]})
    matches = sum(len(r["m"]) for r in rows)
    return {
        "version": "test",
        "generated": "2026-01-01T00:00:00",
        "summary": {
            "directories": ["photos"],
            "total_files": len(files),
            "files_searched": len(files),
            "invalid": 0,
            "groups": groups,
            "matches": matches,
            "duplicates": 0,
            "similar": matches,
            "bytes_reclaimable": sum(files[i]["b"] for r in rows for i, _ in r["m"]),
            "acted": 0,
        },
        "parameters": {"build": {}, "search": {}},
        "invalid": [],
        "files": files,
        "groups": rows,
        "thumbs": thumbs,
    }


@pytest.mark.slow
def test_ten_thousand_groups_open_fast(browser, tmp_path):
    from dupflow.report import write_report

    data = _synthetic_report(10_000)
    path = write_report(str(tmp_path / "big.html"), data)
    megabytes = os.path.getsize(path) / 2**20
    start = time.perf_counter()
    page = Page(browser, path)
    opened = time.perf_counter() - start
    assert page.page.locator("section.group").count() == 50  # one page rendered, not 10,000 groups
    assert page.text("#shown") == "Showing 10,000 of 10,000 groups"
    start = time.perf_counter()
    page.page.fill("#mse-min", "2.5")
    page.page.wait_for_function(
        "document.getElementById('shown').textContent !== 'Showing 10,000 of 10,000 groups'"
    )
    filtered = time.perf_counter() - start
    start = time.perf_counter()
    page.page.click("#next")
    page.page.wait_for_selector("#page:has-text('Page 2 of')")
    paged = time.perf_counter() - start
    widths = page.page.eval_on_selector_all("section.group img", "els => els.map(e => e.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
    assert not page.errors, page.errors
    page.close()
    print(
        f"\n10,000-group report: {megabytes:.1f} MiB, {len(data['files'])} thumbnails; "
        f"opened in {opened:.2f} s, filter {filtered * 1000:.0f} ms, next page {paged * 1000:.0f} ms"
    )
    assert opened < 30  # generous: a 2-core CI machine shared with other jobs

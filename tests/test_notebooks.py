"""The notebooks in notebooks/ run top to bottom (nbclient, a real kernel); the S3 one against moto's server.

Parameters are injected as papermill does: a cell after the one tagged "parameters". The committed copies
must carry their outputs (they were executed before being stored).
"""

from __future__ import annotations

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "notebooks")


def execute(name: str, parameters: dict | None = None, cwd: str | None = None) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel and return it with its outputs (errors raise CellExecutionError)."""
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    nb.cells = [
        c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])
    ]  # an earlier run's
    if parameters:
        at = next(k for k, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
        injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
        injected.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(at + 1, injected)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": cwd or NOTEBOOKS}}
    ).execute()
    return nb


def texts(nb: nbformat.NotebookNode) -> list[str]:
    """Every text output (streams and plain-text results), cell by cell."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            if output.output_type == "stream":
                out.append(output.text)
            elif "text/plain" in output.get("data", {}):
                out.append(output["data"]["text/plain"])
    return out


def images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def check_run(nb: nbformat.NotebookNode) -> str:
    """What both notebooks must show: groups, a grid and a histogram, a report, a move and its undo."""
    shown = "\n".join(texts(nb))
    assert "IProgress" not in shown and "\r" not in shown  # progress without widgets: whole lines only
    groups = int(re.search(r"(\d+) groups, (\d+) lower-quality", shown).group(1))
    lower = int(re.search(r"(\d+) groups, (\d+) lower-quality", shown).group(2))
    assert (groups, lower) == (4, 5)  # planted: IMG_0001 twice, 0002 turned, 0003 as JPEG, 0004 brighter
    assert images(nb) == 2  # the thumbnail grid and the histogram
    assert re.search(r"report\.html \d+ KiB", shown)
    assert "{'restored': 5, 'skipped': 0, 'not_restorable': 0}" in shown
    return shown


@pytest.mark.slow
def test_quickstart_runs(tmp_path):
    nb = execute("quickstart.ipynb", cwd=str(tmp_path))
    shown = check_run(nb)
    assert "'IMG_0001 copy.png', 'IMG_0002_rotated.png'" in shown  # quarantined, then back: [] after undo
    assert (
        "[] ['IMG_0001 copy.png', 'IMG_0002_rotated.png', 'IMG_0003.jpg', 'IMG_0004_brighter.png']" in shown
    )


@pytest.mark.slow
def test_bucket_audit_runs_against_s3(endpoint, tmp_path):
    nb = execute(
        "bucket_audit.ipynb",
        {"endpoint_url": endpoint, "bucket": "audit-test", "prefix": "raw"},
        str(tmp_path),
    )
    shown = check_run(nb)
    assert "13 objects searched" in shown
    assert "[] 13" in shown  # quarantine empty again, all 13 objects back under the prefix


@pytest.mark.parametrize("name", ["quickstart.ipynb", "bucket_audit.ipynb"])
def test_committed_notebooks_carry_their_outputs(name):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "execute the notebook before committing it"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    check_run(nb)

"""Progress bars that count images per stage, with rates, and behave wherever dupflow runs.

In a terminal: a tqdm bar on stderr. When stderr is not a terminal (a pipe, a log file, cron): nothing,
so logs carry no carriage returns. In a notebook: the widget bar when ipywidgets is installed, otherwise
one plain line per stage when it ends (no IProgress warning, no carriage-return spill).
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["LineBar", "progress_bar", "task_weights"]


def task_weights(tasks: int, images: int | None) -> list[int]:
    """How many images each finished task advances the bar by: `images` spread evenly (sum exact)."""
    if images is None:
        return [1] * tasks
    base, extra = divmod(images, tasks)
    return [base + (1 if k < extra else 0) for k in range(tasks)]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is not a terminal but people are watching)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class LineBar:
    """A bar for notebooks without widgets: silent while it runs, one line with the rate when it closes."""

    def __init__(self, total: int, desc: str, unit: str, stream: Any = None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.stream = stream if stream is not None else sys.stdout
        self._start = time.perf_counter()
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        seconds = max(time.perf_counter() - self._start, 1e-9)
        rate = self.n / seconds
        print(
            f"{self.desc}: {self.n:,} {self.unit} in {seconds:.1f} s ({rate:,.0f} {self.unit}/s)",
            file=self.stream,
        )

    def __enter__(self) -> LineBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int, desc: str, show: bool, unit: str = "images") -> Any:
    """A context-managed bar with `update(n)`: tqdm in a terminal, widget or line in a notebook, else none.

    The rate reads "<n> images/s"; `desc` names the stage ("dupflow decoding").
    """
    from tqdm import tqdm

    if show and in_notebook():
        if _has_widgets():
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm(total=total, desc=desc, unit=f" {unit}")
        return LineBar(total, desc, unit)
    terminal = show and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=f" {unit}",
        disable=not terminal,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )

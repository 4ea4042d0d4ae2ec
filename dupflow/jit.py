"""numba, on first use only: dupflow's compiled loops cost nothing to import, and where numba cannot run
they are None and callers keep Pillow's path.

The loops are plain Python functions (numpy in, numpy out) compiled without the GIL and cached on disk
beside the package; where that folder and the user's cache are read-only they compile in memory instead,
once per process.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

__all__ = ["compiled"]

log = logging.getLogger("dupflow")


@functools.cache
def compiled(function: Callable) -> Callable | None:
    """`function` compiled by numba (nogil, cached on disk where it can be), or None without numba."""
    try:
        from numba import njit
    except ImportError:
        log.warning("numba is not installed: %s runs through Pillow instead", function.__name__)
        return None
    try:
        return njit(cache=True, nogil=True)(function)
    except RuntimeError:  # no writable cache folder for this module: compile for this process only
        return njit(nogil=True)(function)

"""dupflow: exact duplicate and near-duplicate image search with difPy's API, as a Dask pipeline."""

import logging

__version__ = "0.1.0"

# a library logs, the application decides where to: without a handler of its own a host that configures
# no logging would otherwise see dupflow's warnings through logging's last-resort handler
logging.getLogger("dupflow").addHandler(logging.NullHandler())

from .actions import undo  # noqa: E402
from .api import build, search  # noqa: E402

__all__ = ["build", "search", "undo", "__version__"]

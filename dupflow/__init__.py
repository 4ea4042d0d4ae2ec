"""dupflow: exact duplicate and near-duplicate image search with difPy's API, as a Dask pipeline."""

__version__ = "0.1.0"

from .actions import undo  # noqa: E402
from .api import build, search  # noqa: E402

__all__ = ["build", "search", "undo", "__version__"]

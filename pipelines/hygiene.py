"""Nightly data-lake hygiene: `python pipelines/hygiene.py CONFIG` or `python -m pipelines.hygiene CONFIG`.

A thin entry point: `dupflow.hygiene.main` does the work (also `python -m dupflow.hygiene CONFIG` and
`dupflow hygiene CONFIG` wherever dupflow is installed). From Python: `dupflow.hygiene.run(config)`.
"""

from __future__ import annotations

import sys

from dupflow.hygiene import EXIT_CODES, Summary, main, run

__all__ = ["EXIT_CODES", "Summary", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())

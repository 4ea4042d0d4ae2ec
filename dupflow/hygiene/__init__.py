"""Scheduled data-lake hygiene: one config file, one run per night, a dated report, optional quarantine.

`run(config)` does one run and returns its `Summary`; `main(argv)` is the command
(`python -m dupflow.hygiene CONFIG`, `dupflow hygiene CONFIG`), which prints the summary as one JSON line
and exits with the code a scheduler acts on (`EXIT_CODES`).
"""

from __future__ import annotations

from .config import ConfigError, HygieneConfig, load_config, parse_config
from .main import main
from .run import EXIT_CODES, Summary, run

__all__ = [
    "EXIT_CODES",
    "ConfigError",
    "HygieneConfig",
    "Summary",
    "load_config",
    "main",
    "parse_config",
    "run",
]

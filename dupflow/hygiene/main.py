"""The hygiene command: one run, one JSON summary line on stdout, an exit code a scheduler acts on."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from .. import allocator
from .config import ConfigError, load_config
from .run import EXIT_CODES, run

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dupflow hygiene",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="One scheduled hygiene run: incremental build, search, dated report, optional quarantine.",
        epilog="Prints one JSON summary line on stdout. Exit status: "
        + ", ".join(f"{code} {status}" for status, code in EXIT_CODES.items())
        + ".",
    )
    p.add_argument("config", help="the job's TOML config (see pipelines/hygiene.example.toml)")
    p.add_argument("--check", action="store_true", help="only check the config, then exit (0 if valid)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job a config file describes; returns the exit code (see `EXIT_CODES`)."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    allocator.tune()  # the job's own process: keep freed image buffers for the next image
    logger = logging.getLogger("dupflow")
    saved = logger.handlers[:], logger.level, logger.propagate
    handler = logging.StreamHandler(sys.stderr)  # warnings and worse: stdout is the summary line only
    handler.setFormatter(logging.Formatter("dupflow: %(message)s"))
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.WARNING)
    try:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"dupflow hygiene: error: {exc}", file=sys.stderr)
            return EXIT_CODES["bad_config"]
        if args.check:
            print(f"dupflow hygiene: {args.config} is valid", file=sys.stderr)
            return 0
        summary = run(config)
        print(summary.to_json(), flush=True)
        return summary.exit_code
    finally:  # called in-process (tests, notebooks): leave the caller's logging as it was
        logger.handlers, logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])

"""The `dupflow` command: difPy's flags and output files, plus dupflow's own long options and `undo`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from typing import Iterator, Sequence

from . import __version__, allocator
from .groups import KEEP_RULES

TRUE = ("yes", "true", "t", "y", "1")
FALSE = ("no", "false", "f", "n", "0")


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line instead of usage + error
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _bool(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected (true/false, yes/no, 1/0), got {text!r}")


def _int_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"anon\": true}'")
    return value


def search_parser(prog: str = "dupflow") -> argparse.ArgumentParser:
    """difPy's flags (same short names and meanings) and dupflow's long options."""
    p = _Parser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find duplicate and similar images in folders or buckets (difPy-compatible, exact).",
        epilog="examples:\n"
        "  dupflow photos/                         exact duplicates in photos/\n"
        "  dupflow -D photos/ archive/ -s similar  near-duplicates across two folders\n"
        "  dupflow s3://bucket/raw --storage-options '{\"anon\": false}' -Z report/\n"
        "  dupflow photos/ -mv quarantine/         move lower-quality copies (journaled)\n"
        "  dupflow photos/ -Z out/ --report out/report.html   the groups as one HTML page\n"
        "  dupflow report out/ -o report.html      the HTML report of the latest run in out/\n"
        "  dupflow undo ~/.local/state/dupflow/journals/dupflow_..._move.jsonl\n\n"
        "Writes dupflow_<timestamp>_results.json, _lower_quality.json and _stats.json "
        "(and _matches.csv/.parquet with --format)\nto the output folder, never over an earlier run's.\n"
        "Exit status: 0 done, 1 failed (undo: nothing restored), 2 bad usage.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="folders, files or fsspec URLs to search")
    p.add_argument(
        "-D",
        "--directory",
        nargs="+",
        default=[],
        metavar="PATH",
        help="folders, files or URLs to search (difPy's flag; default: the current folder)",
    )
    p.add_argument(
        "-Z",
        "--output_directory",
        default=None,
        metavar="DIR",
        help="where the result files go (created if missing; default: the current folder)",
    )
    p.add_argument(
        "-r",
        "--recursive",
        type=_bool,
        default=True,
        metavar="BOOL",
        help="search sub-folders (default true)",
    )
    p.add_argument(
        "-i",
        "--in_folder",
        type=_bool,
        default=False,
        metavar="BOOL",
        help="compare only within each input, not across them (default false)",
    )
    p.add_argument(
        "-le",
        "--limit_extensions",
        type=_bool,
        default=True,
        metavar="BOOL",
        help="only read known image extensions (default true)",
    )
    p.add_argument(
        "-px",
        "--px_size",
        type=_int_or_text,
        default=50,
        metavar="N",
        help="side of the compared thumbnail, 10..5000 (default 50)",
    )
    p.add_argument(
        "-s",
        "--similarity",
        type=_int_or_text,
        default="duplicates",
        metavar="S",
        help="'duplicates' (MSE 0), 'similar' (MSE <= 5) or a number >= 0 (default duplicates)",
    )
    p.add_argument(
        "-ro",
        "--rotate",
        type=_bool,
        default=True,
        metavar="BOOL",
        help="also match images turned by 90, 180 or 270 degrees (default true)",
    )
    p.add_argument(
        "-dim",
        "--same_dim",
        type=_bool,
        default=True,
        metavar="BOOL",
        help="only compare images of the same width and height (default true)",
    )
    p.add_argument("-mv", "--move_to", default=None, metavar="DIR", help="move lower-quality files here")
    p.add_argument(
        "-d", "--delete", type=_bool, default=False, metavar="BOOL", help="delete lower-quality files"
    )
    p.add_argument(
        "-sd",
        "--silent_del",
        type=_bool,
        default=False,
        metavar="BOOL",
        help="delete without asking (default false)",
    )
    p.add_argument(
        "-p", "--show_progress", type=_bool, default=True, metavar="BOOL", help="show progress bars"
    )
    p.add_argument(
        "-proc",
        "--processes",
        type=_int_or_text,
        default=None,
        metavar="N",
        help="local worker processes (default: all cores)",
    )
    p.add_argument(
        "-ch",
        "--chunksize",
        type=_int_or_text,
        default=None,
        metavar="N",
        help="images per compare block (default: automatic)",
    )
    p.add_argument("-la", "--lazy", type=_bool, default=None, help=argparse.SUPPRESS)
    _add_cluster_flags(p)
    p.add_argument(
        "--catalog",
        default=None,
        metavar="PATH_OR_URL",
        help="where decoded tensors are kept for reruns (default: the user cache folder)",
    )
    p.add_argument(
        "--storage-options",
        type=_json_object,
        default={},
        metavar="JSON",
        help="fsspec options for remote paths, as a JSON object",
    )
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="PATH",
        help="searched against, never cleaned (repeatable): which new images are already in this "
        "collection; reference images are always kept and never compared with each other",
    )
    p.add_argument(
        "--decode",
        choices=("exact", "fast"),
        default="exact",
        help="'exact' matches difPy's tensors; 'fast' decodes JPEGs at reduced scale",
    )
    p.add_argument(
        "--keep",
        choices=KEEP_RULES,
        default="resolution",
        help="which image of a group is kept: 'resolution' (most pixels, then oldest, then largest file), "
        "'oldest', 'newest' or 'largest' file first (default resolution)",
    )
    p.add_argument(
        "--format",
        type=_formats,
        default=("json",),
        metavar="LIST",
        help="output files besides difPy's JSON: csv, parquet (comma-separated; one row per match)",
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="HTML",
        help="also write a self-contained HTML report of the groups (thumbnails embedded) to this file",
    )
    p.add_argument("--version", action="version", version=f"dupflow {__version__}")
    return p


def _add_cluster_flags(p: argparse.ArgumentParser) -> None:
    """Where the work runs: an existing scheduler, or a cluster dupflow starts (and stops) by name."""
    from .cluster import CLUSTER_NAMES

    g = p.add_argument_group(
        "where it runs",
        "default: $DASK_SCHEDULER_ADDRESS (or dask config scheduler-address), else a local cluster on "
        "127.0.0.1",
    )
    g.add_argument("--scheduler", default=None, metavar="ADDRESS", help="a running Dask scheduler")
    g.add_argument("--scheduler-file", default=None, metavar="PATH", help="a Dask scheduler file")
    g.add_argument(
        "--cluster",
        default=None,
        choices=CLUSTER_NAMES,
        help="start a cluster configured in dask config / jobqueue.yaml, closed at the end",
    )
    g.add_argument("--workers", type=_int_or_text, default=None, metavar="N", help="workers (jobs) to start")
    g.add_argument("--adapt", default=None, metavar="MIN:MAX", help="adaptive worker bounds instead of N")
    g.add_argument("--lifetime", default=None, metavar="DURATION", help="retire workers after, e.g. 55m")
    g.add_argument("--lifetime-stagger", default=None, metavar="DURATION", help="spread retirements, e.g. 4m")
    g.add_argument("--dashboard", action="store_true", help="serve Dask's dashboard and print its link")


def _placement(args: argparse.Namespace) -> dict:
    """The placement options of build/search from the cluster flags."""
    shaped = {"workers": args.workers, "lifetime": args.lifetime, "lifetime_stagger": args.lifetime_stagger}
    if args.adapt is not None:
        low, sep, high = args.adapt.partition(":")
        if not sep or not low.isdigit() or not high.isdigit():
            raise UsageError(f"--adapt must be MIN:MAX worker counts, e.g. 1:10 (got {args.adapt!r})")
        shaped["adapt"] = (int(low), int(high))
    shaped = {key: value for key, value in shaped.items() if value is not None}
    if shaped and not args.cluster:
        raise UsageError("--workers, --adapt, --lifetime and --lifetime-stagger need --cluster NAME")
    options = {
        "scheduler": args.scheduler,
        "scheduler_file": args.scheduler_file,
        "dashboard": args.dashboard,
    }
    if args.cluster:
        options["cluster"] = {"name": args.cluster, **shaped}
    return options


def undo_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dupflow undo", description="Put files moved by dupflow back where they were.")
    p.add_argument("journal", help="a journal written by move_to (its path is printed after the move)")
    p.add_argument("--storage-options", type=_json_object, default={}, metavar="JSON")
    return p


def _formats(text: str) -> tuple[str, ...]:
    from .outputs import parse_formats

    try:
        return parse_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _output_folder(folder: str | None) -> str:
    """-Z: a folder (created now, so a bad one fails before the search), never an existing file."""
    folder = folder or os.getcwd()
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f'Invalid value for "output_directory" (-Z): "{folder}" is a file, not a folder.')
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f'Invalid value for "output_directory" (-Z): "{folder}" cannot be created ({exc.strerror}).'
        ) from None
    return folder


def _report_path(path: str | None) -> str | None:
    """--report / -o: an HTML file to write, not a folder."""
    if path is not None and os.path.isdir(path):
        raise UsageError(
            f'Invalid value for "report": "{path}" is a folder; name an HTML file, e.g. report.html'
        )
    return path


def _summary(found, facts: dict) -> str:
    """The one-line summary: what was searched, what is invalid, what was found, what it frees."""
    from .outputs import human_bytes, reclaimable_bytes

    stats = found.stats
    counts = stats["process"]["search"]["matches_found"]
    freed = reclaimable_bytes(found.lower_quality, facts)
    return (
        f"{stats['process']['search']['files_searched']} images searched, "
        f"{stats['invalid_files']['count']} invalid files: "
        f"{counts['duplicates']} duplicates, {counts['similar']} similar, "
        f"{len(found.lower_quality)} lower-quality files ({human_bytes(freed)} reclaimable)."
    )


def run_search(argv: Sequence[str]) -> int:
    from . import api
    from .outputs import file_facts, match_rows, named_paths, write_outputs
    from .params import LAZY_RENAMED, ParameterError, ParameterTypeError, validate_build, validate_search
    from .sources import InputNotFound, is_remote

    args = search_parser().parse_intermixed_args(argv)
    if args.lazy is not None:
        raise UsageError(LAZY_RENAMED)
    if args.move_to and args.delete:
        raise UsageError(
            '"move_to" and "delete" parameter are mutually exclusive. Please select one of them.'
        )
    paths = list(args.paths) + list(args.directory) or [os.getcwd()]
    options = {
        "storage_options": args.storage_options,
        "catalog": args.catalog,
        "decode": args.decode,
        "reference": args.reference or None,
        **_placement(args),
    }
    try:  # every parameter first, in difPy's order, so a usage error never waits for a cluster or a decode
        validate_build(
            (paths,),
            args.recursive,
            args.in_folder,
            args.limit_extensions,
            args.px_size,
            args.show_progress,
            args.processes,
            options,
        )
        validate_search(
            args.similarity,
            args.rotate,
            args.same_dim,
            args.show_progress,
            args.processes,
            args.chunksize,
            {"keep": args.keep},
        )
    except (ParameterError, ParameterTypeError) as exc:
        raise UsageError(str(exc)) from None
    if (
        args.move_to
        and not is_remote(args.move_to)
        and os.path.exists(args.move_to)
        and not os.path.isdir(args.move_to)
    ):
        raise UsageError(f'Invalid value for "move_to" parameter: "{args.move_to}" is not a directory.')
    folder = _output_folder(args.output_directory)
    report = _report_path(args.report)
    try:
        dif = api.build(
            paths,
            recursive=args.recursive,
            in_folder=args.in_folder,
            limit_extensions=args.limit_extensions,
            px_size=args.px_size,
            show_progress=args.show_progress,
            processes=args.processes,
            **options,
        )
    except (ParameterError, ParameterTypeError, InputNotFound) as exc:
        raise UsageError(str(exc)) from None
    with dif:
        try:
            found = api.search(
                dif,
                similarity=args.similarity,
                rotate=args.rotate,
                same_dim=args.same_dim,
                show_progress=args.show_progress,
                processes=args.processes,
                chunksize=args.chunksize,
                keep=args.keep,
            )
        except (ParameterError, ParameterTypeError) as exc:
            raise UsageError(str(exc)) from None
        facts = file_facts(dif.files, dif.images, named_paths(found.result, found.lower_quality))
    rows = match_rows(found.result, facts) if set(args.format) - {"json"} else None
    run = write_outputs(folder, found.result, found.lower_quality, found.stats, rows, args.format)
    names = list(run.names)
    print(_summary(found, facts))
    try:
        if args.move_to:
            found.move_to(args.move_to)
        elif args.delete:
            found.delete(silent_del=args.silent_del)
    except (ParameterError, ParameterTypeError) as exc:
        raise UsageError(str(exc)) from None
    except EOFError:  # no one to answer the prompt (stdin closed or not a terminal): keep every file
        print("\nDeletion canceled: no answer on standard input (use -sd true to delete without asking).")
    if found.journals:  # so that `dupflow report` on this folder shows what happened to each file
        with open(run.path("_journals.json"), "x", encoding="utf-8") as handle:
            json.dump(found.journals, handle)
        names.append(os.path.basename(handle.name))
    print("\n" + "\n".join(names) + f"\n\nsaved in '{folder}'.")
    if report:
        from .report import collect, write_report

        data = collect(
            found.result,
            found.stats,
            found.journals,
            args.storage_options,
            args.scheduler,
            show_progress=args.show_progress,
        )
        print(f"report: {write_report(report, data)}")
    return 0


@contextlib.contextmanager
def _local_journal(journal: str, storage_options: dict) -> Iterator[str]:
    """A journal's local path: as given, or a temporary copy of one kept in a bucket (hygiene reports)."""
    from .sources import filesystem, is_remote

    if not is_remote(journal):
        if not os.path.isfile(journal):
            raise UsageError(f'journal "{journal}" does not exist')
        yield journal
        return
    fs, path = filesystem(journal, storage_options)
    if not fs.isfile(path):
        raise UsageError(f'journal "{journal}" does not exist')
    with tempfile.TemporaryDirectory(prefix="dupflow-undo-") as folder:
        local = os.path.join(folder, "journal.jsonl")
        fs.get_file(path, local)
        yield local


def run_undo(argv: Sequence[str]) -> int:
    from .actions import undo

    args = undo_parser().parse_args(argv)
    with _local_journal(args.journal, args.storage_options) as journal:
        try:
            counts = undo(journal, args.storage_options)
        except ValueError as exc:
            raise UsageError(str(exc).replace(journal, args.journal)) from None
    print(
        f"restored {counts['restored']} file(s); {counts['skipped']} could not be restored; "
        f"{counts['not_restorable']} deletion(s) cannot be undone."
    )
    if counts["restored"] == 0:  # a script must not take "nothing came back" for success
        print("dupflow: nothing was restored", file=sys.stderr)
        return 1
    return 0


def report_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="dupflow report",
        description="Write one self-contained HTML file showing every group of a finished search: its kept "
        "image, each match with MSE, size and date, and what a move or delete did to it.",
    )
    p.add_argument(
        "results", metavar="RESULTS_OR_OUTPUT_DIR", help="a -Z folder (its latest run) or a _results.json"
    )
    p.add_argument("-o", "--output", default="report.html", metavar="HTML", help="default: report.html")
    p.add_argument(
        "--journal", action="append", default=[], metavar="JOURNAL", help="a move/delete journal (repeatable)"
    )
    p.add_argument("--storage-options", type=_json_object, default={}, metavar="JSON")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="a running Dask scheduler")
    p.add_argument(
        "-p", "--show_progress", type=_bool, default=True, metavar="BOOL", help="show progress bars"
    )
    return p


def run_report(argv: Sequence[str]) -> int:
    from .report import report_from_outputs, write_report

    args = report_parser().parse_args(argv)
    output = _report_path(args.output)
    for journal in args.journal:
        if not os.path.isfile(journal):
            raise UsageError(f'journal "{journal}" does not exist')
    try:
        data = report_from_outputs(
            args.results, args.journal, args.storage_options, args.scheduler, args.show_progress
        )
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    s = data["summary"]
    print(f"{s['groups']} groups, {s['matches']} matches: report written to {write_report(output, data)}")
    return 0


def _seconds(text: str) -> float:
    """A duration: seconds, or a number with s, m, h or d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:].lower() in units else (text, "s")
    try:
        value = float(number) * units[unit.lower()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 3600, 90m, 12h, 7d)") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration >= 0")
    return value


def catalog_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dupflow catalog", description="Inspect, check and clean a dupflow catalog.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in (
        ("info", "namespaces, shards, bytes, index rows, files"),
        ("verify", "read every shard whole: checksums, schema, the files the index names"),
        ("gc", "remove unreferenced shards and rows of files long absent (safe while runs use it)"),
    ):
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument("--catalog", help="folder or fsspec URL (default: ~/.cache/dupflow/catalog)")
        q.add_argument("--storage-options", type=_json_object, default={}, metavar="JSON")
        q.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.choices["verify"].add_argument("--set-aside", action="store_true", help="remove damaged shards")
    gc = sub.choices["gc"]
    gc.add_argument("--grace", type=_seconds, default="1d", help="keep younger unreferenced shards (1d)")
    gc.add_argument(
        "--absent-for", type=_seconds, default="7d", help="drop rows of files absent this long (7d)"
    )
    gc.add_argument("--dry-run", action="store_true", help="report what would go, remove nothing")
    return p


def run_catalog(argv: Sequence[str]) -> int:
    from . import catalog_maintenance as maintenance

    args = catalog_parser().parse_args(argv)
    try:
        if args.command == "info":
            report = maintenance.info(args.catalog, args.storage_options)
            lines = [
                f"{n['name']}: {n['files']} files, {n['shards']} shards ({n['shard_bytes']} bytes), "
                f"{n['index_files']} index files, {n['failures']} failures, "
                f"{n['unreferenced_shards']} unreferenced shards"
                for n in report["namespaces"]
            ]
        elif args.command == "verify":
            report = maintenance.verify(args.catalog, args.storage_options, args.set_aside)
            lines = [f"{report['sound']} of {report['shards']} shards sound"]
            lines += [f"damaged: {name}: {why}" for name, why in report["damaged"].items()]
            lines += [f"unreadable: {name}: {why}" for name, why in report["unreadable"].items()]
            lines += [f"missing (its rows are decoded again; gc drops them): {n}" for n in report["missing"]]
        else:
            report = maintenance.gc(
                args.catalog, args.storage_options, args.grace, args.absent_for, args.dry_run
            )
            lines = [
                ("would remove " if args.dry_run else "removed ")
                + f"{report['shards_removed']} shards, {report['temporaries_removed']} temporaries "
                f"({report['bytes_freed']} bytes) and {report['rows_removed']} index rows; "
                f"{report['files_absent']} files absent"
            ]
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(report) if args.json else "\n".join([report["catalog"], *lines]))
    failed = args.command == "verify" and (report["damaged"] or report["unreadable"])
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `dupflow [search] PATH ... [flags]`, `dupflow report RESULTS`, `dupflow undo JOURNAL`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    allocator.tune()  # this process is dupflow's own: keep freed image buffers for the next image
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("dupflow: %(message)s"))
    handler.set_name("dupflow-cli")
    logger = logging.getLogger("dupflow")
    logger.handlers = [
        h for h in logger.handlers if h.get_name() != "dupflow-cli"
    ]  # one, even when called again
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        if argv[:1] == ["undo"]:
            return run_undo(argv[1:])
        if argv[:1] == ["report"]:
            return run_report(argv[1:])
        if argv[:1] == ["catalog"]:
            return run_catalog(argv[1:])
        if argv[:1] == ["hygiene"]:  # the scheduled job: its own exit codes and one JSON line on stdout
            from .hygiene import main as hygiene_main

            return hygiene_main(argv[1:])
        return run_search(argv[1:] if argv[:1] == ["search"] else argv)
    except UsageError as exc:
        print(f"dupflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dupflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failure, not a usage error: one line, status 1
        print(f"dupflow: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

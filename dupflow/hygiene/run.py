"""One hygiene run: claim the job, build incrementally, search, write a dated report, quarantine, purge.

A run whose inputs (every file's url, size and stamp) and search settings are those the last finished run
left behind does nothing and says so (`status: "unchanged"`). Two overlapping runs of one config never
both act: the second finds the claim held and stands down (`status: "busy"`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .. import claim as claims
from ..actions import journal_dir
from ..outputs import file_facts, match_rows, named_paths, write_outputs
from ..report import collect, write_report
from ..sources import filesystem, is_remote, list_files, redact
from .config import HygieneConfig, load_config
from .purge import purge_quarantine

__all__ = ["EXIT_CODES", "Summary", "run"]

log = logging.getLogger("dupflow")

# What a scheduler acts on (documented in pipelines/README.md)
EXIT_CODES = {
    "done": 0,  # searched and reported (and quarantined, if asked)
    "unchanged": 0,  # nothing new since the last finished run: nothing written, nothing moved
    "failed": 1,  # an error stopped the run (the summary says which); retry or alert
    "bad_config": 2,  # the config file is wrong (one line on stderr names the key); fix it, do not retry
    "busy": 3,  # another run of this config holds the claim: nothing done; skip this slot
    "incomplete": 4,  # report written, but some quarantine moves failed (see the journal); alert
}
STATE = ".dupflow-hygiene"  # beside the reports: claims, last state, registered journals
REPORT_FORMATS = ("json", "csv", "parquet")
REPORT_HTML = "report.html"


@dataclass
class Summary:
    """What a run did, as the one JSON line it prints (and the exit code a scheduler acts on)."""

    status: str
    config: str
    report: str | None = None
    images: int = 0
    reference: int = 0
    decoded: int = 0
    groups: int = 0
    lower_quality: int = 0
    quarantined: int = 0
    skipped: int = 0  # left alone by the move's safety checks (changed since the scan, ...): logged
    not_moved: int = 0  # planned moves that failed
    purged: int = 0
    journal: str | None = None
    purge_journal: str | None = None
    seconds: float = 0.0
    message: str = ""
    counts: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_json(self) -> str:
        """One line of JSON, exit code included."""
        return json.dumps({**asdict(self), "exit_code": self.exit_code}, sort_keys=False)


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if is_remote(folder) else os.path.join(folder, name)


def fingerprint(config: HygieneConfig) -> str:
    """A digest of every listed file (url, size, stamp) and of the search settings."""
    digest = hashlib.sha256(json.dumps(config.search_key(), sort_keys=True, default=str).encode())
    for places in (config.sources, config.reference):
        if not places:
            continue
        listing = list_files(sorted(places), config.recursive, True, config.storage_options)
        for row in zip(listing.url, listing.size.tolist(), listing.stamp):
            digest.update(json.dumps(row).encode())
        digest.update(b"|")
    return digest.hexdigest()


def _read_json(url: str, storage_options: dict) -> dict:
    fs, path = filesystem(url, storage_options)
    try:
        with fs.open(path, "rb") as handle:
            return json.loads(handle.read())
    except (FileNotFoundError, ValueError):
        return {}


def _put(local: str, url: str, storage_options: dict) -> None:
    """Copy a local file to a folder path or URL (parents created)."""
    fs, path = filesystem(url, storage_options)
    fs.makedirs(path.rsplit("/", 1)[0] if is_remote(url) else os.path.dirname(path), exist_ok=True)
    fs.put_file(local, path)


def _write_tables(folder: str, found: Any, facts: dict) -> list[str]:
    """difPy's three JSON files (the CLI's names) and the match table as CSV and Parquet."""
    rows = match_rows(found.result, facts)
    return list(
        write_outputs(folder, found.result, found.lower_quality, found.stats, rows, REPORT_FORMATS).names
    )


def _write_html(folder: str, found: Any, config: HygieneConfig) -> str:
    """The self-contained HTML report (thumbnails embedded; what was quarantined is marked)."""
    scheduler = config.cluster.get("scheduler")  # else thumbnails are made by local threads
    data = collect(found.result, found.stats, found.journals, config.storage_options, scheduler)
    write_report(os.path.join(folder, REPORT_HTML), data)
    return REPORT_HTML


def _search(config: HygieneConfig) -> tuple[Any, Any, dict]:
    """build + search as the config asks (the build keeps its catalog beside the data), and per-file facts
    for the tables (sizes, dimensions)."""
    import dupflow

    options: dict[str, Any] = {
        "catalog": config.catalog,
        "storage_options": config.storage_options,
        "decode": config.decode,
        **config.cluster,
    }
    if config.reference:
        options["reference"] = config.reference
    dif = dupflow.build(
        config.sources,
        recursive=config.recursive,
        px_size=config.px_size,
        show_progress=False,
        **options,
    )
    search_options = {"keep": config.keep} if config.keep else {}
    try:
        found = dupflow.search(
            dif,
            similarity=config.similarity,
            rotate=config.rotate,
            same_dim=config.same_dim,
            show_progress=False,
            **search_options,
        )
        facts = file_facts(dif.files, dif.images, named_paths(found.result, found.lower_quality))
    except BaseException:
        dif.close()
        raise
    return dif, found, facts


def _quarantine(found: Any, config: HygieneConfig, claim: claims.Claim) -> tuple[dict[str, int], str | None]:
    """Move the lower-quality files (journaled); returns the journal's counts per op and its local path."""
    if not found.lower_quality:
        return {}, None
    if not claims.still_held(claim, config.storage_options):  # never act on a claim that was taken over
        raise RuntimeError("the claim on this job expired or was taken over before the quarantine move")
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the one summary line only
        found.move_to(config.quarantine)
    with open(found.journal, encoding="utf-8") as handle:
        ops = Counter(json.loads(line).get("op") for line in handle)
    return dict(ops), found.journal


def _summarize(found: Any, summary: Summary) -> None:
    """The search's figures, as the summary line reports them."""
    process, ours = found.stats["process"]["search"], found.stats.get("dupflow", {}).get("build", {})
    summary.images = int(process["files_searched"])
    summary.reference = int(ours.get("reference", {}).get("files", 0))
    summary.decoded = int(ours.get("decoded", 0))
    summary.groups = len(found.result)
    summary.lower_quality = len(found.lower_quality)
    summary.counts = dict(process["matches_found"])


def _save_state(config: HygieneConfig, summary: Summary) -> None:
    """Record the inputs as this run leaves them (quarantined files gone): the next run compares with it."""
    payload = {
        "fingerprint": fingerprint(config),
        "report": summary.report,
        "finished": datetime.now().isoformat(),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(payload, handle)
    try:
        _put(handle.name, _join(_join(config.reports, STATE), "state.json"), config.storage_options)
    finally:
        os.unlink(handle.name)


def _purge(config: HygieneConfig, summary: Summary) -> None:
    """Remove quarantined files as old as the config asks, from this job's journals; keep its journal."""
    state_folder = _join(config.reports, STATE)
    so = config.storage_options
    counts = purge_quarantine(
        _join(state_folder, "journals"), config.quarantine, config.purge_after_days, so, journal_dir()
    )
    summary.purged = counts.purged
    if counts.journal:
        summary.purge_journal = _join(_join(state_folder, "purges"), os.path.basename(counts.journal))
        _put(counts.journal, summary.purge_journal, so)


def _act(config: HygieneConfig, claim: claims.Claim, summary: Summary) -> None:
    """The claimed part of a run: purge, then (unless nothing changed) search, report and quarantine."""
    so = config.storage_options
    state_folder = _join(config.reports, STATE)
    if config.purge_after_days:
        _purge(config, summary)
    last = _read_json(_join(state_folder, "state.json"), so)
    if last.get("fingerprint") == fingerprint(config):
        summary.status, summary.report = "unchanged", last.get("report")
        summary.message = "nothing new since the last run: nothing searched, written or moved"
        return
    now = datetime.now(timezone.utc)
    report = _join(config.reports, now.strftime("%Y-%m-%dT%H%M%SZ"))
    dif, found, facts = _search(config)
    with dif, tempfile.TemporaryDirectory(prefix="dupflow-report-") as local:
        _summarize(found, summary)
        names = _write_tables(local, found, facts)
        if config.action == "quarantine":
            ops, journal = _quarantine(found, config, claim)
            summary.quarantined, summary.skipped = ops.get("done", 0), ops.get("skip", 0)
            summary.not_moved = ops.get("plan", 0) - ops.get("done", 0)  # planned, then failed
            if journal:
                name = os.path.basename(journal)
                shutil.copy(journal, os.path.join(local, name))
                names.append(name)
                _put(journal, _join(_join(state_folder, "journals"), name), so)
                summary.journal = _join(report, name)
        try:  # the HTML is a view of files already written: its failure must not lose them
            names.append(_write_html(local, found, config))
        except Exception as exc:
            log.warning("HTML report not written: %s: %s", type(exc).__name__, exc)
            summary.message = f"HTML report not written ({type(exc).__name__}: {exc})"
        summary.report = redact(report)
        summary.status = "incomplete" if summary.not_moved else "done"
        with open(os.path.join(local, "summary.json"), "w", encoding="utf-8") as handle:
            handle.write(summary.to_json() + "\n")
        for name in [*names, "summary.json"]:
            _put(os.path.join(local, name), _join(report, name), so)
    _save_state(config, summary)


def run(config: str | os.PathLike | HygieneConfig) -> Summary:
    """Run a hygiene job once; returns its Summary (its `exit_code` is what a scheduler acts on).

    Parameters
    ----------
    config
        A TOML config file (see pipelines/hygiene.example.toml) or a loaded `HygieneConfig`.

    Raises
    ------
    dupflow.hygiene.ConfigError
        The config file is missing or wrong (nothing has run).

    Examples
    --------
    >>> from dupflow.hygiene import run
    >>> summary = run("hygiene.toml")  # doctest: +SKIP
    >>> summary.status, summary.report  # doctest: +SKIP
    ('done', 's3://lake/dupflow-reports/2026-12-02T020000Z')
    """
    if not isinstance(config, HygieneConfig):
        config = load_config(config)
    t0 = time.perf_counter()
    summary = Summary("done", redact(config.path))
    state_folder = _join(config.reports, STATE)
    claim = claims.acquire(state_folder, config.claim_minutes * 60, config.storage_options)
    if claim is None:
        summary.status = "busy"
        summary.message = "another run of this config holds its claim: nothing done"
        return summary
    try:
        _act(config, claim, summary)
    except Exception as exc:
        log.exception("hygiene run failed")
        summary.status, summary.message = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        claims.release(claim, config.storage_options)
        summary.seconds = round(time.perf_counter() - t0, 3)
    return summary

"""A hygiene job's configuration: one TOML file, read and checked in full before anything runs.

Every mistake is one `ConfigError` naming the key and saying what is accepted. Relative local paths are
taken relative to the config file's folder, so a job reads the same from cron, systemd or Airflow.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ..params import (
    ParameterError,
    ParameterTypeError,
    normalize_input,
    validate_placement,
    validate_similarity,
)
from ..sources import is_remote

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ACTIONS", "KEEP_RULES", "ConfigError", "HygieneConfig", "load_config", "parse_config"]

ACTIONS = ("report", "quarantine")
KEEP_RULES = ("resolution", "oldest", "newest", "largest")
DEFAULT_CLAIM_MINUTES = 360  # a run that holds its claim longer is taken to have died
CATALOG_NAME = ".dupflow-catalog"  # hidden: listings skip it, so it can live beside the data


class ConfigError(ValueError):
    """The config file is missing, unreadable or has a bad key; the message names the key."""


@dataclass(frozen=True)
class HygieneConfig:
    """A validated hygiene job: what to search, against what, and what to do with the copies found."""

    path: str
    sources: list[str]
    reports: str
    reference: list[str] = field(default_factory=list)
    catalog: str = ""
    similarity: int | float = 0
    rotate: bool = True
    same_dim: bool = True
    px_size: int = 50
    decode: str = "exact"
    recursive: bool = True
    keep: str | None = None
    action: str = "report"
    quarantine: str | None = None
    purge_after_days: int | None = None
    cluster: dict = field(default_factory=dict)  # build()'s placement keyword: {} = a local cluster
    claim_minutes: int = DEFAULT_CLAIM_MINUTES
    storage_options: dict = field(default_factory=dict)

    def search_key(self) -> dict[str, Any]:
        """What decides the answer besides the files: a run with the same files and key changes nothing."""
        return {
            "sources": self.sources,
            "reference": self.reference,
            "similarity": self.similarity,
            "rotate": self.rotate,
            "same_dim": self.same_dim,
            "px_size": self.px_size,
            "decode": self.decode,
            "recursive": self.recursive,
            "keep": self.keep,
            "action": self.action,
            "quarantine": self.quarantine,
        }


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f'config key "{key}": {message}')


def _place(key: str, value: Any, base: str) -> str:
    """A folder or URL; local paths relative to the config file's folder."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, "must be a folder path or a URL such as s3://bucket/prefix (a non-empty string)")
    if value.startswith("file://"):
        value = value[len("file://") :]
    elif is_remote(value):
        return normalize_input(value)
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def _places(key: str, value: Any, base: str, required: bool) -> list[str]:
    if value is None and not required:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or (required and not items):
        raise _fail(key, "must be a list of folder paths or URLs (at least one)")
    places = [_place(key, item, base) for item in items]
    if len(set(places)) != len(places):
        raise _fail(key, "lists the same place twice")
    return places


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, f"must be true or false, got {value!r}")
    return value


def _int(key: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
        bound = f"between {low} and {high}" if high else f">= {low}"
        raise _fail(key, f"must be a whole number {bound}, got {value!r}")
    return value


def _choice(key: str, value: Any, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise _fail(key, f"must be one of {', '.join(repr(a) for a in accepted)}, got {value!r}")
    return value


def _inside(place: str, folder: str) -> bool:
    return place == folder or place.startswith(folder.rstrip("/") + "/")


def _placement(value: Any) -> dict[str, Any]:
    """The config's cluster as build()'s keyword: "" (a local cluster), a scheduler address, a cluster
    name (local, slurm, pbs, sge, kubernetes) or a table {name, workers, adapt, lifetime, options}."""
    from ..cluster import CLUSTER_NAMES

    accepted = (
        f'must be "" (a local cluster), a scheduler address such as "tcp://host:8786", one of '
        f"{', '.join(CLUSTER_NAMES)}, or a table with name, workers, adapt, lifetime, options"
    )
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        options = {"scheduler": value} if "://" in value else {"cluster": value}
    elif isinstance(value, dict):
        options = {"cluster": value}
    else:
        raise _fail("cluster", accepted)
    try:
        validate_placement(options)
    except (ParameterError, ParameterTypeError) as exc:
        raise _fail("cluster", f"{accepted} ({exc})") from None
    return options


KEYS = (
    "sources",
    "reference",
    "reports",
    "catalog",
    "similarity",
    "rotate",
    "same_dim",
    "px_size",
    "decode",
    "recursive",
    "keep",
    "action",
    "quarantine",
    "purge_after_days",
    "cluster",
    "claim_minutes",
    "storage_options",
)


def parse_config(data: dict[str, Any], path: str = "<config>") -> HygieneConfig:
    """Check a config document (the parsed TOML) key by key; the first problem raises ConfigError."""
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise _fail(unknown[0], f"unknown key; accepted keys are: {', '.join(KEYS)}")
    for required in ("sources", "reports"):
        if required not in data:
            raise _fail(required, "is required")
    base = os.path.dirname(os.path.abspath(path))
    sources = _places("sources", data["sources"], base, required=True)
    reference = _places("reference", data.get("reference"), base, required=False)
    overlap = [r for r in reference if any(_inside(r, s) or _inside(s, r) for s in sources)]
    if overlap:
        raise _fail("reference", f'"{overlap[0]}" overlaps a source: a file is either new or reference')
    reports = _place("reports", data["reports"], base)
    catalog = _place("catalog", data["catalog"], base) if "catalog" in data else ""
    if not catalog:
        catalog = f"{sources[0].rstrip('/')}/{CATALOG_NAME}"
    try:
        similarity = validate_similarity(data.get("similarity", "duplicates"))
    except (ParameterError, ParameterTypeError):
        raise _fail(
            "similarity", f'must be "duplicates", "similar" or a number >= 0, got {data["similarity"]!r}'
        ) from None
    action = _choice("action", data.get("action", "report"), ACTIONS)
    quarantine = _place("quarantine", data["quarantine"], base) if "quarantine" in data else None
    if action == "quarantine" and quarantine is None:
        raise _fail("quarantine", 'is required when action = "quarantine" (where moved copies go)')
    if quarantine is not None:
        for place in sources + reference:
            if _inside(quarantine, place) or _inside(place, quarantine):
                raise _fail("quarantine", f'must lie outside the searched places (it overlaps "{place}")')
    purge = data.get("purge_after_days")
    if purge is not None:
        purge = _int("purge_after_days", purge, 1)
        if quarantine is None:
            raise _fail("purge_after_days", 'needs "quarantine" (purge removes old quarantined files)')
    cluster = _placement(data.get("cluster"))
    keep = data.get("keep")
    if keep is not None:
        keep = _choice("keep", keep, KEEP_RULES)
    storage_options = data.get("storage_options", {})
    if not isinstance(storage_options, dict):
        raise _fail("storage_options", "must be a table of fsspec options, e.g. [storage_options]")
    return HygieneConfig(
        path=os.path.abspath(path),
        sources=sources,
        reports=reports,
        reference=reference,
        catalog=catalog,
        similarity=similarity,
        rotate=_bool("rotate", data.get("rotate", True)),
        same_dim=_bool("same_dim", data.get("same_dim", True)),
        px_size=_int("px_size", data.get("px_size", 50), 10, 5000),
        decode=_choice("decode", data.get("decode", "exact"), ("exact", "fast")),
        recursive=_bool("recursive", data.get("recursive", True)),
        keep=keep,
        action=action,
        quarantine=quarantine,
        purge_after_days=purge,
        cluster=cluster,
        claim_minutes=_int("claim_minutes", data.get("claim_minutes", DEFAULT_CLAIM_MINUTES), 1),
        storage_options=dict(storage_options),
    )


def load_config(path: str | os.PathLike) -> HygieneConfig:
    """Read and check a TOML config file (see pipelines/hygiene.example.toml)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f'config file "{path}" does not exist') from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f'config file "{path}" is not valid TOML: {exc}') from None
    return parse_config(data, path)

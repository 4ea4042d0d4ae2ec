"""Validation of every user-facing parameter, with the messages users see (difPy's texts)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from .groups import KEEP_RULES
from .sources import is_remote, local_path

__all__ = [
    "BUILD_OPTIONS",
    "BuildParams",
    "DECODE_MODES",
    "DUPLICATES_MSE",
    "LAZY_RENAMED",
    "normalize_input",
    "ParameterError",
    "ParameterTypeError",
    "SEARCH_OPTIONS",
    "SearchParams",
    "SIMILAR_MSE",
    "validate_build",
    "validate_chunksize",
    "validate_directories",
    "validate_keep",
    "validate_placement",
    "validate_processes",
    "validate_reference",
    "validate_search",
    "validate_similarity",
]

DUPLICATES_MSE = 0
SIMILAR_MSE = 5
DECODE_MODES = ("exact", "fast")
PLACEMENT_OPTIONS = ("scheduler", "scheduler_file", "cluster", "dashboard")
BUILD_OPTIONS = ("storage_options", "catalog", "decode", "reference", *PLACEMENT_OPTIONS)
SEARCH_OPTIONS = ("keep", *PLACEMENT_OPTIONS)


class ParameterError(ValueError):
    """A parameter has a value dupflow does not accept; the message says what is accepted."""


class ParameterTypeError(TypeError):
    """A parameter has a type dupflow does not accept; the message says what is accepted."""


LAZY_RENAMED = (
    'Parameter "-la" / "lazy" was renamed to "-dim" / "same_dim" with difPy v4.2. Please update your script.'
)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterTypeError(f'Invalid value for "{name}" parameter: must be of type BOOL.')
    return value


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterTypeError(f'Invalid value for "{name}" parameter: must be of type INT.')
    return value


def normalize_input(entry: str) -> str:
    """One input as dupflow shows it: local paths via normpath, URLs without a trailing slash."""
    if is_remote(entry):
        protocol, rest = entry.split("://", 1)
        return f"{protocol}://{rest.rstrip('/')}" if rest.strip("/") else entry
    path = local_path(entry)
    return entry[: len(entry) - len(path)] + os.path.normpath(path) if path else entry


def _place(item: Any, error: str) -> str:
    """One input, folder or file, as dupflow shows it; `error` (given the type's name) when it is none."""
    if isinstance(item, os.PathLike):
        item = os.fspath(item)
    if not isinstance(item, str) or not item:
        raise ParameterTypeError(error.format(type(item).__name__))
    return normalize_input(item)


def validate_directories(directory: tuple) -> list[str]:
    """Flatten, type-check and normalize the inputs; sorted, as difPy does."""
    if len(directory) == 0:
        raise ParameterError("Invalid directory parameter: no directory provided.")
    flat: list[str] = []
    error = (
        "Invalid directory parameter: directories must be of type LIST or STRING (or os.PathLike), got {}."
    )
    for entry in directory:
        items = entry if isinstance(entry, (list, tuple)) else [entry]
        flat.extend(_place(item, error) for item in items)
    if not flat:
        raise ParameterError("Invalid directory parameter: no directory provided.")
    if len(set(flat)) != len(flat):
        raise ParameterError(
            "Invalid directory parameters: invalid attempt to compare a directory with itself."
        )
    return sorted(flat)


def validate_processes(value: Any) -> int:
    """`None` means every local core; otherwise difPy's 1..cpu_count rule."""
    cores = os.cpu_count() or 1
    if value is None:
        return cores
    value = _int("processes", value)
    if value < 1:
        raise ParameterError('Invalid value for "processes" parameter: must be >= 1.')
    if value > cores:
        raise ParameterError(
            'Invalid value for "processes" parameter: must be <= the number of CPU cores '
            f"(os.cpu_count() = {cores})."
        )
    return value


def validate_similarity(value: Any) -> int | float:
    """'duplicates' -> 0, 'similar' -> 5, otherwise a number >= 0 (numeric strings accepted)."""
    generic = (
        'Invalid value for "similarity" parameter: must be "duplicates", "similar" or of type INT or FLOAT.'
    )
    if isinstance(value, str):
        if value == "duplicates":
            return DUPLICATES_MSE
        if value == "similar":
            return SIMILAR_MSE
        if value in ("low", "normal", "high"):
            raise ParameterError(
                'Since difPy v3.0.8, "similarity" parameter only accepts "duplicates" '
                'and "similar" as input options.'
            )
    if isinstance(value, bool):
        raise ParameterTypeError(generic)
    try:
        number = float(value)
    except OverflowError:  # an int such as 10**400 has no float: say what is accepted instead
        raise ParameterError(
            'Invalid value for "similarity" parameter: too large for a float; use float("inf") to '
            "match every pair."
        ) from None
    except (TypeError, ValueError):
        raise (ParameterError if isinstance(value, str) else ParameterTypeError)(generic) from None
    if math.isnan(number):
        raise ParameterError(generic)
    if number < 0:
        raise ParameterError('Invalid value for "similarity" parameter: must be >= 0.')
    return number + 0.0  # -0.0 becomes 0.0: reported (and written to stats) without its sign


def validate_chunksize(value: Any) -> int | None:
    """Images per compare block: None (automatic) or an int >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterTypeError('Invalid value for "chunksize" parameter: must be of type INT or None.')
    if value < 1:
        raise ParameterError('Invalid value for "chunksize" parameter: must be >= 1.')
    return value


def _check_options(kind: str, options: Mapping[str, Any], accepted: tuple[str, ...]) -> None:
    if "lazy" in options:
        raise ParameterError(LAZY_RENAMED)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ParameterTypeError(
            f'Unknown parameter "{unknown[0]}" for dupflow.{kind}(); dupflow\'s own '
            f"options are: {', '.join(accepted)}."
        )


@dataclass(frozen=True)
class BuildParams:
    """Validated parameters of `dupflow.build`."""

    directories: list[str]
    recursive: bool = True
    in_folder: bool = False
    limit_extensions: bool = True
    px_size: int = 50
    show_progress: bool = True
    processes: int = 1
    storage_options: dict = field(default_factory=dict)
    catalog: str | None = None
    scheduler: Any = None
    decode: str = "exact"
    reference: list[str] = field(default_factory=list)  # searched against, never cleaned


def validate_reference(value: Any, directories: list[str]) -> list[str]:
    """Reference inputs: None, or paths/URLs (a list or one), each distinct from every directory."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    error = (
        'Invalid value for "reference" parameter: must be a path or URL (STRING or os.PathLike), '
        "or a list of them, got {}."
    )
    reference = [_place(item, error) for item in items]
    repeated = sorted({r for r in reference if reference.count(r) > 1 or r in directories})
    if repeated:
        raise ParameterError(
            f'Invalid value for "reference" parameter: "{repeated[0]}" is given twice (as a directory '
            "or reference); an input is either searched and cleaned, or a reference."
        )
    return sorted(reference)


def validate_build(
    directory: tuple,
    recursive: Any,
    in_folder: Any,
    limit_extensions: Any,
    px_size: Any,
    show_progress: Any,
    processes: Any,
    options: Mapping[str, Any],
) -> BuildParams:
    """Check build()'s parameters in difPy's order; the first failure raises."""
    directories = validate_directories(directory)
    recursive = _bool("recursive", recursive)
    in_folder = _bool("in_folder", in_folder)
    limit_extensions = _bool("limit_extensions", limit_extensions)
    px_size = _int("px_size", px_size)
    if not 10 <= px_size <= 5000:
        raise ParameterError('Invalid value for "px_size" parameter: must be between 10 and 5000.')
    show_progress = _bool("show_progress", show_progress)
    processes = validate_processes(processes)
    _check_options("build", options, BUILD_OPTIONS)
    storage_options = options.get("storage_options") or {}
    if not isinstance(storage_options, Mapping):
        raise ParameterTypeError(
            'Invalid value for "storage_options" parameter: must be a dict of fsspec options.'
        )
    catalog = options.get("catalog")
    if catalog is not None:
        if isinstance(catalog, os.PathLike):
            catalog = os.fspath(catalog)
        if not isinstance(catalog, str) or not catalog:
            raise ParameterTypeError(
                'Invalid value for "catalog" parameter: must be a path or URL (STRING), or None '
                "for the default cache folder."
            )
    decode = options.get("decode", "exact")
    if decode not in DECODE_MODES:
        raise ParameterError(
            f'Invalid value for "decode" parameter: must be one of {", ".join(DECODE_MODES)}.'
        )
    return BuildParams(
        directories,
        recursive,
        in_folder,
        limit_extensions,
        px_size,
        show_progress,
        processes,
        dict(storage_options),
        catalog,
        validate_placement(options),
        decode,
        validate_reference(options.get("reference"), directories),
    )


CLUSTER_KEYS = ("name", "workers", "adapt", "lifetime", "lifetime_stagger", "options")


def validate_placement(options: Mapping[str, Any]) -> Any:
    """Where the work runs: None (DASK_SCHEDULER_ADDRESS, else a local cluster) or a `cluster.Placement`
    from one of `scheduler` (address, Client or cluster object), `scheduler_file` or `cluster` (a name, or
    a dict with "name" and "workers", "adapt" (min, max), "lifetime", "lifetime_stagger", "options")."""
    from .cluster import CLUSTER_NAMES, Placement, is_cluster

    scheduler, scheduler_file = options.get("scheduler"), options.get("scheduler_file")
    cluster, dashboard = options.get("cluster"), options.get("dashboard", False)
    given = [name for name in ("scheduler", "scheduler_file", "cluster") if options.get(name) is not None]
    if len(given) > 1:
        raise ParameterError(f'Parameters "{given[0]}" and "{given[1]}" are mutually exclusive: give one.')
    if scheduler is not None and not isinstance(scheduler, str) and not is_cluster(scheduler):
        from distributed import Client

        if not isinstance(scheduler, Client):
            raise ParameterTypeError(
                'Invalid value for "scheduler" parameter: must be None (local cluster), an address such as '
                '"tcp://host:8786", a distributed.Client, or a cluster object (LocalCluster, SLURMCluster, '
                "KubeCluster, ...)."
            )
    if isinstance(scheduler_file, os.PathLike):
        scheduler_file = os.fspath(scheduler_file)
    if scheduler_file is not None and (not isinstance(scheduler_file, str) or not scheduler_file):
        raise ParameterTypeError('Invalid value for "scheduler_file" parameter: must be a path (STRING).')
    dashboard = _bool("dashboard", dashboard)
    if cluster is not None and not isinstance(cluster, (str, Mapping)):
        raise ParameterTypeError(
            'Invalid value for "cluster" parameter: must be a name (STRING) or a dict with "name".'
        )
    spec = {"name": cluster} if isinstance(cluster, str) else dict(cluster or {})
    unknown = sorted(set(spec) - set(CLUSTER_KEYS))
    if unknown:
        raise ParameterTypeError(
            f'Unknown key "{unknown[0]}" in "cluster" parameter: accepted keys are {", ".join(CLUSTER_KEYS)}.'
        )
    if cluster is not None and spec.get("name") not in CLUSTER_NAMES:
        raise ParameterError(
            f'Invalid value for "cluster" parameter: must be one of {", ".join(CLUSTER_NAMES)} '
            f"(got {spec.get('name')!r})."
        )
    workers = spec.get("workers")
    if workers is not None and (_int("cluster workers", workers) < 1):
        raise ParameterError('Invalid value for "cluster" workers: must be >= 1.')
    adapt = spec.get("adapt")
    if adapt is not None:
        if (
            not isinstance(adapt, (list, tuple))
            or len(adapt) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in adapt)
            or not 0 <= adapt[0] <= adapt[1]
            or adapt[1] < 1
        ):
            raise ParameterError(
                'Invalid value for "cluster" adapt: must be (minimum, maximum) workers with '
                "0 <= minimum <= maximum and maximum >= 1."
            )
        adapt = (adapt[0], adapt[1])
    for key in ("lifetime", "lifetime_stagger"):
        if spec.get(key) is not None:
            _duration(f"cluster {key}", spec[key])
    if spec.get("lifetime_stagger") is not None and spec.get("lifetime") is None:
        raise ParameterError('Invalid value for "cluster" lifetime_stagger: needs a lifetime.')
    extra = spec.get("options") or {}
    if not isinstance(extra, Mapping):
        raise ParameterTypeError('Invalid value for "cluster" options: must be a dict of keyword arguments.')
    if not given and not dashboard:
        return None
    return Placement(
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        cluster=spec.get("name"),
        workers=workers,
        adapt=adapt,
        lifetime=None if spec.get("lifetime") is None else str(spec["lifetime"]),
        lifetime_stagger=None if spec.get("lifetime_stagger") is None else str(spec["lifetime_stagger"]),
        dashboard=dashboard,
        options=dict(extra),
    )


def _duration(name: str, value: Any) -> str:
    """A duration dask understands ("55m", "2h", "90s")."""
    from dask.utils import parse_timedelta

    try:
        if isinstance(value, bool) or parse_timedelta(value) <= 0:
            raise ValueError
    except (TypeError, ValueError, KeyError):
        raise ParameterError(
            f'Invalid value for "{name}" parameter: must be a duration such as "55m", "2h" or "90s".'
        ) from None
    return value


def validate_keep(value: Any) -> str:
    """Which image of a group is kept (the primary): one of KEEP_RULES."""
    if value not in KEEP_RULES:
        raise ParameterError(
            f'Invalid value for "keep" parameter: must be one of {", ".join(KEEP_RULES)} (got {value!r}).'
        )
    return value


@dataclass(frozen=True)
class SearchParams:
    """Validated parameters of `dupflow.search`."""

    similarity: int | float
    rotate: bool = True
    same_dim: bool = True
    show_progress: bool = True
    processes: int = 1
    chunksize: int | None = None
    scheduler: Any = None
    keep: str = "resolution"


def validate_search(
    similarity: Any,
    rotate: Any,
    same_dim: Any,
    show_progress: Any,
    processes: Any,
    chunksize: Any,
    options: Mapping[str, Any],
) -> SearchParams:
    """Check search()'s parameters in difPy's order; the first failure raises."""
    similarity = validate_similarity(similarity)
    rotate = _bool("rotate", rotate)
    same_dim = _bool("same_dim", same_dim)
    show_progress = _bool("show_progress", show_progress)
    processes = validate_processes(processes)
    chunksize = validate_chunksize(chunksize)
    _check_options("search", options, SEARCH_OPTIONS)
    return SearchParams(
        similarity,
        rotate,
        same_dim,
        show_progress,
        processes,
        chunksize,
        validate_placement(options),
        validate_keep(options.get("keep", "resolution")),
    )

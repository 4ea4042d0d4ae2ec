"""Validation of every user-facing parameter, with the messages users see (difPy's texts)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

DUPLICATES_MSE = 0
SIMILAR_MSE = 5
DECODE_MODES = ("exact", "fast")
BUILD_OPTIONS = ("storage_options", "catalog", "scheduler", "decode")
SEARCH_OPTIONS = ("scheduler",)


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


def _is_url(text: str) -> bool:
    return "://" in text


def normalize_input(entry: str) -> str:
    """One input as dupflow shows it: local paths via normpath, URLs without a trailing slash."""
    if _is_url(entry):
        protocol, rest = entry.split("://", 1)
        return f"{protocol}://{rest.rstrip('/')}" if rest.strip("/") else entry
    return os.path.normpath(entry)


def validate_directories(directory: tuple) -> list[str]:
    """Flatten, type-check and normalize the inputs; sorted, as difPy does."""
    if len(directory) == 0:
        raise ParameterError("Invalid directory parameter: no directory provided.")
    flat: list[str] = []
    for entry in directory:
        items = entry if isinstance(entry, (list, tuple)) else [entry]
        for item in items:
            if isinstance(item, os.PathLike):
                item = os.fspath(item)
            if not isinstance(item, str) or not item:
                raise ParameterTypeError(
                    "Invalid directory parameter: directories must be of type LIST or "
                    f"STRING (or os.PathLike), got {type(item).__name__}."
                )
            flat.append(normalize_input(item))
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
    except (TypeError, ValueError):
        raise (ParameterError if isinstance(value, str) else ParameterTypeError)(generic) from None
    if math.isnan(number):
        raise ParameterError(generic)
    if number < 0:
        raise ParameterError('Invalid value for "similarity" parameter: must be >= 0.')
    return number


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
        validate_scheduler(options.get("scheduler")),
        decode,
    )


def validate_scheduler(value: Any) -> Any:
    """None (a local cluster), a scheduler address, or a `distributed.Client`."""
    if value is None or isinstance(value, str):
        return value
    from distributed import Client

    if isinstance(value, Client):
        return value
    raise ParameterTypeError(
        'Invalid value for "scheduler" parameter: must be None (local cluster), an address '
        'such as "tcp://host:8786", or a distributed.Client.'
    )


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
        validate_scheduler(options.get("scheduler")),
    )

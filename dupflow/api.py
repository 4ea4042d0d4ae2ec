"""difPy-style objects: `build` lists and decodes into the catalog, `search` compares and groups."""

from __future__ import annotations

import logging
import os
import time
import weakref
from datetime import datetime
from typing import Any

import numpy as np

from . import __version__
from .actions import Removal, delete_files, move_files
from .catalog import CatalogError, CatalogRef, default_root, namespace
from .cluster import Engine
from .compare import MatchSpec, Scope, block_size, find_edges
from .groups import count_matches, greedy_groups, lower_quality, quality_order, result_dict
from .ingest import Decoded, ingest
from .params import ParameterError, ParameterTypeError, validate_build, validate_search
from .sources import Listing, list_files, redact
from .stats import build_stats, search_stats

log = logging.getLogger("dupflow")


class build:
    """List the inputs and decode every image into the catalog (difPy's `build`)."""

    def __init__(
        self,
        *directory: Any,
        recursive: bool = True,
        in_folder: bool = False,
        limit_extensions: bool = True,
        px_size: int = 50,
        show_progress: bool = True,
        processes: int | None = None,
        **options: Any,
    ):
        self._params = p = validate_build(
            directory, recursive, in_folder, limit_extensions, px_size, show_progress, processes, options
        )
        self._engine: Engine | None = None
        self._finalizer = None
        start = datetime.now()
        t0 = time.perf_counter()
        self._listing = list_files(p.directories, p.recursive, p.limit_extensions, p.storage_options)
        t1 = time.perf_counter()
        root = p.catalog or default_root()
        self._catalog = CatalogRef(namespace(root, p.px_size, p.decode), p.storage_options)
        try:
            self._decoded = self._ingest(self._listing, p.show_progress)
        except BaseException:
            self.close()  # a failed build leaves no cluster or connection behind
            raise
        t2 = time.perf_counter()
        decode_errors = {self._listing.path[i]: e for i, e in enumerate(self._decoded.error) if e is not None}
        invalid = {**decode_errors, **self._listing.invalid}
        parameters = {
            "recursive": p.recursive,
            "in_folder": p.in_folder,
            "limit_extensions": p.limit_extensions,
            "px_size": p.px_size,
            "processes": p.processes,
        }
        extra = {
            "version": __version__,
            "decode": p.decode,
            "catalog": redact(self._catalog.url),
            "decoded": self._decoded.decoded,
            "reused": self._decoded.reused,
            "removed": self._decoded.removed,
            "seconds": {"list": round(t1 - t0, 4), "decode": round(t2 - t1, 4)},
            "cluster": self._engine.describe() if self._engine else None,
        }
        self.stats = build_stats(
            [redact(d) for d in p.directories],
            len(self._valid),
            invalid,
            start,
            datetime.now(),
            parameters,
            extra,
        )

    @property
    def _valid(self) -> np.ndarray:
        """Positions of the images that decoded."""
        return np.array([i for i, e in enumerate(self._decoded.error) if e is None], dtype=np.int64)

    def _repair(self, shard: str) -> None:
        """Set aside a shard found damaged and decode its images again (never answer from it)."""
        log.warning("catalog shard %s is damaged: decoding its images again", shard)
        self._catalog.set_aside(shard)
        positions = [i for i, name in enumerate(self._decoded.shard) if name == shard]
        self._decoded.replace(positions, self._ingest(self._listing.subset(positions), False))

    def _ingest(self, listing: Listing, show_progress: bool) -> Decoded:
        """Catalog rows for these files, decoding what the catalog lacks."""
        p = self._params
        return ingest(
            listing, self._catalog, p.storage_options, p.px_size, p.decode, self._get_engine, show_progress
        )

    def _get_engine(self, images: int) -> Engine:
        """The cluster, started on first need (a fully reused catalog needs none) and closed with us."""
        if self._engine is None or self._engine.closed:
            # memory:// files exist only in this process: local workers must then be threads
            places = [*self._params.directories, self._params.catalog or ""]
            in_process = any(place.startswith("memory://") for place in places)
            self._engine = Engine(self._params.scheduler, self._params.processes, 0 if in_process else images)
            self._finalizer = weakref.finalize(self, self._engine.close)
        return self._engine

    def close(self) -> None:
        """Shut down the local cluster dupflow started, if any (a user's Client is left alone)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> build:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class search:
    """Compare the images of a build, group matches and pick the lower-quality files (difPy's `search`)."""

    def __init__(
        self,
        difpy_obj: build,
        similarity: Any = "duplicates",
        rotate: bool = True,
        same_dim: bool = True,
        show_progress: bool = True,
        processes: int | None = None,
        chunksize: int | None = None,
        **options: Any,
    ):
        p = validate_search(similarity, rotate, same_dim, show_progress, processes, chunksize, options)
        if not isinstance(difpy_obj, build):
            raise ParameterTypeError(
                'Invalid value for "difpy_obj" parameter: must be a dupflow.build object, '
                f"got {type(difpy_obj).__name__}."
            )
        self._build = b = difpy_obj
        bp = b._params
        start = datetime.now()
        t0 = time.perf_counter()
        listing, decoded = b._listing, b._decoded
        if p.scheduler is not None:
            engine = Engine(p.scheduler, p.processes)
            get_engine = lambda images: engine  # noqa: E731
        else:
            engine, get_engine = None, b._get_engine
        repaired: set[str] = set()
        try:
            while True:
                member_sets = self._member_sets()
                try:
                    edges = find_edges(
                        b._catalog,
                        decoded,
                        [Scope(members) for members in member_sets],
                        MatchSpec.from_threshold(bp.px_size, p.rotate, p.same_dim, p.similarity),
                        p.chunksize,
                        get_engine,
                        p.show_progress,
                    )
                    break
                except CatalogError as exc:  # never answer from a damaged shard: decode its images anew
                    if not exc.shard or exc.shard in repaired:
                        raise
                    repaired.add(exc.shard)
                    b._repair(exc.shard)
            cluster = (engine or b._engine).describe() if (engine or b._engine) else None
        finally:
            if engine is not None:
                engine.close()
        t1 = time.perf_counter()
        d = 3 * bp.px_size * bp.px_size
        pixels = decoded.width * decoded.height
        per_set = [
            greedy_groups(
                quality_order(members, pixels, listing.path, listing.mtime, listing.size, p.keep), i, j, sums
            )
            for members, (i, j, sums) in zip(member_sets, edges)
        ]
        self._groups = [group for groups in per_set for group in groups]
        self._edges, self._d = edges, d
        if bp.in_folder:
            self.result = {
                redact(folder): result_dict(groups, listing.path, d)
                for folder, groups in zip(bp.directories, per_set)
                if groups
            }
        else:
            self.result = result_dict(per_set[0], listing.path, d)
        self.lower_quality = sorted(set(lower_quality(self._groups, listing.path)))
        parameters = {
            "similarity_mse": p.similarity,
            "rotate": p.rotate,
            "same_dim": p.same_dim,
            "processes": p.processes,
            "chunksize": p.chunksize,
        }
        extra = {
            "edges": int(sum(len(e[0]) for e in edges)),
            "shards_repaired": len(repaired),
            "block_size": block_size(bp.px_size, p.chunksize),
            "seconds": {"compare": round(t1 - t0, 4), "group": round(time.perf_counter() - t1, 4)},
            "cluster": cluster,
        }
        self.stats = search_stats(
            b.stats, start, datetime.now(), parameters, len(b._valid), count_matches(self._groups), extra
        )
        self.journal: str | None = None

    def _member_sets(self) -> list[np.ndarray]:
        """The images compared together: all of them, or (in_folder) those of each input."""
        b = self._build
        valid = b._valid
        if not b._params.in_folder:
            return [valid]
        inputs = b._listing.inputs
        return [
            np.array([i for i in valid if k in inputs[i]], dtype=np.int64)
            for k in range(len(b._params.directories))
        ]

    @property
    def pairs(self) -> list[tuple[str, str, float]]:
        """Every matching pair found (path, path, mse), sorted; not just those the grouping kept."""
        paths = self._build._listing.path
        found = {
            tuple(sorted((paths[a], paths[b]))) + (s / self._d,)
            for i, j, sums in self._edges
            for a, b, s in zip(i.tolist(), j.tolist(), sums.tolist())
        }
        return sorted(found)

    def _removals(self) -> list[Removal]:
        listing = self._build._listing
        by_path = {}
        for primary, taken in self._groups:
            for m, _ in taken:
                by_path.setdefault(
                    listing.path[m],
                    Removal(
                        listing.path[m],
                        listing.url[m],
                        listing.size[m],
                        listing.stamp[m],
                        listing.url[primary],
                        listing.size[primary],
                        listing.stamp[primary],
                    ),
                )
        return [by_path[path] for path in self.lower_quality if path in by_path]

    def _primaries(self) -> set[str]:
        return {self._build._listing.url[primary] for primary, _ in self._groups}

    def move_to(self, destination_path: Any) -> None:
        """Move every lower-quality file into destination_path (journaled, never overwriting)."""
        if isinstance(destination_path, os.PathLike):
            destination_path = os.fspath(destination_path)
        if not isinstance(destination_path, str) or not destination_path:
            raise ParameterTypeError('Invalid value for "move_to" parameter: must be of type STR')
        if (
            "://" not in destination_path
            and os.path.exists(destination_path)
            and not os.path.isdir(destination_path)
        ):
            raise ParameterError(
                f'Invalid value for "move_to" parameter: "{destination_path}" is not a directory.'
            )
        bp = self._build._params
        moved, self.journal = move_files(
            self._removals(),
            destination_path,
            self._build._listing.roots,
            self._primaries(),
            bp.storage_options,
        )
        self.lower_quality = sorted(moved.get(path, path) for path in self.lower_quality)
        print(f'Moved {len(moved)} file(s) to "{destination_path}" (journal: {self.journal})')

    def delete(self, silent_del: bool = False) -> None:
        """Delete every lower-quality file, after asking unless silent_del (journaled; primaries kept)."""
        if not isinstance(silent_del, bool):
            raise ParameterTypeError('Invalid value for "silent_del" parameter: must be of type BOOL.')
        if not self.lower_quality:
            print("Deleted 0 file(s): nothing to delete.")
            return
        if not silent_del:
            answer = input(
                "Are you sure you want to delete all lower quality matched images? \n"
                "! This cannot be undone. (y/n)"
            )
            if str(answer).strip().lower() != "y":
                print("Deletion canceled.")
                return
        bp = self._build._params
        deleted, self.journal = delete_files(
            self._removals(), self._build._listing.roots, self._primaries(), bp.storage_options
        )
        print(f"Deleted {deleted} file(s) (journal: {self.journal})")

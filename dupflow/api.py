"""difPy-style objects: `build` lists and decodes into the catalog and answers match queries over its
images; `search` asks its build for the matching pairs, then groups them and acts on the result."""

from __future__ import annotations

import logging
import os
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import numpy as np

from . import __version__
from .actions import Removal, delete_files, move_files
from .catalog import CatalogError, CatalogRef, default_root, namespace
from .cluster import Engine
from .compare import Edges, MatchSpec, Scope, expand_stars, find_edges
from .groups import class_groups, count_matches, greedy_groups, lower_quality, quality_order, result_dict
from .ingest import Decoded, ingest
from .outputs import human_bytes
from .params import (
    BuildParams,
    ParameterError,
    ParameterTypeError,
    validate_build,
    validate_search,
)
from .similar import band_size
from .sources import Listing, is_remote, list_files, redact
from .stats import build_stats, json_number, search_stats

__all__ = ["Found", "build", "search"]

log = logging.getLogger("dupflow")


@dataclass(frozen=True)
class Found:
    """What a build answers to a match query: edges per scope, and how it got them."""

    edges: list[Edges]
    shards_repaired: int
    cluster: dict | None


class build:
    """List the inputs and decode every image into the catalog (difPy's ``build``).

    Decoded thumbnails are kept in a Parquet catalog keyed by (url, size, stamp), so a rerun over
    unchanged files decodes nothing. A build is then searched any number of times with `search`.

    Parameters
    ----------
    *directory : str, os.PathLike or list of them
        Folders, single files or fsspec URLs (``s3://...``, ``gs://...``, ``memory://...``).
        Inputs are sorted; a file listed by two overlapping inputs is counted once.
    recursive : bool, default True
        Walk sub-folders (and object prefixes below the input).
    in_folder : bool, default False
        Search each input alone; ``search.result`` is then keyed by input. When inputs overlap,
        each file belongs to the most specific input that contains it (the longest root).
    limit_extensions : bool, default True
        Keep difPy's image extensions (plus ``bmp``, and ``heic``/``heif``/``avif`` where a Pillow
        plugin reads them); other files go to ``stats["invalid_files"]`` as unsupported.
    px_size : int, default 50
        Side of the square thumbnails compared (10 to 5000).
    show_progress : bool, default True
        Show a progress bar while decoding.
    processes : int or None, default None
        Local Dask workers (threads or processes); None uses every core. Ignored by a cluster
        given with ``scheduler``.
    storage_options : dict, optional
        Keyword-only. fsspec options for remote inputs and catalog (credentials, endpoint, ...).
    catalog : str or os.PathLike, optional
        Keyword-only. Where the catalog lives (a folder or fsspec URL). Default:
        ``$XDG_CACHE_HOME/dupflow/catalog`` (``~/.cache/dupflow/catalog``).
    decode : {"exact", "fast"}, default "exact"
        Keyword-only. ``"exact"`` gives difPy's thumbnails bit for bit; ``"fast"`` decodes JPEGs
        at a reduced DCT scale first.
    reference : str, os.PathLike or list of them, optional
        Keyword-only. Reference inputs: searched against, never cleaned. Every ordinary image is
        compared with every reference image, reference images never with each other; a reference
        image is always a primary, never moved or deleted.
    scheduler : str, distributed.Client or cluster object, optional
        Keyword-only. Where the work runs: a scheduler address (``"tcp://host:8786"``), a Client,
        or a cluster object (LocalCluster, SLURMCluster, ...). None honours
        ``DASK_SCHEDULER_ADDRESS``, else starts a local cluster, closed with the build (or `close`).
    scheduler_file : str or os.PathLike, optional
        Keyword-only. Connect to the scheduler described in this file (instead of ``scheduler``).
    cluster : str or dict, optional
        Keyword-only. Start a named cluster (``"local"``, ``"slurm"``, ``"pbs"``, ``"sge"``,
        ``"kubernetes"``), or a dict with ``"name"`` and ``"workers"``, ``"adapt"`` (min, max),
        ``"lifetime"``, ``"lifetime_stagger"``, ``"options"``; configured in ``deploy/``.
    dashboard : bool, default False
        Keyword-only. Serve the Dask dashboard of a cluster dupflow starts.

    Attributes
    ----------
    stats : dict
        difPy's stats document for the build, with dupflow's own figures under ``"dupflow"``.
    files : Listing
        The listed files, in search order.
    catalog : CatalogRef
        Where the thumbnails live.
    images : Decoded
        Per listed file: where its thumbnail lives, its size, or why it could not be decoded.

    Raises
    ------
    ValueError
        A parameter value is not accepted (`dupflow.params.ParameterError`; the message says
        what is accepted), e.g. ``px_size=5``.
    TypeError
        A parameter has the wrong type or an unknown keyword is given
        (`dupflow.params.ParameterTypeError`).
    FileNotFoundError
        An input does not exist (`dupflow.sources.InputNotFound`).

    See Also
    --------
    search : compare the images of a build and group the matches.

    Examples
    --------
    >>> import dupflow
    >>> dif = dupflow.build("photos/", "s3://bucket/raw/", px_size=50)  # doctest: +SKIP
    >>> dif.stats["total_files"]  # doctest: +SKIP
    2048
    >>> dif.close()  # doctest: +SKIP
    """

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
        self._listing = list_files(
            p.directories, p.recursive, p.limit_extensions, p.storage_options, p.reference
        )
        t1 = time.perf_counter()
        root = p.catalog or default_root()
        self._catalog = CatalogRef(namespace(root, p.px_size, p.decode), p.storage_options)
        try:
            self._decoded = self._ingest(self._listing, p.show_progress)
        except BaseException:
            self.close()  # a failed build leaves no cluster or connection behind
            raise
        t2 = time.perf_counter()
        decode_errors = {self._listing.path[i]: e for i, e in sorted(self._decoded.error.items())}
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
        if p.reference:
            extra["reference"] = {
                "inputs": [redact(r) for r in p.reference],
                "files": int(self.reference[self.valid].sum()),
            }
        self.stats = build_stats(
            [redact(d) for d in p.directories],
            len(self.searched),
            invalid,
            start,
            datetime.now(),
            parameters,
            extra,
        )

    # ---- what a search reads ------------------------------------------------------------------

    @property
    def params(self) -> BuildParams:
        """The validated parameters of this build."""
        return self._params

    @property
    def files(self) -> Listing:
        """The listed files, in search order (paths, URLs, sizes, stamps, inputs, roots)."""
        return self._listing

    @property
    def catalog(self) -> CatalogRef:
        """Where this build's thumbnails live (a picklable handle workers open themselves)."""
        return self._catalog

    @property
    def images(self) -> Decoded:
        """Per listed file: its catalog row, size and summaries, or why it has none."""
        return self._decoded

    @property
    def valid(self) -> np.ndarray:
        """Positions of the images that decoded."""
        return self._decoded.valid()

    @property
    def reference(self) -> np.ndarray:
        """Per listed file: True for a reference file (searched against, never cleaned)."""
        return np.array(self._listing.reference, dtype=bool).reshape(len(self._listing))

    @property
    def searched(self) -> np.ndarray:
        """Positions of the ordinary (not reference) images that decoded: the ones a search may clean."""
        valid = self.valid
        return valid[~self.reference[valid]]

    def scopes(self) -> list[Scope]:
        """The images compared together: all of them, or (in_folder) those of each input; each scope
        with every reference image (compared with the members, never with each other).

        With in_folder, a file listed by overlapping inputs belongs to the most specific one only.
        """
        searched, valid = self.searched, self.valid
        reference = valid[self.reference[valid]]
        if not self._params.in_folder:
            return [Scope(searched, reference)]
        owner = self._listing.owners[searched]
        return [Scope(searched[owner == k], reference) for k in range(len(self._params.directories))]

    def find_edges(
        self,
        scopes: list[Scope],
        spec: MatchSpec,
        chunksize: int | None = None,
        show_progress: bool = False,
        scheduler: Any = None,
        processes: int | None = None,
    ) -> Found:
        """Every matching pair of each scope, read from this build's catalog.

        A shard found damaged is set aside and its images decoded again, then the query reruns:
        never an answer from a damaged shard. `scheduler` runs the query on another cluster; else
        this build's cluster runs it, or a local one of `processes` workers when that differs.
        """
        get_engine, current, owned = self._query_engine(scheduler, processes)
        repaired: set[str] = set()
        try:
            while True:
                try:
                    edges = find_edges(
                        self._catalog, self._decoded, scopes, spec, chunksize, get_engine, show_progress
                    )
                    break
                except CatalogError as exc:
                    if not exc.shard or exc.shard in repaired:
                        raise
                    repaired.add(exc.shard)
                    self._repair(exc.shard)
            engine = current()
            cluster = engine.describe() if engine is not None else None
        finally:
            if owned and current() is not None:
                current().close()
        return Found(edges, len(repaired), cluster)

    def _query_engine(
        self, scheduler: Any, processes: int | None
    ) -> tuple[Callable[[int], Engine], Callable[[], Engine | None], bool]:
        """The cluster a query runs on (started on first need), the one it started, and whether the
        query owns it: the build's own cluster unless another scheduler or a different size is asked."""
        p = self._params
        if scheduler is None and (processes in (None, p.processes) or p.scheduler is not None):
            return self._get_engine, lambda: self._engine, False
        own: list[Engine] = []

        def get_engine(images: int) -> Engine:
            if not own:
                if scheduler is not None:
                    own.append(Engine(scheduler, processes or p.processes))
                else:
                    own.append(Engine(None, processes, 0 if self._in_process else images))
                own[0].check_workers_see(self._catalog, self._listing.roots)
            return own[0]

        return get_engine, lambda: own[0] if own else None, True

    # ---- the build's own state ----------------------------------------------------------------

    @property
    def _in_process(self) -> bool:
        """memory:// files exist only in this process: local workers must then be threads."""
        places = [*self._params.directories, *self._params.reference, self._params.catalog or ""]
        return any(place.startswith("memory://") for place in places)

    def _repair(self, shard: str) -> None:
        """Set aside a shard found damaged and decode its images again (never answer from it)."""
        log.warning("catalog shard %s is damaged: decoding its images again", shard)
        self._catalog.set_aside(shard)
        positions = self._decoded.positions_in(shard)
        self._decoded.replace(positions, self._ingest(self._listing.subset(positions.tolist()), False))

    def _ingest(self, listing: Listing, show_progress: bool) -> Decoded:
        """Catalog rows for these files, decoding what the catalog lacks."""
        p = self._params
        return ingest(
            listing, self._catalog, p.storage_options, p.px_size, p.decode, self._get_engine, show_progress
        )

    def _get_engine(self, images: int) -> Engine:
        """The cluster, started on first need (a fully reused catalog needs none) and closed with us."""
        if self._engine is None or self._engine.closed:
            self._engine = Engine(
                self._params.scheduler, self._params.processes, 0 if self._in_process else images
            )
            self._finalizer = weakref.finalize(self, self._engine.close)
            self._engine.check_workers_see(self._catalog, self._listing.roots)
        return self._engine

    def close(self) -> None:
        """Shut down the local cluster dupflow started, if any (a user's Client is left alone)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> build:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _linked(positions: np.ndarray, edges: Edges) -> np.ndarray:
    """The positions that take part in some match: a reference image without one forms no group, and a
    large reference need not be ranked."""
    return positions[np.isin(positions, np.concatenate(edges[:2]))]


def _groups(ranking: list[int], edges: Edges, spec: MatchSpec, reference: np.ndarray) -> list:
    """Groups of one scope: threshold 0 gives star edges of equal classes (compare.find_edges)."""
    i, j, sums = edges
    return class_groups(ranking, i, j, reference) if spec.limit == 0 else greedy_groups(ranking, i, j, sums)


class search:
    """Compare the images of a build, group the matches and pick the lower-quality files (difPy's
    ``search``).

    Every pair is compared with the exact mean squared error of the thumbnails (0..255 scale), over
    all four quarter turns when `rotate`. Images are ranked by quality (pixels, then older, larger,
    path); walking that ranking, each image not yet placed becomes a primary and takes every
    unplaced image that matches it.

    Parameters
    ----------
    difpy_obj : build
        The build to search.
    similarity : {"duplicates", "similar"} or float, default "duplicates"
        The largest MSE that is a match: ``"duplicates"`` is 0, ``"similar"`` is 5, a number (or
        numeric string) is itself (>= 0; ``inf`` matches every pair). The decision is exact.
    rotate : bool, default True
        Also match an image turned by 90, 180 or 270 degrees.
    same_dim : bool, default True
        Only compare images whose {width, height} are equal (as unordered pairs).
    show_progress : bool, default True
        Show a progress bar while comparing.
    processes : int or None, default None
        Local Dask workers for the comparison; None uses every core. The build's local cluster is
        reused when its size is the same; otherwise a local cluster of this size runs the search.
        Ignored when a cluster was given with ``scheduler`` (to the build or the search).
    chunksize : int or None, default None
        Images per compare block; None fits 16 MiB of thumbnails per block.
    keep : {"resolution", "oldest", "newest", "largest"}, default "resolution"
        Keyword-only. Which image of a group is kept (the primary): the most pixels (then the
        oldest, the largest file, the path), the oldest or newest file, or the largest file. It
        never changes which pairs match.
    scheduler : str, distributed.Client or cluster object, optional
        Keyword-only. Run the comparison on this cluster instead of the build's.
    scheduler_file : str or os.PathLike, optional
        Keyword-only. Run the comparison on the scheduler described in this file.
    cluster : str or dict, optional
        Keyword-only. Run the comparison on a cluster started for it (as for `build`).
    dashboard : bool, default False
        Keyword-only. Serve the Dask dashboard of a cluster dupflow starts.

    Attributes
    ----------
    result : dict
        ``{primary: [[match, mse], ...]}``, primaries in ranking order, matches by ascending MSE
        then path; with in_folder, ``{input: {primary: [...]}}``.
    lower_quality : list of str
        Every match of every group (never a primary), sorted.
    stats : dict
        difPy's stats document (this search's own copy), dupflow's figures under ``"dupflow"``.
    pairs : list of tuple
        Every matching pair ``(path, path, mse)``, not just those the grouping kept.
    journal : str or None
        The journal of the last `move_to` or `delete` that acted, for `dupflow.undo`.
    journals : list of str
        Every journal this search wrote, in order (one per `move_to` / `delete`).

    Raises
    ------
    ValueError
        A parameter value is not accepted (`dupflow.params.ParameterError`), e.g. a negative or
        NaN similarity, or one too large to be a float.
    TypeError
        A parameter has the wrong type, ``difpy_obj`` is not a build, or an unknown keyword is
        given (`dupflow.params.ParameterTypeError`).

    See Also
    --------
    build : list and decode the inputs.
    dupflow.undo : put moved files back.

    Examples
    --------
    >>> import dupflow
    >>> dif = dupflow.build("photos/")  # doctest: +SKIP
    >>> found = dupflow.search(dif, similarity="similar")  # doctest: +SKIP
    >>> found.result  # doctest: +SKIP
    {'photos/a.png': [['photos/a_copy.png', 0.0]]}
    >>> found.lower_quality  # doctest: +SKIP
    ['photos/a_copy.png']
    """

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
        bp, files, images = b.params, b.files, b.images
        start = datetime.now()
        t0 = time.perf_counter()
        scopes = b.scopes()
        spec = MatchSpec.from_threshold(bp.px_size, p.rotate, p.same_dim, p.similarity)
        found = b.find_edges(scopes, spec, p.chunksize, p.show_progress, p.scheduler, p.processes)
        t1 = time.perf_counter()
        pixels = images.width * images.height
        per_scope = [
            _groups(
                quality_order(
                    np.concatenate([_linked(scope.reference, edges), scope.members]),
                    pixels,
                    files.path,
                    files.mtime,
                    files.size,
                    p.keep,
                    b.reference,
                ),
                edges,
                spec,
                b.reference,
            )
            for scope, edges in zip(scopes, found.edges)
        ]
        self._groups = [group for groups in per_scope for group in groups]
        self._edges, self._d, self._stars = found.edges, spec.d, spec.limit == 0
        if bp.in_folder:
            self.result = {
                redact(folder): result_dict(groups, files.path, spec.d)
                for folder, groups in zip(bp.directories, per_scope)
                if groups
            }
        else:
            self.result = result_dict(per_scope[0], files.path, spec.d)
        self.lower_quality = sorted(set(lower_quality(self._groups, files.path)))
        parameters = {
            "similarity_mse": json_number(p.similarity),
            "rotate": p.rotate,
            "same_dim": p.same_dim,
            "processes": p.processes,
            "chunksize": p.chunksize,
        }
        extra = {
            "edges": int(sum(len(e[0]) for e in found.edges)),
            "shards_repaired": found.shards_repaired,
            "band_size": band_size(p.chunksize),
            "seconds": {"compare": round(t1 - t0, 4), "group": round(time.perf_counter() - t1, 4)},
            "cluster": found.cluster,
        }
        self.stats = search_stats(
            b.stats, start, datetime.now(), parameters, len(b.searched), count_matches(self._groups), extra
        )
        self.journal: str | None = None  # the last journal written (of journals)
        self.journals: list[str] = []  # one per move_to / delete that acted, in order

    @property
    def pairs(self) -> list[tuple[str, str, float]]:
        """Every matching pair found (path, path, mse), sorted; not just those the grouping kept."""
        paths = self._build.files.path
        found = {
            tuple(sorted((paths[a], paths[b]))) + (s / self._d,)
            for i, j, sums in (
                expand_stars(e, self._build.reference) if self._stars else e for e in self._edges
            )
            for a, b, s in zip(i.tolist(), j.tolist(), sums.tolist())
        }
        return sorted(found)

    def _removals(self) -> list[Removal]:
        """Each lower-quality file as scanned, with the primary that keeps its content."""
        files = self._build.files
        by_path = {}
        for primary, taken in self._groups:
            for m, _ in taken:
                by_path.setdefault(
                    files.path[m],
                    Removal(
                        files.path[m],
                        files.url[m],
                        int(files.size[m]),
                        files.stamp[m],
                        files.url[primary],
                        int(files.size[primary]),
                        files.stamp[primary],
                    ),
                )
        return [by_path[path] for path in self.lower_quality if path in by_path]

    def _primaries(self) -> set[str]:
        """Files never removed: every group's primary and every reference file."""
        files = self._build.files
        kept = {files.url[primary] for primary, _ in self._groups}
        return kept | {url for url, ref in zip(files.url, files.reference) if ref}

    def move_to(self, destination_path: Any) -> None:
        """Move every lower-quality file into a folder, journaled first, never overwriting.

        Same-named files get distinct names (``name_1.png``, ...). A file changed since the scan, a
        primary, or a file outside the searched inputs is left alone (logged and journaled).
        Afterwards ``lower_quality`` lists the new paths and ``journal`` the journal's path.

        Parameters
        ----------
        destination_path : str or os.PathLike
            A local folder (created if missing) or an fsspec URL (``s3://bucket/quarantine``).

        Returns
        -------
        None

        Raises
        ------
        TypeError
            `destination_path` is not a non-empty string or path
            (`dupflow.params.ParameterTypeError`).
        ValueError
            `destination_path` exists and is not a folder, or cannot be created
            (`dupflow.params.ParameterError`).

        Examples
        --------
        >>> found = dupflow.search(dupflow.build("photos/"))  # doctest: +SKIP
        >>> found.move_to("quarantine/")  # doctest: +SKIP
        Moved 3 file(s) to "quarantine/" (journal: ...)
        >>> dupflow.undo(found.journal)  # doctest: +SKIP
        {'restored': 3, 'skipped': 0, 'not_restorable': 0}
        """
        if isinstance(destination_path, os.PathLike):
            destination_path = os.fspath(destination_path)
        if not isinstance(destination_path, str) or not destination_path:
            raise ParameterTypeError('Invalid value for "move_to" parameter: must be of type STR')
        if (
            not is_remote(destination_path)
            and os.path.exists(destination_path)
            and not os.path.isdir(destination_path)
        ):
            raise ParameterError(
                f'Invalid value for "move_to" parameter: "{destination_path}" is not a directory.'
            )
        moved, journal = move_files(
            self._removals(),
            destination_path,
            self._build.files.roots,
            self._primaries(),
            self._build.params.storage_options,
        )
        self.journals.append(journal)
        self.journal = journal
        self.lower_quality = sorted(moved.get(path, path) for path in self.lower_quality)
        print(f'Moved {len(moved)} file(s) to "{destination_path}" (journal: {self.journal})')

    def delete(self, silent_del: bool = False) -> None:
        """Delete every lower-quality file, after asking unless `silent_del`; journaled first.

        A primary, a file changed since the scan, or one outside the searched inputs is never
        deleted. Deletions are recorded in ``journal`` but cannot be undone.

        Parameters
        ----------
        silent_del : bool, default False
            Delete without asking for confirmation on the terminal.

        Returns
        -------
        None

        Raises
        ------
        TypeError
            `silent_del` is not a bool (`dupflow.params.ParameterTypeError`).

        Examples
        --------
        >>> found = dupflow.search(dupflow.build("photos/"))  # doctest: +SKIP
        >>> found.delete(silent_del=True)  # doctest: +SKIP
        Deleted 3 file(s) (journal: ...)
        """
        if not isinstance(silent_del, bool):
            raise ParameterTypeError('Invalid value for "silent_del" parameter: must be of type BOOL.')
        removals = self._removals()
        if not removals:  # none left (or all moved away already): no journal, `journal` stays as it was
            print("Deleted 0 file(s): nothing to delete.")
            return
        if not silent_del:
            total = sum(max(item.size, 0) for item in removals)
            answer = input(
                f"Are you sure you want to delete {len(removals)} lower quality matched image(s) "
                f"({human_bytes(total)})? \n! This cannot be undone. (y/n)"
            )
            if str(answer).strip().lower() != "y":
                print("Deletion canceled.")
                return
        deleted, journal = delete_files(
            removals,
            self._build.files.roots,
            self._primaries(),
            self._build.params.storage_options,
        )
        self.journals.append(journal)
        self.journal = journal
        print(f"Deleted {deleted} file(s) (journal: {self.journal})")

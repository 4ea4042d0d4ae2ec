"""Where the work runs: the user's Client, cluster object, address or scheduler file; a cluster built by name
from Dask's own configuration (local, SLURM, PBS, SGE, Kubernetes); DASK_SCHEDULER_ADDRESS; or, with none of
these, a local cluster on loopback that serves no HTTP.

dupflow closes exactly what it started: its own Client always, a cluster (and so its batch jobs) only when
it created it, on errors, Ctrl-C, SIGTERM and garbage collection too. Workers read the catalog themselves,
so before any work each worker proves that it sees the catalog the client writes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import signal
import sys
import threading
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from . import allocator
from .sources import is_remote, local_path, redact

__all__ = [
    "CLUSTER_NAMES",
    "cluster_options",
    "make_cluster",
    "Engine",
    "Placement",
    "WorkersCannotSeeCatalog",
    "is_cluster",
]

log = logging.getLogger("dupflow")

PROCESS_MIN_IMAGES = 2000  # below this, local workers are threads: no process start-up to pay for
PROCESS_MIN_WORKERS = 4  # with fewer workers, threads measured faster (2 cores: 2,000 photos decode in
# 5.8 s on threads vs 7.4 s on processes; 10,000 fast-decoded 15.5 s vs 17.1 s)
LOOPBACK = "127.0.0.1"
DASHBOARD_ADDRESS = f"{LOOPBACK}:8787"  # moves to a free port by itself when 8787 is taken

# --cluster NAME -> (module, class, pip package): imported only when asked for (importing dask_jobqueue
# writes its default configuration into ~/.config/dask)
CLUSTER_CLASSES = {
    "local": ("distributed", "LocalCluster", "distributed"),
    "slurm": ("dask_jobqueue", "SLURMCluster", "dask-jobqueue"),
    "pbs": ("dask_jobqueue", "PBSCluster", "dask-jobqueue"),
    "sge": ("dask_jobqueue", "SGECluster", "dask-jobqueue"),
    "kubernetes": ("dask_kubernetes.operator", "KubeCluster", "dask-kubernetes"),
}
CLUSTER_NAMES = tuple(CLUSTER_CLASSES)
JOBQUEUE = ("slurm", "pbs", "sge")


@dataclass(frozen=True)
class Placement:
    """Where the user asked the work to run (validated by `params.validate_placement`).

    At most one of `scheduler` (a Client, a cluster object or an address), `scheduler_file` and `cluster`
    (a name from CLUSTER_NAMES) is set; `workers`, `adapt`, `lifetime`, `lifetime_stagger` and `options`
    (keyword arguments for the cluster class) shape a named cluster; `dashboard` asks for the HTTP dashboard.
    """

    scheduler: Any = None
    scheduler_file: str | None = None
    cluster: str | None = None
    workers: int | None = None
    adapt: tuple[int, int] | None = None
    lifetime: str | None = None
    lifetime_stagger: str | None = None
    dashboard: bool = False
    options: dict = field(default_factory=dict)


class WorkersCannotSeeCatalog(RuntimeError):
    """Some Dask worker does not see the catalog (or an input) the client sees: nothing was decoded."""


def is_cluster(value: Any) -> bool:
    """A distributed cluster object (LocalCluster, dask-jobqueue, dask-kubernetes, ...): it has an address."""
    from distributed.deploy import Cluster

    return isinstance(value, Cluster) or (
        not isinstance(value, (str, bytes)) and hasattr(type(value), "scheduler_address")
    )


# ---- the embedded cluster: loopback only, no HTTP ----------------------------------------------------


def _no_http_server(server: Any) -> None:
    """Give a server the empty HTTP application distributed expects, without listening anywhere."""
    from distributed.http.routing import RoutingApplication

    server.http_application = RoutingApplication([])


def _quiet_scheduler_class() -> type:
    from distributed import Scheduler

    class QuietScheduler(Scheduler):
        """A scheduler that serves no HTTP (distributed always starts /info, /metrics, /proxy otherwise)."""

        def start_http_server(self, routes, dashboard_address, default_port=0, ssl_options=None):
            _no_http_server(self)

    return QuietScheduler


@functools.cache
def _worker_class() -> type:
    from distributed import Worker

    class QuietWorker(Worker):
        """A worker that serves no HTTP (distributed starts /metrics and /health on a random port)."""

        def start_http_server(self, routes, dashboard_address, default_port=0, ssl_options=None):
            _no_http_server(self)

    QuietWorker.__qualname__ = "QuietWorker"  # pickled by reference: module __getattr__ returns this class
    return QuietWorker


def __getattr__(name: str) -> Any:
    """`QuietWorker`, importable by name for worker processes started by a Nanny (distributed loads lazily)."""
    if name == "QuietWorker":
        return _worker_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextmanager
def _workers_skip_main() -> Iterator[None]:
    """Start spawned workers without re-running the caller's script, so no __main__ guard is needed.

    Workers only run dupflow's own functions; multiprocessing re-imports __main__ in each spawned child
    only when it has a __file__ or __spec__, which difPy users without the guard trip over.
    """
    main = sys.modules.get("__main__")
    saved = {key: getattr(main, key) for key in ("__file__", "__spec__") if hasattr(main, key)}
    try:
        if "__file__" in saved:
            del main.__file__
        if "__spec__" in saved:
            main.__spec__ = None
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


QUIET_LOGGERS = ("distributed", "dask_jobqueue", "dask_kubernetes")
_quiet = {"holders": 0, "levels": []}
_quiet_lock = threading.Lock()


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep distributed's chatter (connect, retire, close; a worker slow to exit on a busy machine) out of
    the user's log while dupflow's own cluster runs, errors only, as LocalCluster's silence_logs does, and
    whatever level the user's logging is at; overlapping holders (a build's and a search's clusters)
    restore the user's levels once, when the last one ends."""
    with _quiet_lock:
        if _quiet["holders"] == 0:
            loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
            _quiet["levels"] = [(logger, logger.level) for logger in loggers]
            for logger in loggers:
                logger.setLevel(max(logger.getEffectiveLevel(), logging.ERROR))
        _quiet["holders"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["holders"] -= 1
            if _quiet["holders"] == 0:
                for logger, level in _quiet["levels"]:
                    logger.setLevel(level)


def _embedded(processes: int, use_processes: bool, dashboard: bool) -> Any:
    """A local cluster listening on 127.0.0.1 only (threads: in-process, no socket at all)."""
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    protocol = "tcp://" if use_processes else "inproc://"
    host = LOOPBACK if use_processes else None
    scheduler = {
        "cls": Scheduler if dashboard else _quiet_scheduler_class(),
        "options": {
            "host": host,
            "protocol": protocol,
            "dashboard": dashboard,
            "dashboard_address": DASHBOARD_ADDRESS if dashboard else None,
        },
    }
    common = {"host": host, "protocol": protocol, "dashboard": False, "silence_logs": logging.ERROR}
    if use_processes:
        options = {
            **common,
            "nthreads": 1,
            "memory_limit": MEMORY_LIMIT // processes,
            "worker_class": _worker_class(),
            "preload": [allocator.__name__],  # dupflow's own worker processes decode: see allocator.py
        }
        worker = {"cls": Nanny, "options": options}
        count = processes
    else:
        options = {**common, "nthreads": processes, "memory_limit": MEMORY_LIMIT}
        worker = {"cls": _worker_class(), "options": options}
        count = 1
    with _workers_skip_main(), _quiet_logs(), warnings.catch_warnings():
        # a dashboard moves off a busy port 8787 by itself: nothing to warn about
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        return SpecCluster(
            scheduler=scheduler,
            workers={k: worker for k in range(count)},
            worker=worker,
            silence_logs=logging.ERROR,
        )


# ---- clusters built by name from Dask's configuration ------------------------------------------------


def _cluster_class(name: str) -> type:
    module, attribute, package = CLUSTER_CLASSES[name]
    in_main = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if in_main else None
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError as exc:
        raise ImportError(
            f'cluster "{name}" needs the {package} package ({exc}): pip install "dupflow[cluster]"'
        ) from None
    finally:
        if in_main:  # dask_jobqueue.runner makes Ctrl-C a silent exit 0 when imported: keep Ctrl-C as it was
            signal.signal(signal.SIGINT, sigint)


def _lifetime_options(where: Placement) -> dict:
    """Retire each worker gracefully before the queue's walltime kills it (its tasks move elsewhere)."""
    if not where.lifetime:
        return {}
    stagger = where.lifetime_stagger or "0s"
    name = where.cluster
    if name in JOBQUEUE:
        import dask

        configured = dask.config.get(f"jobqueue.{name}.worker-extra-args", None) or []
        lifetime = ["--lifetime", where.lifetime, "--lifetime-stagger", stagger]
        return {"worker_extra_args": [*configured, *lifetime]}
    if name == "kubernetes":
        return {
            "env": {
                "DASK_DISTRIBUTED__WORKER__LIFETIME__DURATION": where.lifetime,
                "DASK_DISTRIBUTED__WORKER__LIFETIME__STAGGER": stagger,
            }
        }
    return {"lifetime": where.lifetime, "lifetime_stagger": stagger, "lifetime_restart": True}


def cluster_options(where: Placement) -> dict:
    """Keyword arguments for the named cluster's class, on top of what dask.config / jobqueue.yaml say."""
    options: dict[str, Any] = {}
    if where.cluster == "local":
        options.update(n_workers=0, dashboard_address=DASHBOARD_ADDRESS if where.dashboard else None)
    elif where.cluster in JOBQUEUE and not where.dashboard:
        options["scheduler_cls"] = _quiet_scheduler_class()
    options.update(_lifetime_options(where))
    options.update(where.options)
    return options


def make_cluster(where: Placement) -> Any:
    """The named cluster's object with no worker asked for yet: `_named` then sizes it; alone, it shows
    the job script dupflow would submit (`make_cluster(p).job_script()`)."""
    with _workers_skip_main(), _quiet_logs():
        return _cluster_class(where.cluster)(**cluster_options(where))


def _named(where: Placement) -> Any:
    """Start the named cluster from dask.config / jobqueue.yaml, sized by workers or adaptive bounds."""
    cluster = make_cluster(where)
    with _workers_skip_main(), _quiet_logs():
        try:
            workers = where.workers or 1
            if where.adapt:
                cluster.adapt(minimum=where.adapt[0], maximum=where.adapt[1])
            elif where.lifetime:  # a fixed size that replaces each retired worker
                cluster.adapt(minimum=workers, maximum=workers)
            else:
                cluster.scale(workers)
        except BaseException:
            cluster.close()
            raise
    return cluster


@contextmanager
def _no_sigterm_kill() -> Iterator[None]:
    """While batch jobs run for us, SIGTERM (scancel, kill) unwinds like Ctrl-C so they are cancelled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- checks run on every worker ----------------------------------------------------------------------


def _sees(catalog: Any, probe: str, token: str, roots: list[str]) -> tuple[str | None, list[str]]:
    """On a worker: why the probe written by the client cannot be read here (None if it can), and
    which local input roots do not exist here."""
    reason = None
    try:
        fs, _ = catalog.fs()
        if fs.cat_file(probe) != token.encode():
            reason = "a different file at the same path"
    except Exception as exc:  # any failure means: this worker does not see that catalog
        reason = f"{type(exc).__name__}: {exc}"
    return reason, [root for root in roots if not os.path.lexists(root)]  # a link the client saw is seen


class Engine:
    """A distributed Client plus what dupflow started and must close (the Client, and maybe a cluster).

    Parameters
    ----------
    placement : Placement, distributed.Client, cluster object, str or None
        Where to run (see `Placement`); None honours DASK_SCHEDULER_ADDRESS / dask's ``scheduler-address``
        config, else starts a local cluster: worker processes for big jobs on machines with many cores,
        otherwise threads in this process (Pillow and BLAS release the GIL; start-up is near zero).
    processes : int
        Local workers for the embedded cluster.
    images : int
        Images the first piece of work holds (small jobs stay on threads).
    """

    def __init__(self, placement: Any = None, processes: int = 1, images: int = PROCESS_MIN_IMAGES):
        if not isinstance(placement, Placement):
            placement = Placement(scheduler=placement)
        self._cluster: Any = None
        self._lock = threading.Lock()
        self._held = contextlib.ExitStack()  # quiet logs, SIGTERM handling: released by close
        self.owned = False
        self.checked = False
        import distributed  # noqa: F401 (importing it sets its loggers' levels: quiet them after that)

        self._held.enter_context(_quiet_logs())
        self.client, self.kind = self._connect(placement, processes, images)
        if not self.owned:  # the user's own Client: their logging stays as they set it
            self._held.close()
        if placement.dashboard:
            print(f"dupflow: Dask dashboard at {self.dashboard_link}", file=sys.stderr)

    def _connect(self, where: Placement, processes: int, images: int) -> tuple[Any, str]:
        import dask
        from distributed import Client

        target = where.scheduler
        if isinstance(target, Client):
            return target, "client"
        if target is not None and is_cluster(target):
            return self._client(Client, target), "cluster"
        if isinstance(target, str):
            return self._client(Client, target), "address"
        if where.scheduler_file:
            return self._client(Client, scheduler_file=where.scheduler_file), "scheduler file"
        if where.cluster:
            self._held.enter_context(_no_sigterm_kill())
            try:
                self._cluster = _named(where)
                return self._client(Client, self._cluster), where.cluster
            except BaseException:
                self.close()
                raise
        address = dask.config.get("scheduler-address", None)
        if address:
            return self._client(Client, address), "address"
        use_processes = images >= PROCESS_MIN_IMAGES and processes >= PROCESS_MIN_WORKERS
        self._cluster = _embedded(processes, use_processes, where.dashboard)
        try:
            client = self._client(Client, self._cluster)
        except BaseException:
            self.close()
            raise
        return client, "local processes" if use_processes else "local threads"

    def _client(self, make: type, *args: Any, **kwargs: Any) -> Any:
        """A Client of ours (closed by `close`), not made the process-wide default."""
        client = make(*args, set_as_default=False, **kwargs)
        self.owned = True
        return client

    @property
    def dashboard_link(self) -> str:
        """The dashboard's URL (the embedded one listens on loopback, whatever the host's name)."""
        http = getattr(getattr(self._cluster, "scheduler", None), "http_server", None)
        if self.kind.startswith("local ") and http is not None:
            return f"http://{LOOPBACK}:{http.port}/status"
        return self.client.dashboard_link

    @property
    def workers(self) -> int:
        """Worker threads now connected (at least 1, for sizing partitions)."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {}).values()
        return max(1, sum(w.get("nthreads", 1) for w in workers))

    @property
    def memory(self) -> int:
        """Bytes the connected workers may hold, together (their memory limits; this machine's memory
        for workers without one)."""
        from distributed.system import MEMORY_LIMIT

        workers = self.client.scheduler_info(n_workers=-1).get("workers", {}).values()
        return max(1, sum(w.get("memory_limit") or MEMORY_LIMIT for w in workers))

    @property
    def closed(self) -> bool:
        return self.client.status in ("closing", "closed")

    @property
    def in_process(self) -> bool:
        """True when the workers are threads of this process (they see everything the client sees)."""
        return self.kind == "local threads"

    def describe(self) -> dict:
        """What stats report about the cluster (no addresses, which can carry credentials)."""
        return {"kind": self.kind, "threads": self.workers}

    def check_workers_see(self, catalog: Any, roots: Iterable[str] = ()) -> None:
        """Fail before any work unless every worker reads the probe file this client writes into the
        catalog (and sees every local input root): a folder that exists only on the client's host would
        otherwise be filled by workers on their own disks.

        Raises
        ------
        WorkersCannotSeeCatalog
            One line naming the catalog (or input) and what to use instead.
        """
        if self.checked or self.in_process:
            return
        local_roots = sorted({local_path(root) for root in roots if not is_remote(root)})
        fs, base = catalog.fs()
        token = uuid.uuid4().hex
        probe = f"{base}/.probe-{token}"
        if not catalog.on_object_store:
            fs.makedirs(base, exist_ok=True)
        try:
            fs.pipe_file(probe, token.encode())
        except FileNotFoundError as exc:  # e.g. no such bucket: say which catalog
            raise FileNotFoundError(f'catalog "{redact(catalog.url)}" cannot be written: {exc}') from None
        try:
            self.client.wait_for_workers(1)
            seen = self.client.run(_sees, catalog, probe, token, local_roots)
        finally:
            with contextlib.suppress(Exception):
                fs.rm_file(probe)
        blind = {worker: reason for worker, (reason, _) in seen.items() if reason}
        if blind:
            raise WorkersCannotSeeCatalog(
                f'{len(blind)} of {len(seen)} Dask workers cannot see the catalog "{redact(catalog.url)}" '
                f"({next(iter(blind.values()))}): use a catalog path shared by this machine and every "
                'worker, or a bucket (catalog="s3://...")'
            )
        missing = sorted({root for _, roots_missing in seen.values() for root in roots_missing})
        if missing:
            raise WorkersCannotSeeCatalog(
                f'Dask workers cannot see the input "{missing[0]}": use a path shared by this machine and '
                "every worker, or a bucket"
            )
        self.checked = True

    def run(self, tasks: Iterable, desc: str, show_progress: bool, images: int | None = None) -> list:
        """Compute Dask delayed objects on the cluster, in order, with an optional progress bar.

        With `images`, the bar counts images (shared evenly among the tasks), else tasks.
        """
        import dask
        from distributed import as_completed

        from .progress import progress_bar, task_weights

        tasks = list(tasks)
        if not tasks:
            return []
        # a plan carries tens of bytes per image by design (addresses, never tensors): warn only beyond that
        graph_limit = max(10 * 2**20, 128 * (images or 0))
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": graph_limit}):
            futures = self.client.compute(tasks)
        weights = task_weights(len(futures), images)
        total, unit = (images, "images") if images is not None else (len(futures), "tasks")
        with progress_bar(total, desc, show_progress, unit) as bar:
            for k, _ in enumerate(as_completed(futures, loop=self.client.loop)):
                bar.update(weights[k])
        results = self.client.gather(futures)
        del futures
        return results

    def close(self) -> None:
        """Close what dupflow started (its Client; its cluster and so its batch jobs), quietly; a user's
        Client or cluster is left alone."""
        with self._lock:
            client = getattr(self, "client", None)
            cluster, self._cluster = self._cluster, None
            owned, self.owned = self.owned, False
            try:
                try:
                    if owned and client is not None:
                        client.close()
                finally:
                    if cluster is not None:
                        cluster.close()
            finally:
                self._held.close()

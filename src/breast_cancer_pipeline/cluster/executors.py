"""Run per-image tasks on this machine or on a Dask cluster, a bounded window at a time.

``cluster.address`` says where:

* ``null``: this machine, as without a cluster (the conversion's process pool, the arrays in
  the Kedro process);
* ``local``: a ``distributed.LocalCluster`` started for the run on 127.0.0.1, with one
  single-threaded worker process per worker the stage asks for (``ingestion.workers`` for the
  conversion);
* ``tcp://host:8786``: the scheduler of a running cluster (``dask scheduler`` and
  ``dask worker``, dask-jobqueue on SLURM, dask-kubernetes).

A task is a picklable callable and its arguments; it must read and write only what every
worker can reach (a shared filesystem mounted at the same path). The calls travel in batches
of ``cluster.batch_size`` (one Dask task each: what a task costs to schedule and to bring
back is shared by its images), and the client keeps ``cluster.tasks_per_worker`` batches in
flight per worker thread, submitting the next as one ends, so memory stays flat for any
number of images. A worker that dies is not an error: the
scheduler runs the tasks it held again on the other workers (up to Dask's
``distributed.scheduler.allowed-failures`` deaths per task).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any

logger = logging.getLogger(__name__)

#: ``cluster.address`` that starts a LocalCluster for the run.
LOCAL = "local"


class ClusterError(RuntimeError):
    """The Dask cluster of ``cluster.address`` cannot be reached or has no worker."""


def uses_cluster(settings: Mapping[str, Any] | None) -> bool:
    """Whether the ``cluster`` parameters send per-image work to Dask (an address is set)."""
    return settings is not None and settings.get("address") is not None


@contextlib.contextmanager
def dask_executor(settings: Mapping[str, Any], workers: int) -> Iterator[tuple[Executor, int]]:
    """A ``concurrent.futures`` executor on the Dask cluster of ``cluster.address``.

    Args:
        settings: The ``cluster`` parameters (``address``, ``connect_timeout_seconds``).
        workers: Worker processes of a ``local`` cluster (ignored for a running one).

    Yields:
        ``(executor, threads)``: the executor and the worker threads that run its tasks.

    Raises:
        ClusterError: The scheduler does not answer, or no worker joins it, within
            ``cluster.connect_timeout_seconds``.
    """
    from distributed import Client  # noqa: PLC0415 - only runs with a cluster

    address, timeout = settings["address"], float(settings["connect_timeout_seconds"])
    with contextlib.ExitStack() as stack:
        target: Any = address
        if address == LOCAL:
            target = stack.enter_context(_local_cluster(workers))
        client = stack.enter_context(_connect(Client, target, address, timeout))
        threads = sum(client.nthreads().values())
        logger.info(
            "Dask cluster %s: %d worker(s), %d thread(s)",
            client.scheduler.address,
            len(client.nthreads()),
            threads,
        )
        executor = client.get_executor(pure=False)
        try:
            yield executor, threads
        finally:
            executor.shutdown(wait=False)  # cancels what is still queued (an error, an exit)


def _local_cluster(workers: int) -> Any:
    """A LocalCluster of ``workers`` single-threaded processes on 127.0.0.1, no dashboard."""
    from distributed import LocalCluster  # noqa: PLC0415

    with warnings.catch_warnings():
        # Its scheduler's small HTTP server (health, metrics) takes another port when 8787 is
        # taken, warning that another cluster may be running: that is fine here.
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        return LocalCluster(
            n_workers=max(1, int(workers)),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )


def _connect(client_class: Any, target: Any, address: str, timeout: float) -> Any:
    """A client of ``target`` with at least one worker, or a :class:`ClusterError`."""
    try:
        client = client_class(target, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at cluster.address={address!r} within "
            f"{timeout:g} s ({exc}); start it (dask scheduler --host HOST --port 8786), "
            "correct the address, or run on this machine: --params cluster.address=null"
        ) from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError):
        client.close()
        raise ClusterError(
            f"the Dask scheduler at cluster.address={address!r} has no worker after "
            f"{timeout:g} s; start some: dask worker {client.scheduler.address} --nthreads 1"
        ) from None
    return client


def as_completed(
    executor: Executor,
    fn: Callable[..., Any],
    calls: Iterable[tuple],
    window: int,
    batch_size: int = 1,
) -> Iterator[Any]:
    """``fn(*args)`` per ``args`` of ``calls``, ``window`` at most in flight, as each ends.

    Args:
        executor: Where the calls run.
        fn: The function (picklable for another process).
        calls: The argument tuples.
        window: Submitted tasks (batches) in flight at most.
        batch_size: Calls per task: a task of several amortises what each costs to send.

    Raises:
        Exception: The first exception a call raised (the calls still queued are cancelled).
    """
    batches = _batches(calls, batch_size)
    running: set[Future] = set()
    try:
        while True:
            for batch in batches:
                running.add(executor.submit(call_each, fn, batch))
                if len(running) >= window:
                    break
            if not running:
                return
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield from future.result()
    finally:
        for future in running:
            future.cancel()


def in_order(
    executor: Executor,
    fn: Callable[..., Any],
    calls: Iterable[tuple],
    window: int,
    batch_size: int = 1,
) -> Iterator[Any]:
    """``fn(*args)`` per ``args`` of ``calls``, ``window`` at most in flight, in that order.

    Args:
        executor: Where the calls run.
        fn: The function (picklable for another process).
        calls: The argument tuples.
        window: Submitted tasks (batches) in flight at most.
        batch_size: Calls per task.

    Raises:
        Exception: The first exception a call raised, in order (the rest are cancelled).
    """
    queued: deque[Future] = deque()
    try:
        for batch in _batches(calls, batch_size):
            queued.append(executor.submit(call_each, fn, batch))
            if len(queued) >= window:
                yield from queued.popleft().result()
        while queued:
            yield from queued.popleft().result()
    finally:
        for future in queued:
            future.cancel()


def call_each(fn: Callable[..., Any], batch: list[tuple]) -> list[Any]:
    """``[fn(*args) for args in batch]``: one task of a worker."""
    return [fn(*args) for args in batch]


def _batches(calls: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    calls = iter(calls)
    while batch := list(itertools.islice(calls, max(1, int(size)))):
        yield batch


def available_cores(n_tasks: int) -> int:
    """Worker processes of a ``local`` cluster for ``n_tasks`` tasks: one per core, one at least."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, n_tasks))


def map_in_order(
    fn: Callable[..., Any],
    calls: Iterable[tuple],
    settings: Mapping[str, Any] | None,
    workers: int,
) -> Iterator[Any]:
    """``fn(*args)`` for every ``args`` of ``calls``, in order: here, or on the cluster.

    Args:
        fn: A picklable function (a module-level one) run per call.
        calls: The argument tuples.
        settings: The ``cluster`` parameters; ``None`` or a null ``address``: in this process.
        workers: Worker processes of a ``local`` cluster.

    Raises:
        ClusterError: The cluster cannot be reached (see :func:`dask_executor`).
    """
    if not uses_cluster(settings):
        for args in calls:
            yield fn(*args)
        return
    with dask_executor(settings, workers) as (executor, threads):
        window = int(settings["tasks_per_worker"]) * max(1, threads)
        yield from in_order(executor, fn, calls, window, settings["batch_size"])

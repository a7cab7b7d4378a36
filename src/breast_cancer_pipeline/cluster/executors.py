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
worker can reach (a shared filesystem mounted at the same path). The client keeps
``cluster.tasks_per_worker`` tasks in flight per worker thread, submitting the next as one
ends, so memory stays flat for any number of images. A worker that dies is not an error: the
scheduler runs the tasks it held again on the other workers (up to Dask's
``distributed.scheduler.allowed-failures`` deaths per task).
"""

from __future__ import annotations

import contextlib
import logging
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
    from distributed import Client, LocalCluster  # noqa: PLC0415 - only runs with a cluster

    address, timeout = settings["address"], float(settings["connect_timeout_seconds"])
    with contextlib.ExitStack() as stack:
        target: Any = address
        if address == LOCAL:
            target = stack.enter_context(
                LocalCluster(
                    n_workers=max(1, int(workers)),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            )
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
    executor: Executor, fn: Callable[..., Any], calls: Iterable[tuple], window: int
) -> Iterator[Any]:
    """``fn(*args)`` per ``args`` of ``calls``, ``window`` at most in flight, as each ends.

    Raises:
        Exception: The first exception a call raised (the calls still queued are cancelled).
    """
    calls = iter(calls)
    running: set[Future] = set()
    try:
        while True:
            for args in calls:
                running.add(executor.submit(fn, *args))
                if len(running) >= window:
                    break
            if not running:
                return
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        for future in running:
            future.cancel()


def in_order(
    executor: Executor, fn: Callable[..., Any], calls: Iterable[tuple], window: int
) -> Iterator[Any]:
    """``fn(*args)`` per ``args`` of ``calls``, ``window`` at most in flight, in that order.

    Raises:
        Exception: The first exception a call raised, in order (the rest are cancelled).
    """
    queued: deque[Future] = deque()
    try:
        for args in calls:
            queued.append(executor.submit(fn, *args))
            if len(queued) >= window:
                yield queued.popleft().result()
        while queued:
            yield queued.popleft().result()
    finally:
        for future in queued:
            future.cancel()


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
        yield from in_order(executor, fn, calls, window)

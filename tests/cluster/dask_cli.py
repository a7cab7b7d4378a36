"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` on 127.0.0.1.

Each command runs in its own process group, so stopping it stops its nanny and worker
processes too; the scheduler also closes by itself when idle for a while and the workers when
it is gone, should the test process die without cleaning up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DASK = str(Path(sys.executable).with_name("dask"))
#: Seconds to wait for the scheduler's address and for the workers to join.
START_SECONDS = 120


def _start(args: list[str], folder: Path, log: str) -> subprocess.Popen:
    with open(folder / log, "wb") as output:
        return subprocess.Popen(
            [DASK, *args],
            cwd=folder,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: nanny and workers stop with it
            # Scratch files in the test's folder, not in the machine's shared temporary one.
            env={**os.environ, "DASK_TEMPORARY_DIRECTORY": str(folder / "scratch")},
        )


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _scheduler_address(scheduler_file: Path, process: subprocess.Popen, folder: Path) -> str:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dask scheduler exited: {(folder / 'scheduler.log').read_text()}")
        with contextlib.suppress(OSError, ValueError):
            return json.loads(scheduler_file.read_text())["address"]
        time.sleep(0.1)
    raise TimeoutError(f"no dask scheduler address in {START_SECONDS} s")


@contextlib.contextmanager
def dask_cluster(folder: Path, workers: int = 2) -> Iterator[str]:
    """A scheduler and ``workers`` single-threaded workers; yields the scheduler's address.

    The commands are the documented ones (docs/several-machines.md), on free ports.
    """
    from distributed import Client  # noqa: PLC0415

    processes: list[subprocess.Popen] = []
    try:
        scheduler_file = folder / "scheduler.json"
        processes.append(
            _start(
                ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
                + ["--scheduler-file", str(scheduler_file), "--idle-timeout", "600s"],
                folder,
                "scheduler.log",
            )
        )
        address = _scheduler_address(scheduler_file, processes[0], folder)
        processes.append(
            _start(
                ["worker", address, "--nworkers", str(workers), "--nthreads", "1"]
                + ["--no-dashboard", "--host", "127.0.0.1", "--death-timeout", "60s"],
                folder,
                "workers.log",
            )
        )
        with Client(address, timeout=START_SECONDS) as client:
            client.wait_for_workers(workers, timeout=START_SECONDS)
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)

"""Conversion on a Dask cluster vs this machine's process pool, with the same two processes.

Generates ``N_IMAGES`` mammogram-like 16-bit TIFFs (:func:`benchmarks.bench_ingestion.generate`)
and runs the ingestion nodes and image store as ``kedro run --pipelines=ingestion`` does, in
three interleaved rounds of:

* ``pool``: ``cluster.address`` null, ``ingestion.workers`` 2 (the process pool);
* ``running_cluster``: ``cluster.address`` the scheduler of a 2-worker, single-threaded
  ``LocalCluster`` started once, before the rounds (as a running cluster is): what Dask's
  scheduling and the results' way back cost per image;
* ``local``: ``cluster.address: local``, so each run starts its own 2-worker ``LocalCluster``
  and stops it: the start-up (worker processes, their imports) included.

``cluster.overhead_ratio`` is the pool's seconds over the running cluster's, per round (1: as
fast; the goal, 0.8, allows 20 % for the scheduling); ``overhead_ratio_with_startup`` the same
with ``local``. Every run's manifest and PNGs must be the pool's (else the benchmark fails).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.bench_ingestion import generate, ingest
from breast_cancer_pipeline.cluster import LOCAL
from tests.params import base_params

N_IMAGES, SIZE = (24, 128) if harness.quick() else (300, 768)
WORKERS = 2
GOALS: dict[str, harness.Goal] = {"cluster.overhead_ratio": (">=", 0.8)}


def _pngs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "images").rglob("*.png")}


class _Rounds:
    """The three ways, each run into a fresh folder and checked against the pool's output."""

    def __init__(self, source: Path, workdir: Path, params: dict, address: str) -> None:
        self.source, self.workdir, self.params = source, workdir, params
        self.clusters = {
            "pool": None,
            "running_cluster": base_params("cluster", address=address),
            "local": base_params("cluster", address=LOCAL),
        }
        self.reference: tuple[Any, dict[str, bytes]] | None = None
        self.runs = 0

    def measure(self, way: str) -> float:
        self.runs += 1
        out = self.workdir / f"out-{way}-{self.runs}"
        seconds, saved, manifest = ingest(self.source, out, self.params, self.clusters[way])
        assert saved["produced"] == N_IMAGES and saved["failed"] == 0, (way, saved)
        pngs = _pngs(out)
        if self.reference is None:
            self.reference = (manifest, pngs)
        assert manifest.equals(self.reference[0]), f"{way}: another manifest than the pool's"
        assert pngs == self.reference[1], f"{way}: other PNG bytes than the pool's"
        return seconds


def run(workdir: Path) -> dict[str, Any]:
    """Measure conversion through Dask vs the process pool; returns ``cluster.*`` figures."""
    from distributed import Client, LocalCluster  # noqa: PLC0415

    params = base_params("ingestion", group_pattern=r"(case \d+)/", workers=WORKERS)
    load_before = round(os.getloadavg()[0], 2)
    source = workdir / "source"
    generate(source, N_IMAGES, SIZE)
    started = time.perf_counter()
    with (
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        ) as running,
        Client(running) as client,
    ):
        client.wait_for_workers(WORKERS)
        start_seconds = time.perf_counter() - started
        rounds = _Rounds(source, workdir, params, running.scheduler_address)
        rounds.measure("pool")  # the reference output; warms the page cache and the imports
        rounds.measure("running_cluster")  # the workers import the conversion's modules
        seconds = harness.interleave(
            {way: (lambda way=way: rounds.measure(way)) for way in rounds.clusters}
        )
    pool, running_cluster, local = seconds["pool"], seconds["running_cluster"], seconds["local"]
    return {
        "cluster.n_images": N_IMAGES,
        "cluster.image_pixels": f"{SIZE}x{SIZE} uint16 TIFF",
        "cluster.workers": WORKERS,
        "cluster.batch_size": base_params("cluster")["batch_size"],
        "cluster.load_average_before": load_before,
        "cluster.load_average_after": round(os.getloadavg()[0], 2),
        "cluster.local_cluster_start_seconds": round(start_seconds, 1),
        "cluster.seconds_pool": harness.summary(pool, 2),
        "cluster.seconds_running_cluster": harness.summary(running_cluster, 2),
        "cluster.seconds_local": harness.summary(local, 2),
        "cluster.images_per_second_pool": harness.summary([N_IMAGES / s for s in pool], 1),
        "cluster.images_per_second_running_cluster": harness.summary(
            [N_IMAGES / s for s in running_cluster], 1
        ),
        "cluster.overhead_ratio": harness.summary(harness.ratios(pool, running_cluster), 2),
        "cluster.overhead_ratio_with_startup": harness.summary(harness.ratios(pool, local), 2),
    }

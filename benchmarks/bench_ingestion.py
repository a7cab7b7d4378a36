"""Ingestion throughput: PNG conversion of 16-bit TIFFs on one core vs all cores, and a rerun.

Generates ``N_IMAGES`` mammogram-like 1024 x 1024 16-bit grayscale TIFFs (a bright, textured
half-ellipse on a zero background), then runs the ingestion nodes and the image store exactly
as ``kedro run --pipelines=ingestion`` does (conf/base parameters), in three interleaved rounds
of: one worker, one worker per core, an incremental rerun on that output where nothing changed,
and ``reference_speedup_pure_cpu`` (a pure-Python loop in ``cores`` processes vs one), which
says how much of the cores other processes left: ``parallel_speedup`` cannot exceed it. Each
speed-up is its round's; the figure is their median.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from benchmarks import harness
from breast_cancer_pipeline.datasets import ImageFolderDataset, ImageStoreDataset
from breast_cancer_pipeline.pipelines.ingestion.nodes import (
    collapse_duplicates,
    collect_conversion,
    index_source,
    plan_conversion,
    publish_conversion,
    split_manifest,
)
from tests.params import base_params

N_IMAGES, SIZE = (24, 256) if harness.quick() else (500, 1024)
GOALS: dict[str, harness.Goal] = {"ingestion.parallel_speedup": (">=", 1.6)}


def generate(source: Path, n_images: int = N_IMAGES, size: int = SIZE, grain: float = 0.0) -> None:
    """``n_images`` mammogram-like ``size``² 16-bit TIFFs in ``source/<label>/case NNN/``.

    ``grain``: the std of per-image noise, so that thousands of small images stay distinct
    (else two that share a texture offset collapse as duplicates after windowing).
    """
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    breast = ((xx / 0.55) ** 2 + ((yy - 0.5) / 0.42) ** 2) < 1.0
    texture = rng.normal(0.0, 1.0, (size * 2, size * 2)).astype(np.float32)
    for i in range(n_images):
        dy, dx = rng.integers(0, size, 2)
        field = texture[dy : dy + size, dx : dx + size]
        level = 1200 + 1500 * (1 - xx) + 300 * field + (i % 50)
        if grain:
            level = level + rng.normal(0.0, grain, level.shape)
        pixels = np.where(breast, np.clip(level, 1, 4095), 0).astype(np.uint16)
        label = ("benign", "malignant")[i % 2]
        path = source / label / f"case {i // 4:03d}" / f"view_{i % 4}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, format="TIFF")


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def _reference_speedup(cores: int, n: int) -> float:
    """How much faster ``cores`` processes do ``cores`` x the same pure-CPU work than one.

    What the machine gives right now to perfectly parallel work: with other processes on the
    cores, this is below ``cores``, and ``parallel_speedup`` cannot exceed it.
    """
    started = time.perf_counter()
    _spin(n)
    one = time.perf_counter() - started
    context = multiprocessing.get_context("fork")
    with context.Pool(cores) as pool:
        started = time.perf_counter()
        pool.map(_spin, [n] * cores)
        many = time.perf_counter() - started
    return cores * one / many


def ingest(
    source: Path, out: Path, params: dict, cluster: dict | None = None
) -> tuple[float, dict[str, int], pd.DataFrame]:
    """The ingestion nodes and image store on ``source``, as ``kedro run`` runs them.

    ``cluster``: the ``cluster`` parameters (none: this machine's process pool).

    Returns:
        ``(seconds, the store's last save counts, the manifest)``.
    """
    started = time.perf_counter()
    raw = ImageFolderDataset(str(source)).load()
    inventory = index_source(raw, params)
    store = ImageStoreDataset(path=str(out / "images"), journal=str(out / "index.jsonl"))
    store.save(plan_conversion(raw, inventory, params, None, cluster))
    info, _ = collect_conversion(store.load(), inventory, params)
    manifest = split_manifest(collapse_duplicates(info)[0], params)
    store.save(publish_conversion(manifest))
    return time.perf_counter() - started, store.last_save, manifest


def _round(source: Path, workdir: Path, params: dict, cores: int, index: int) -> dict[str, float]:
    """One round: conversion with 1 worker, with ``cores``, a rerun, the reference speed-up."""
    figures: dict[str, float] = {}
    for tag, workers in (("1_worker", 1), ("all_cores", cores)):
        out = workdir / f"out-{tag}-{index}"
        cpu_before = _cpu_seconds()
        elapsed, saved, manifest = ingest(source, out, {**params, "workers": workers})
        assert len(manifest) == N_IMAGES and saved["produced"] == N_IMAGES, saved
        figures[f"seconds_{tag}"] = elapsed
        figures[f"cpu_ms_per_image_{tag}"] = 1000 * (_cpu_seconds() - cpu_before) / N_IMAGES
    rerun_s, rerun, _ = ingest(source, out, {**params, "workers": cores})
    assert rerun["skipped"] == N_IMAGES and rerun["produced"] == 0, rerun
    figures["rerun_seconds_unchanged"] = rerun_s
    figures["reference_speedup_pure_cpu"] = _reference_speedup(
        cores, 300_000 if harness.quick() else 6_000_000
    )
    return figures


def run(workdir: Path) -> dict[str, Any]:
    """Measure conversion rates; returns ``ingestion.*`` figures."""
    params = base_params("ingestion", group_pattern=r"(case \d+)/")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_before = round(os.getloadavg()[0], 2)  # other processes compete for the cores
    source = workdir / "source"
    started = time.perf_counter()
    generate(source)
    generate_seconds = time.perf_counter() - started
    index = itertools.count()
    rounds = harness.interleave(
        {"round": lambda: _round(source, workdir, params, cores, next(index))}
    )["round"]
    per = {key: [r[key] for r in rounds] for key in rounds[0]}
    one, parallel = per["seconds_1_worker"], per["seconds_all_cores"]
    figures: dict[str, Any] = {
        f"ingestion.{key}": harness.summary(values, 1 if key.startswith("cpu_ms") else 2)
        for key, values in per.items()
    }
    pngs = (workdir / "out-all_cores-0" / "images").rglob("*.png")
    return {
        **figures,
        "ingestion.n_images": N_IMAGES,
        "ingestion.image_pixels": f"{SIZE}x{SIZE} uint16 TIFF",
        "ingestion.cores": cores,
        "ingestion.load_average_before": load_before,
        "ingestion.load_average_after": round(os.getloadavg()[0], 2),
        "ingestion.png_compress_level": params["png_compress_level"],
        "ingestion.generate_seconds": round(generate_seconds, 1),
        "ingestion.png_mb_per_image": round(
            sum(p.stat().st_size for p in pngs) / 2**20 / N_IMAGES, 3
        ),
        "ingestion.images_per_second_1_worker": harness.summary([N_IMAGES / s for s in one], 2),
        "ingestion.images_per_second_all_cores": harness.summary(
            [N_IMAGES / s for s in parallel], 2
        ),
        "ingestion.parallel_speedup": harness.summary(harness.ratios(one, parallel), 2),
        "ingestion.incremental_speedup": harness.summary(
            harness.ratios(parallel, per["rerun_seconds_unchanged"]), 1
        ),
    }

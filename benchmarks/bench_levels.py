"""What reading the model per patient changes, and how much wider honest intervals are.

Each seed is one demo run on the ``hard`` preset (fainter, smaller masses, 15 % label noise;
the demo's several images per patient) in a throw-away copy of the project, after
``demo_data`` with that seed. The figures are read off its ``metrics.json`` and its test
predictions, and summarised over the seeds as mean, min and max:

* ``levels.patient_auroc_gain``: test AUROC per patient (its images' probabilities combined
  by ``evaluation.level_aggregation``) minus per image; ``levels.breast_auroc_gain`` the same
  per breast when the run has that level.
* ``levels.cluster_ci_width`` and ``levels.image_ci_width``: width of the 95 % interval of
  the image-level test AUROC from the cluster bootstrap (patients resampled, what
  ``metrics.json`` reports) and from a per-image bootstrap of the same predictions (same
  resamples count and seed); ``levels.cluster_ci_width_ratio`` the first over the second:
  above 1, a per-image interval would have been too narrow.
* ``levels.patient_ci_width``: the width of the patient level's AUROC interval.

``BENCH_QUICK=1`` runs one tiny seed (the whole-DAG test's sizes).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks._project import copy_project, kedro_run
from benchmarks.bench_evaluation import QUICK_SETTINGS, over_seeds
from tests.params import load_parameters

QUICK = harness.quick()
SEEDS = (1,) if QUICK else (1, 2, 3)
GOALS: dict[str, harness.Goal] = {}
DATA = {"demo_data.preset": "hard"}


def per_image_interval(predictions: Any, class_names: list[str], bootstrap: dict) -> float:
    """Width of the test AUROC's interval from a per-image (not cluster) bootstrap.

    Args:
        predictions: ``test_predictions.csv`` as a DataFrame.
        class_names: The model's classes.
        bootstrap: ``reporting.bootstrap`` (resamples, confidence, seed).
    """
    from breast_cancer_pipeline import metrics as m  # noqa: PLC0415
    from breast_cancer_pipeline.evaluation.predictions import as_arrays  # noqa: PLC0415

    found = m.auroc_with_interval(*as_arrays(predictions, class_names), **bootstrap)
    return found["auroc_ci_high"] - found["auroc_ci_low"]


def figures_of(metrics: Mapping[str, Any], image_ci_width: float) -> dict[str, Any]:
    """The benchmark's figures of one run.

    Args:
        metrics: The run's ``metrics.json``.
        image_ci_width: :func:`per_image_interval` of its test predictions.

    Raises:
        KeyError: The run has no ``levels.patient`` block.
    """
    patient = metrics["levels"]["patient"]
    cluster_width = metrics["auroc_ci_high"] - metrics["auroc_ci_low"]
    figures = {
        "patient_auroc_gain": patient["auroc"] - metrics["auroc"],
        "cluster_ci_width": cluster_width,
        "image_ci_width": image_ci_width,
        "cluster_ci_width_ratio": cluster_width / image_ci_width
        if image_ci_width
        else float("nan"),
        "patient_ci_width": patient["auroc_ci_high"] - patient["auroc_ci_low"],
        "image_auroc": metrics["auroc"],
        "patient_auroc": patient["auroc"],
        "test_patients": patient["n"],
    }
    if "breast" in metrics["levels"]:
        figures["breast_auroc_gain"] = metrics["levels"]["breast"]["auroc"] - metrics["auroc"]
    return figures


def summarise(per_seed: list[Mapping[str, float]]) -> dict[str, Any]:
    """``levels.<figure>`` over the seeds (:func:`~benchmarks.bench_evaluation.over_seeds`)."""
    return {f"levels.{name}": over_seeds([run[name] for run in per_seed]) for name in per_seed[0]}


def one_seed(workdir: Path, seed: int) -> dict[str, Any]:
    """The hard data with ``seed``, the default run, its figures."""
    import pandas as pd  # noqa: PLC0415

    project = copy_project(workdir / f"seed_{seed}")
    sizes = QUICK_SETTINGS if QUICK else {}
    started = time.perf_counter()
    data = {**DATA, "demo_data.seed": seed, **sizes}
    kedro_run(
        project,
        "--pipelines=demo_data",
        "--params=" + ",".join(f"{k}={v}" for k, v in data.items()),
    )
    run = {"ingestion.split.seed": seed, "finetune.seed": seed, **sizes}
    kedro_run(project, "--params=" + ",".join(f"{k}={v}" for k, v in run.items()))
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    predictions = pd.read_csv(project / "data/07_model_output/test_predictions.csv")
    reporting = load_parameters(project, "demo")["reporting"]
    if QUICK:
        reporting["bootstrap"]["n_resamples"] = QUICK_SETTINGS["reporting.bootstrap.n_resamples"]
    names = [c.removeprefix("p_") for c in predictions.columns if c.startswith("p_")]
    width = per_image_interval(predictions, names, reporting["bootstrap"])
    figures = figures_of(metrics, width)
    print(f"   seed {seed}: {time.perf_counter() - started:.0f} s, {figures}", flush=True)
    shutil.rmtree(project / "data")
    return figures


def run(workdir: Path) -> dict[str, Any]:
    """Every seed, then the figures over the seeds."""
    per_seed = [one_seed(workdir, seed) for seed in SEEDS]
    for figures in per_seed:
        assert figures["test_patients"] >= 2, figures
        assert figures["cluster_ci_width"] >= 0.0, figures
    return {
        **summarise(per_seed),
        "levels.seeds": list(SEEDS),
        "levels.settings": {"data": DATA, **({"quick": QUICK_SETTINGS} if QUICK else {})},
    }

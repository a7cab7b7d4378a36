"""What cross-validation, test-time augmentation, recalibration and an ensemble change.

Each seed is one whole demo run on the ``hard`` preset (fainter, smaller masses, 15 % label
noise, a stronger second site) in a throw-away copy of the project: ``demo_data`` with that
seed, then ``kedro run --env=demo`` with 3 patient-grouped folds, the fold ensemble served,
test-time flips and temperature scaling. Everything else is the demo configuration, so the
single model's AUROC is the one ``make demo`` would give on the hard data. Each figure is
read off the run's ``metrics.json`` and summarised over the seeds as mean, min and max:

* ``evaluation.cv_ci_width_ratio``: width of the 95 % bootstrap interval of the pooled
  out-of-fold AUROC (every non-test image) over that of the single split's test AUROC (the
  single model, the test images only): below 1, cross-validation pins the number down better.
  ``evaluation.cv_fold_ci_width_ratio`` uses the t-interval across the folds' AUROCs instead.
* ``evaluation.tta_auroc_gain``: test AUROC with test-time flips minus without (served model).
* ``evaluation.calibration_ece_ratio``: top-label ECE on test after temperature scaling over
  before (goal <= 0.7); ``evaluation.calibration_ece_after_le_before`` whether it never rose.
* ``evaluation.ensemble_auroc_gain``: test AUROC of the fold models' mean minus the single
  model's (both without test-time augmentation or temperature).
* ``evaluation.external_auroc_drop``: internal test AUROC minus the external site's (served).
* ``evaluation.hard_single_auroc``: the single model's test AUROC (the preset's 0.75-0.90).

About 12 minutes per seed on 2 cores; ``BENCH_QUICK=1`` runs one tiny seed.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import harness

PROJECT = Path(__file__).resolve().parents[1]
QUICK = harness.quick()
SEEDS = (1,) if QUICK else (1, 2, 3)
GOALS: dict[str, harness.Goal] = {
    "evaluation.calibration_ece_ratio": ("<=", 0.7),
    "evaluation.calibration_ece_after_le_before": ("==", True),
}
#: What every seed's run sets beside its seeds (``kedro run --params``).
SETTINGS = {
    "demo_data.preset": "hard",
    "evaluation.folds": 3,
    "evaluation.ensemble": "true",
    "evaluation.tta": "flips",
    "evaluation.calibration": "temperature",
}
#: The smoke run's sizes (figures meaningless).
QUICK_SETTINGS = {
    "demo_data.images_per_class": 12,
    "demo_data.image_size": 48,
    "demo_data.external_site.images_per_class": 4,
    "validation.min_per_class": 1,
    "augmentation.image_size": 32,
    "backbone_selection.epochs": 2,
    "backbone_selection.repeats": 1,
    "backbone_selection.head_search.n_trials": 2,
    "backbone_selection.head_search.epochs": 2,
    "finetune.phase1.epochs": 1,
    "finetune.phase2.epochs": 2,
    "reporting.bootstrap.n_resamples": 50,
}


def figures_of(metrics: Mapping[str, Any]) -> dict[str, float | bool]:
    """The benchmark's figures of one run, from its ``metrics.json``.

    Raises:
        KeyError: The run has no ``cv`` (with ``ensemble``), ``tta``, ``calibration`` or
            ``external`` block: it did not run with the benchmark's settings.
    """
    cv, ensemble, calibration = metrics["cv"], metrics["cv"]["ensemble"], metrics["calibration"]
    single_width = ensemble["single_test_auroc_ci_high"] - ensemble["single_test_auroc_ci_low"]
    before, after = calibration["ece_top_label_before"], calibration["ece_top_label_after"]
    return {
        "cv_ci_width_ratio": (cv["auroc_pooled_ci_high"] - cv["auroc_pooled_ci_low"])
        / single_width,
        "cv_fold_ci_width_ratio": (cv["auroc_ci_high"] - cv["auroc_ci_low"]) / single_width,
        "tta_auroc_gain": metrics["tta"]["auroc_gain"],
        "calibration_ece_before": before,
        "calibration_ece_after": after,
        "calibration_ece_ratio": after / before,
        "calibration_ece_after_le_before": after <= before,
        "ensemble_auroc_gain": ensemble["test_auroc"] - ensemble["single_test_auroc"],
        "external_auroc_drop": metrics["auroc"] - metrics["external"]["auroc"],
        "hard_single_auroc": ensemble["single_test_auroc"],
        "cv_auroc_pooled": cv["auroc_pooled"],
        "served_test_auroc": metrics["auroc"],
        "external_auroc": metrics["external"]["auroc"],
    }


def over_seeds(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Mean, min and max over the seeds, with each seed's value."""
    return {
        "mean": round(float(statistics.fmean(values)), digits),
        "min": round(float(min(values)), digits),
        "max": round(float(max(values)), digits),
        "seeds": [round(float(v), digits) for v in values],
    }


def summarise(per_seed: Sequence[Mapping[str, float | bool]]) -> dict[str, Any]:
    """``evaluation.<figure>`` over the seeds: numbers as :func:`over_seeds`, flags as all."""
    out: dict[str, Any] = {}
    for name in per_seed[0]:
        values = [run[name] for run in per_seed]
        if isinstance(values[0], bool):
            out[f"evaluation.{name}"] = {"all": all(values), "repeats": values}
        else:
            out[f"evaluation.{name}"] = over_seeds(values)
    return out


def _copy_project(target: Path) -> None:
    """What a run needs: configuration and project metadata (the package is installed)."""
    shutil.copytree(PROJECT / "conf", target / "conf", ignore=shutil.ignore_patterns("local"))
    (target / "conf" / "local").mkdir()
    for name in ("pyproject.toml",):
        shutil.copy2(PROJECT / name, target / name)
    (target / "src").mkdir()
    for folder in (PROJECT / "data").iterdir():
        if folder.is_dir():
            (target / "data" / folder.name).mkdir(parents=True)


def _environment(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEDRO_", "MLFLOW_"))}
    return {
        **env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "KEDRO_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }


def _params(settings: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in settings.items())


def _kedro(project: Path, log: Path, *args: str) -> None:
    """``kedro run --env=demo ...`` in ``project``; its output to ``log``, the tail if it fails."""
    command = [str(Path(sys.executable).with_name("kedro")), "run", "--env=demo", *args]
    with log.open("a") as out:
        done = subprocess.run(
            command, cwd=project, env=_environment(project), stdout=out, stderr=out, check=False
        )
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")


def one_seed(workdir: Path, seed: int) -> dict[str, float | bool]:
    """One hard-preset demo run with the benchmark's settings and ``seed``; its figures."""
    project = workdir / f"seed_{seed}"
    _copy_project(project)
    settings = {**SETTINGS, **(QUICK_SETTINGS if QUICK else {})}
    seeds = {
        "demo_data.seed": seed,
        "ingestion.split.seed": seed,
        "evaluation.fold_seed": seed,
        "finetune.seed": seed,
    }
    log = project / "run.log"
    started = time.perf_counter()
    data_settings = {k: v for k, v in settings.items() if k.startswith("demo_data.")}
    _kedro(project, log, "--pipelines=demo_data", f"--params={_params(data_settings)}")
    _kedro(project, log, f"--params={_params({**settings, **seeds})}")
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    figures = figures_of(metrics)
    print(
        f"   seed {seed}: {time.perf_counter() - started:.0f} s, "
        + ", ".join(
            f"{k} {v}" if isinstance(v, bool) else f"{k} {v:.4g}" for k, v in figures.items()
        ),
        flush=True,
    )
    shutil.rmtree(project / "data")  # keep only the log and the metrics
    return {**figures, "seconds": round(time.perf_counter() - started, 1)}


def run(workdir: Path) -> dict[str, Any]:
    """Every seed, then the figures over the seeds."""
    per_seed = [one_seed(workdir, seed) for seed in SEEDS]
    for figures in per_seed:  # the measured things hold (not goals)
        assert 0.0 <= figures["hard_single_auroc"] <= 1.0, figures
        assert figures["calibration_ece_before"] >= 0.0, figures
    return {
        **summarise(per_seed),
        "evaluation.seeds": list(SEEDS),
        "evaluation.settings": {**SETTINGS, **(QUICK_SETTINGS if QUICK else {})},
    }

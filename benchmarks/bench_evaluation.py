"""What cross-validation, test-time augmentation, recalibration and an ensemble change.

Each seed is two demo runs on the ``hard`` preset (fainter, smaller masses, 15 % label noise,
a stronger second site; twice the demo's images, the extra ones held out for validation and
test, :data:`DATA`) in a throw-away copy of the project, after ``demo_data`` with that seed:
**the default pipeline** (``kedro run --env=demo``: one split, temperature scaling fitted on
validation, no test-time augmentation), then **cross-validation**
(``--pipelines=finetune,reporting`` with 3 patient-grouped folds, the fold ensemble served,
test-time flips). Each figure is read off the two runs' ``metrics.json`` and summarised over
the seeds as mean, min and max:

* ``evaluation.cv_ci_width_ratio``: width of the 95 % bootstrap interval of the pooled
  out-of-fold AUROC (every non-test image) over that of the default run's test AUROC (the
  test images only): below 1, cross-validation pins the number down better.
  ``evaluation.cv_fold_ci_width_ratio`` uses the t-interval across the folds' AUROCs instead.
* ``evaluation.tta_auroc_gain``: test AUROC with test-time flips minus without (the served
  ensemble).
* ``evaluation.calibration_ece_ratio``: top-label ECE on test after temperature scaling over
  before, in the default run, whose temperature is fitted on the ~290 validation images that
  also chose the checkpoint (goal <= 0.7); ``evaluation.calibration_ece_after_le_before``
  whether it did not rise on any seed. ``evaluation.cv_calibration_*``: the same for the
  cross-validation run, whose served ensemble is calibrated on the out-of-fold predictions
  of every development image (``*_n_fitted``); ``*_log_loss_ratio`` the test log loss after
  over before (what the temperature minimises, less noisy than a binned ECE).
* ``evaluation.fresh_calibration_*`` and ``evaluation.fresh_cv_calibration_*``: the same
  before/after figures of each run's served model on 3,000 new images (:data:`FRESH`, made
  once per benchmark run), scored through the batch command. On ~290 test images a
  perfectly calibrated model's top-label ECE is about 0.05 (5-95 %: 0.03-0.08), more than a
  temperature changes; on 3,000 about 0.016, so these say whether recalibration helped.
* ``evaluation.ensemble_auroc_gain``: test AUROC of the fold models' mean minus the single
  model's (both without test-time augmentation or temperature).
* ``evaluation.external_auroc_drop``: the default run's internal test AUROC minus its
  external site's.
* ``evaluation.hard_single_auroc``: the default run's test AUROC (the preset's 0.75-0.90).

About 10 minutes per seed on 2 cores (2026-12-02, with the fresh images: 8 min 46 s and
9 min 36 s on an idle 2-core Xeon, 32 min in all);
``BENCH_QUICK=1`` runs one tiny seed.
"""

from __future__ import annotations

import json
import math
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
from benchmarks._project import copy_project
from tests.params import load_parameters
from tests.whole_dag import TINY

QUICK = harness.quick()
SEEDS = (1,) if QUICK else (1, 2, 3)
GOALS: dict[str, harness.Goal] = {
    "evaluation.calibration_ece_ratio": ("<=", 0.7),
    "evaluation.calibration_ece_after_le_before": ("==", True),
    "evaluation.cv_calibration_ece_ratio": ("<=", 0.7),
    "evaluation.cv_calibration_ece_after_le_before": ("==", True),
    "evaluation.fresh_calibration_ece_after_le_before": ("==", True),
    "evaluation.fresh_cv_calibration_ece_after_le_before": ("==", True),
}
#: The hard data, and what the cross-validation run sets on top of the default pipeline.
#: Twice the demo's images, the extra ones all held out: the split's ratios (below) keep
#: the ~315 training images of the demo (so the model is as good as the demo's) while
#: validation and test grow from ~68 to ~290 images each. At 68 a test top-label ECE
#: carries about 0.1 of sampling noise, as large as the miscalibration it should measure,
#: and one seed's temperature, fitted on 68 validation images, went from 0.66 to 1.03
#: between two benchmark runs the same day.
DATA = {
    "demo_data.preset": "hard",
    "demo_data.lesion_patients_per_class": 96,
    "demo_data.normal_patients": 32,
}
SPLIT_RATIOS = (0.35, 0.325, 0.325)
CROSS_VALIDATION = {
    "evaluation.folds": 3,
    "evaluation.ensemble": "true",
    "evaluation.tta": "flips",
}


def _dotted(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``, for ``kedro run --params``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(_dotted(value, f"{name}.") if isinstance(value, Mapping) else {name: value})
    return out


#: The smoke run's sizes (figures meaningless): the whole-DAG test's tiny demo.
QUICK_SETTINGS = _dotted(TINY)

#: New images from the same generator (hard preset, new patients: a ``demo_data`` seed none
#: of :data:`SEEDS` uses), generated once per benchmark run and scored by each seed's served
#: models through the batch command. At ~290 test images the top-label ECE of a perfectly
#: calibrated model is about 0.05 (5-95 %: 0.03-0.08), larger than what a temperature
#: changes; at 3,000 it is about 0.016.
FRESH = {
    "demo_data.preset": "hard",
    "demo_data.seed": 1000,
    "demo_data.lesion_patients_per_class": 3 if QUICK else 320,  # 28 or 3,000 images
    "demo_data.normal_patients": 1 if QUICK else 110,
    "demo_data.external_site.lesion_patients_per_class": 0,
    "demo_data.external_site.normal_patients": 0,
}


def figures_of(default: Mapping[str, Any], cv_run: Mapping[str, Any]) -> dict[str, float | bool]:
    """The benchmark's figures of one seed, from its two runs' ``metrics.json``.

    Args:
        default: The default pipeline's metrics (one split, temperature scaling).
        cv_run: The cross-validation run's (``cv`` with ``ensemble``, ``tta``).

    Raises:
        KeyError: A run lacks a block it should have (``calibration``, ``external``, ``cv``,
            ``tta``): it did not run with the benchmark's settings.
    """
    cv, ensemble = cv_run["cv"], cv_run["cv"]["ensemble"]
    single_width = default["auroc_ci_high"] - default["auroc_ci_low"]
    return {
        "cv_ci_width_ratio": _ratio(
            cv["auroc_pooled_ci_high"] - cv["auroc_pooled_ci_low"], single_width
        ),
        "cv_fold_ci_width_ratio": _ratio(cv["auroc_ci_high"] - cv["auroc_ci_low"], single_width),
        "tta_auroc_gain": cv_run["tta"]["auroc_gain"],
        **_calibration_figures(default["calibration"], "calibration"),
        **_calibration_figures(cv_run["calibration"], "cv_calibration"),
        "ensemble_auroc_gain": ensemble["test_auroc"] - ensemble["single_test_auroc"],
        "external_auroc_drop": default["auroc"] - default["external"]["auroc"],
        "hard_single_auroc": default["auroc"],
        "cv_auroc_pooled": cv["auroc_pooled"],
        "ensemble_test_auroc": ensemble["test_auroc"],
        "external_auroc": default["external"]["auroc"],
    }


def _calibration_figures(calibration: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Temperature, top-label ECE on test before and after, their ratio, whether it rose."""
    before, after = calibration["ece_top_label_before"], calibration["ece_top_label_after"]
    return {
        f"{prefix}_temperature": calibration["temperature"],
        # The temperature's bootstrap interval over the images it was fitted on (NaN: a
        # metrics.json written before reporting computed it).
        f"{prefix}_temperature_ci_low": calibration.get("temperature_ci_low", math.nan),
        f"{prefix}_temperature_ci_high": calibration.get("temperature_ci_high", math.nan),
        f"{prefix}_floor": calibration.get("floor", 0.0),
        f"{prefix}_floor_ci_low": calibration.get("floor_ci_low", 0.0),
        f"{prefix}_floor_ci_high": calibration.get("floor_ci_high", 0.0),
        f"{prefix}_n_fitted": calibration["n_val"],
        f"{prefix}_ece_before": before,
        f"{prefix}_ece_after": after,
        f"{prefix}_ece_ratio": _ratio(after, before),
        f"{prefix}_log_loss_ratio": _ratio(
            calibration["log_loss_after"], calibration["log_loss_before"]
        ),
        f"{prefix}_ece_after_le_before": after <= before,
    }


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN over 0 (a constant model's zero-width interval)."""
    return numerator / denominator if denominator else float("nan")


def over_seeds(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Mean, min and max over the seeds where defined; each seed's value (null: undefined)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    return {
        "mean": round(statistics.fmean(finite), digits) if finite else None,
        "min": round(min(finite), digits) if finite else None,
        "max": round(max(finite), digits) if finite else None,
        "seeds": [round(float(v), digits) if math.isfinite(v) else None for v in values],
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


def held_out_more(project: Path, ratios: Sequence[float]) -> None:
    """Set ``ingestion.split.ratios`` in the copy's ``conf/demo`` (``--params`` splits lists).

    The copy's file is rewritten without its comments; its other settings are kept.
    """
    import yaml  # noqa: PLC0415

    path = project / "conf" / "demo" / "parameters.yml"
    blocks = yaml.safe_load(path.read_text())
    ingestion = blocks.get("ingestion") or {}
    ingestion["split"] = {**(ingestion.get("split") or {}), "ratios": [float(r) for r in ratios]}
    blocks["ingestion"] = ingestion
    path.write_text(yaml.safe_dump(blocks, sort_keys=False))


def fresh_images(workdir: Path) -> Path:
    """:data:`FRESH` generated in a throw-away copy of the project; its images by class folder.

    Returns:
        ``workdir/fresh_images`` holding ``<class>/<file>`` (the masks left out).
    """
    project = workdir / "fresh"
    copy_project(project)
    _kedro(project, project / "run.log", "--pipelines=demo_data", f"--params={_params(FRESH)}")
    from breast_cancer_pipeline.pipelines.ingestion.layouts import selected  # noqa: PLC0415

    # What ingestion would take in (``ingestion.exclude`` leaves the masks out).
    ingestion = load_parameters(project, "demo")["ingestion"]
    source, target = project / "data/01_raw/demo", workdir / "fresh_images"
    for image in sorted(source.rglob("*")):
        if image.is_file() and selected(image.relative_to(source).as_posix(), ingestion):
            copy = target / image.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, copy)
    shutil.rmtree(project)
    return target


def fresh_calibration(
    project: Path, images: Path, calibration: Mapping[str, Any], n_bins: int, log: Path
) -> dict[str, float]:
    """:func:`calibration_change` of ``images`` scored by ``project``'s served model.

    The images go through the batch command (``--pipelines=inference``), the served path:
    test-time views, then the temperature and floor of ``calibration`` (the run's
    ``metrics.json`` block).
    """
    import pandas as pd  # noqa: PLC0415

    _kedro(project, log, "--pipelines=inference", f"--params=inference.source_dir={images}")
    answers = pd.read_csv(project / "data/07_model_output/predictions.csv")
    floor = calibration.get("floor", 0.0)
    return calibration_change(answers, calibration["temperature"], n_bins, floor)


def calibration_change(
    answers: Any, temperature: float, n_bins: int, floor: float = 0.0
) -> dict[str, float]:
    """Top-label ECE and log loss of the batch command's answers before and after recalibration.

    The probabilities before it are the answer's with the floor taken off and ``1 / T``
    applied (:func:`~breast_cancer_pipeline.evaluation.calibration.undo_calibration`;
    ``softmax(T log q)`` undoes ``softmax(log p / T)`` exactly); the true class is the
    first folder of each ``path``.

    Args:
        answers: The batch command's ``predictions.csv`` as a DataFrame.
        temperature: The served model's ``T`` (``metrics.json`` ``calibration``).
        n_bins: ``reporting.calibration_bins``.
        floor: The served model's floor (``calibration.floor``; 0 without one).

    Raises:
        RuntimeError: An image got an error row instead of probabilities.
    """
    from breast_cancer_pipeline import metrics as m  # noqa: PLC0415
    from breast_cancer_pipeline.evaluation.calibration import undo_calibration  # noqa: PLC0415

    failed = answers[answers["error"].notna()]
    if len(failed):
        raise RuntimeError(f"{len(failed)} fresh image(s) not scored:\n{failed.head()}")
    columns = [c for c in answers.columns if c.startswith("p_")]
    y = answers["path"].str.split("/").str[0].map([c[2:] for c in columns].index).to_numpy()
    after = answers[columns].to_numpy(dtype=float)
    before = undo_calibration(after, temperature, floor)
    ece = [m.binned_ece(p.argmax(axis=1) == y, p.max(axis=1), n_bins) for p in (before, after)]
    return {
        "ece_before": ece[0],
        "ece_after": ece[1],
        "log_loss_before": m.log_loss(y, before),
        "log_loss_after": m.log_loss(y, after),
        "n": len(y),
    }


def _fresh_figures(fresh: Mapping[str, float], prefix: str) -> dict[str, float | bool]:
    """:func:`fresh_calibration`'s numbers as the benchmark's figures (``prefix_*``)."""
    before, after = fresh["ece_before"], fresh["ece_after"]
    return {
        f"{prefix}_n": fresh["n"],
        f"{prefix}_ece_before": before,
        f"{prefix}_ece_after": after,
        f"{prefix}_ece_ratio": _ratio(after, before),
        f"{prefix}_log_loss_ratio": _ratio(fresh["log_loss_after"], fresh["log_loss_before"]),
        f"{prefix}_ece_after_le_before": after <= before,
    }


def one_seed(workdir: Path, seed: int, fresh: Path) -> dict[str, float | bool]:
    """The hard data with ``seed``, the default run and the cross-validation run; figures."""
    project = workdir / f"seed_{seed}"
    copy_project(project)
    if not QUICK:
        held_out_more(project, SPLIT_RATIOS)
    sizes = QUICK_SETTINGS if QUICK else {}
    seeds = {
        "ingestion.split.seed": seed,
        "evaluation.fold_seed": seed,
        "finetune.seed": seed,
    }
    log = project / "run.log"
    metrics_file = project / "data/08_reporting/metrics.json"
    started = time.perf_counter()
    _kedro(
        project,
        log,
        "--pipelines=demo_data",
        f"--params={_params({**DATA, 'demo_data.seed': seed, **sizes})}",
    )
    _kedro(project, log, f"--params={_params({**seeds, **sizes})}")
    default = json.loads(metrics_file.read_text())
    n_bins = load_parameters(project, "demo")["reporting"]["calibration_bins"]
    default_fresh = fresh_calibration(project, fresh, default["calibration"], n_bins, log)
    cv_settings = {**seeds, **sizes, **CROSS_VALIDATION}
    _kedro(project, log, "--pipelines=finetune,reporting", f"--params={_params(cv_settings)}")
    cv_run = json.loads(metrics_file.read_text())
    cv_fresh = fresh_calibration(project, fresh, cv_run["calibration"], n_bins, log)
    figures = {
        **figures_of(default, cv_run),
        **_fresh_figures(default_fresh, "fresh_calibration"),
        **_fresh_figures(cv_fresh, "fresh_cv_calibration"),
    }
    print(
        f"   seed {seed}: {time.perf_counter() - started:.0f} s, "
        + ", ".join(
            f"{k} {v}" if isinstance(v, bool) else f"{k} {v:.4g}" for k, v in figures.items()
        ),
        flush=True,
    )
    shutil.rmtree(project / "data")  # keep only the log and the MLflow runs
    return {**figures, "seconds": round(time.perf_counter() - started, 1)}


def run(workdir: Path) -> dict[str, Any]:
    """Every seed, then the figures over the seeds."""
    fresh = fresh_images(workdir)
    per_seed = [one_seed(workdir, seed, fresh) for seed in SEEDS]
    for figures in per_seed:  # the measured things hold (not goals)
        assert 0.0 <= figures["hard_single_auroc"] <= 1.0, figures
        assert figures["calibration_ece_before"] >= 0.0, figures
    return {
        **summarise(per_seed),
        "evaluation.seeds": list(SEEDS),
        "evaluation.settings": {
            "data": DATA,
            **({} if QUICK else {"split_ratios": list(SPLIT_RATIOS)}),
            "fresh": FRESH,
            "cross_validation": CROSS_VALIDATION,
            **({"quick": QUICK_SETTINGS} if QUICK else {}),
        },
    }

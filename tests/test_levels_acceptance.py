"""ACCEPTANCE (levels): a BreakHis-like source through the whole DAG, read per patient.

Patient id and magnification live in the file names, as in BreakHis
(``SOB_M_DC-14-2523-100-001.png``), with several images per patient at two magnifications.
The run goes from ingestion to reporting in a throw-away copy of the project with a tiny
configuration (32 px, the small CNN, one epoch per phase) and must leave a ``metrics.json``
whose ``levels.patient`` counts the test patients with an AUROC interval from the cluster
bootstrap, and whose ``subgroups`` are by magnification (read with
``ingestion.column_patterns``). Until ingestion knows ``column_patterns``, that test is
skipped (it says so) and the same run without the magnification runs instead
(:func:`test_breakhis_like_source_is_read_per_patient`); once it does, only the acceptance
test runs (one whole run either way).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.whole_dag import copy_project

pytestmark = pytest.mark.slow

#: Patients per class and, per patient, images at each magnification.
PATIENTS_PER_CLASS = 8
IMAGES_PER_MAGNIFICATION = 2
MAGNIFICATIONS = ("40", "100")
SUBTYPES = {"benign": ("B", "A", "adenosis"), "malignant": ("M", "DC", "ductal_carcinoma")}
#: What ingestion reads off the BreakHis names (docs/datasets.md).
BREAKHIS = {
    "label_pattern": "breast/(benign|malignant)/",
    "group_pattern": r"SOB_[BM]_[A-Z]+-(\d+-[0-9A-Z]+)-",
    "split": {"ratios": [0.5, 0.25, 0.25]},
}
MAGNIFICATION_PATTERN = {"magnification": r"-(\d+)-\d+\.png$"}
STAGES = ["ingestion", "validation", "augmentation", "backbone_selection", "finetune", "reporting"]


def _png(rng: np.random.Generator, malignant: bool, patient_shift: float) -> bytes:
    """A 32 px grey image: a bright blob for malignant, the patient's own brightness."""
    pixels = rng.normal(90 + patient_shift, 12, (32, 32))
    if malignant:
        pixels[8:24, 8:24] += 60
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_breakhis(root: Path, seed: int = 0) -> int:
    """A BreakHis-like tree under ``root``; returns the number of images written."""
    rng = np.random.default_rng(seed)
    count = 0
    for label, (letter, code, subtype) in SUBTYPES.items():
        for p in range(PATIENTS_PER_CLASS):
            patient = f"14-{1000 + 10 * p + (letter == 'M')}"
            shift = rng.normal(0, 15)
            folder = root / "histology_slides/breast" / label / "SOB" / subtype
            folder = folder / f"SOB_{letter}_{code}_{patient}"
            for magnification in MAGNIFICATIONS:
                for k in range(1, IMAGES_PER_MAGNIFICATION + 1):
                    name = f"SOB_{letter}_{code}-{patient}-{magnification}-{k:03d}.png"
                    path = folder / f"{magnification}X" / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(_png(rng, label == "malignant", shift))
                    count += 1
    return count


def _tiny_environment(project: Path, source: Path, with_magnification: bool) -> None:
    """``conf/levels``: the BreakHis reading and a tiny run; no external site."""
    ingestion = {**BREAKHIS, "source_dir": str(source), "external_dir": None}
    if with_magnification:
        ingestion["column_patterns"] = MAGNIFICATION_PATTERN
    parameters = {
        "ingestion": ingestion,
        "validation": {"min_per_class": 1},
        "augmentation": {"image_size": 32, "preview": {"rows": 1, "augmented_per_image": 1}},
        "backbone_selection": {
            "candidates": {"mobilenet_v3_small": None, "efficientnet_b0": None},
            "epochs": 1,
            "repeats": 1,
            "head_search": {"n_trials": 1, "epochs": 1},
        },
        "finetune": {"phase1": {"epochs": 1}, "phase2": {"epochs": 1}},
        "reporting": {
            "bootstrap": {"n_resamples": 50},
            "gradcam": {"per_class": 1},
            "ood_images": {"per_kind": 2},
            "champion": {"min_ci_low": 0.0},
            "subgroups": ["magnification"] if with_magnification else [],
        },
    }
    env = project / "conf/levels"
    env.mkdir(parents=True)
    (env / "parameters.yml").write_text(yaml.safe_dump(parameters))
    (env / "globals.yml").write_text(
        yaml.safe_dump({"source_dir": str(source), "external_dir": None})
    )


def _run_stages(project: Path, monkeypatch) -> dict:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from breast_cancer_pipeline import context as project_context

    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    # Pipelines built by an earlier session of this process are rebuilt from this one's.
    monkeypatch.setattr(project_context, "_built_from", None)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="levels") as session:
        session.run(pipeline_names=STAGES)
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    return json.loads((project / "data/08_reporting/metrics.json").read_text())


def _breakhis_run(tmp_path: Path, monkeypatch, with_magnification: bool):
    project = tmp_path / "project"
    project.mkdir()
    copy_project(project)
    source = tmp_path / "BreaKHis_v1"
    assert write_breakhis(source) == 2 * PATIENTS_PER_CLASS * 2 * IMAGES_PER_MAGNIFICATION
    _tiny_environment(project, source, with_magnification)
    metrics = _run_stages(project, monkeypatch)
    import pandas as pd

    manifest = pd.read_parquet(project / "data/03_primary/validated_manifest.parquet")
    return metrics, manifest


def _ingestion_reads_column_patterns() -> bool:
    from breast_cancer_pipeline.pipelines.ingestion.parameters import IngestionParams

    return "column_patterns" in IngestionParams.model_fields


def _check_patient_level(metrics: dict, manifest) -> None:
    test = manifest[manifest["split"] == "test"]
    patient = metrics["levels"]["patient"]
    assert patient["n"] == test["group"].nunique() >= 2
    assert patient["n_images"] == len(test) == metrics["n_test"]
    assert patient["bootstrap"] == "cluster"
    assert patient["auroc_ci_low"] is not None and patient["auroc_ci_high"] is not None
    assert patient["auroc_ci_low"] <= patient["auroc_ci_high"]
    # Several images per patient: the image level's intervals resample patients too.
    assert metrics["bootstrap"] == "cluster"
    assert metrics["n_test_patients"] == patient["n"]
    assert metrics["decision_curve"]["patient"]["n"] == patient["n"]


@pytest.mark.skipif(
    not _ingestion_reads_column_patterns(),
    reason="ACCEPTANCE (levels): needs ingestion.column_patterns (the columns at ingestion)",
)
def test_acceptance_breakhis_levels_and_subgroups_by_magnification(tmp_path, monkeypatch):
    metrics, manifest = _breakhis_run(tmp_path, monkeypatch, with_magnification=True)
    _check_patient_level(metrics, manifest)
    by_magnification = metrics["subgroups"]["columns"]["magnification"]
    assert list(by_magnification) == list(MAGNIFICATIONS)
    test = manifest[manifest["split"] == "test"]
    for magnification, found in by_magnification.items():
        assert found["n"] == (test["magnification"].astype(str) == magnification).sum()


@pytest.mark.skipif(
    _ingestion_reads_column_patterns(),
    reason="the acceptance test above runs the same, with the magnification",
)
def test_breakhis_like_source_is_read_per_patient(tmp_path, monkeypatch):
    metrics, manifest = _breakhis_run(tmp_path, monkeypatch, with_magnification=False)
    _check_patient_level(metrics, manifest)
    assert list(metrics["subgroups"]["columns"]) == ["site"]

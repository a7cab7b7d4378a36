"""ACCEPTANCE (tiles): large images whose only class signal is a few pixels wide.

Malignant images carry clusters of small dark specks (4 px); benign images carry as many
clusters of faint blobs (8 px), of the same darkness once shrunk, on the same textured pink
background. Resized to 48 x 64 px, a speck and a blob are the same faint dot, so the
whole-image pipeline has nothing to learn; cut into tiles at half resolution, the specks stay
sharp dots and the blobs stay faint smudges.

The whole DAG runs once with ``augmentation.tiles`` (ingestion to reporting, in a throw-away
copy of the project), then the model-input, training and reporting stages run again on the
same ingested images with plain resizing and the same training budget. The test AUROCs of
both ``metrics.json`` are compared.
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

#: Images per class, and the source images' size (height, width).
PER_CLASS = 28
SHAPE = (384, 512)
#: Clusters per image, specks (or blobs) per cluster.
CLUSTERS, PER_CLUSTER = 6, 4
SPECK, SPECK_DEPTH = 4, 110  # malignant: 4 px, 110 levels darker
#: Benign: 8 px blobs as dark as a speck once shrunk 8 times (both about 14 levels then).
BLOB, BLOB_DEPTH = 8, 32
TILES = {"size": 32, "stride": 32, "scale": 2.0, "aggregation": "top_k_mean", "top_k": 2}
TRAINING_STAGES = ["augmentation", "backbone_selection", "finetune", "reporting"]


def _image(rng: np.random.Generator, malignant: bool, shape: tuple[int, int] = SHAPE) -> bytes:
    """A textured pink field with clusters of specks (malignant) or of faint blobs (benign)."""
    height, width = shape
    coarse = rng.normal(0, 10, (height // 16 + 1, width // 16 + 1))
    texture = np.kron(coarse, np.ones((16, 16)))[:height, :width] + rng.normal(0, 8, shape)
    pixels = np.array([205.0, 160.0, 185.0])[None, None, :] + texture[..., None]
    side, depth = (SPECK, SPECK_DEPTH) if malignant else (BLOB, BLOB_DEPTH)
    for _ in range(CLUSTERS):
        cy, cx = rng.integers(24, height - 24), rng.integers(24, width - 24)
        for _ in range(PER_CLUSTER):
            y, x = cy + rng.integers(-12, 12), cx + rng.integers(-12, 12)
            pixels[y : y + side, x : x + side] -= depth * rng.uniform(0.8, 1.2)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB").save(buffer, "PNG")
    return buffer.getvalue()


def write_images(root: Path, seed: int = 0) -> None:
    """``root/<class>/<n>.png``, :data:`PER_CLASS` images of each class."""
    rng = np.random.default_rng(seed)
    for label in ("benign", "malignant"):
        (root / label).mkdir(parents=True)
        for n in range(PER_CLASS):
            (root / label / f"{label[0]}{n:03d}.png").write_bytes(_image(rng, label == "malignant"))


def _parameters(source: Path, augmentation: dict) -> dict:
    """A small run: the small CNN only, a few epochs, no export, no head search."""
    return {
        "ingestion": {
            "source_dir": str(source),
            "external_dir": None,
            "split": {"ratios": [0.45, 0.2, 0.35]},
        },
        "validation": {"min_per_class": 1},
        "augmentation": {**augmentation, "preview": {"rows": 1, "augmented_per_image": 1}},
        "backbone_selection": {
            "candidates": {"mobilenet_v3_small": None, "efficientnet_b0": None},
            "epochs": 1,
            "repeats": 1,
            "head_search": {"n_trials": 0},
        },
        "finetune": {
            "phase1": {"epochs": 1},
            "phase2": {"epochs": 6, "learning_rate": 0.002, "unfreeze": {"fraction": 1.0}},
        },
        "reporting": {
            "bootstrap": {"n_resamples": 50},
            "gradcam": {"per_class": 1},
            "ood_images": {"per_kind": 1},
            "champion": {"min_ci_low": 0.0},
        },
        "inference": {"export": {"onnx": False, "litert": False}},
    }


def _environment(project: Path, name: str, source: Path, augmentation: dict) -> None:
    env = project / "conf" / name
    env.mkdir(parents=True)
    (env / "parameters.yml").write_text(yaml.safe_dump(_parameters(source, augmentation)))
    (env / "globals.yml").write_text(
        yaml.safe_dump({"source_dir": str(source), "external_dir": None})
    )


def _run(project: Path, env: str, stages: list[str], monkeypatch) -> dict:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from breast_cancer_pipeline import context as project_context

    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setattr(project_context, "_built_from", None)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        session.run(pipeline_names=stages)
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    return json.loads((project / "data/08_reporting/metrics.json").read_text())


def test_acceptance_tiles_find_what_resizing_loses(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    copy_project(project)
    source = tmp_path / "specks"
    write_images(source)
    _environment(project, "tiles", source, {"image_size": [48, 64], "tiles": TILES})
    _environment(project, "resized", source, {"image_size": [48, 64], "tiles": None})
    stages = ["ingestion", "validation", *TRAINING_STAGES]
    tiled = _run(project, "tiles", stages, monkeypatch)
    serving = json.loads((project / "data/06_models/serving_model/serving.json").read_text())
    served = _served_large_images(project)
    resized = _run(project, "resized", TRAINING_STAGES, monkeypatch)

    n_test = tiled["n_test"]
    assert tiled["tiles"]["n_images"]["test"] == n_test == resized["n_test"]
    assert tiled["tiles"]["n_tiles"]["test"] == n_test * 6 * 8  # 192 x 256 px in 32 px tiles
    assert tiled["tiles"]["aggregation"] == "top_k_mean"
    assert serving["tiles"]["size"] == 32 and serving["image_size"] == 32
    assert tiled["auroc"] >= 0.85, (tiled["auroc"], resized["auroc"])
    assert resized["auroc"] <= 0.7, (tiled["auroc"], resized["auroc"])

    # The trained tile model, served: one image-level answer per 2048 x 1536 request, with the
    # top tiles' boxes (64 px at scale 2) inside the image.
    assert served["error"].tolist() == ["", ""]
    assert served["label"].tolist() == ["malignant", "benign"]
    for tops, height, width in served[["top_tiles", "image_height", "image_width"]].itertuples(
        index=False
    ):
        assert (height, width) == (1536, 2048) and len(tops) == TILES["top_k"]
        for tile in tops:
            assert tile["height"] == tile["width"] == 64
            assert 0 <= tile["top"] <= height - 64 and 0 <= tile["left"] <= width - 64


def _served_large_images(project: Path):
    """The run's packaged model answering a malignant and a benign 2048 x 1536 request."""
    import base64

    import pandas as pd

    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.pipelines.inference.nodes import predict_requests
    from tests.params import base_params

    model = ServingModelDataset(str(project / "data/06_models/serving_model")).load()
    rng = np.random.default_rng(7)
    images = [_image(rng, malignant, (1536, 2048)) for malignant in (True, False)]
    requests = pd.DataFrame(
        {"image": [base64.b64encode(data).decode() for data in images], "id": ["m", "b"]}
    )
    return predict_requests(requests, model, base_params("inference"))

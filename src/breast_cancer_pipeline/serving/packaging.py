"""Packaging: how the served model is logged and registered, and what it records.

At the end of a training run kedro-mlflow logs a pyfunc model that bundles the served part of
the inference pipeline with the persisted ``serving_model``, and registers it as
:data:`REGISTERED_MODEL_NAME` (:func:`with_served_model`). The logged model carries

* :func:`serving_signature`: the request columns (:data:`IMAGE_COLUMN`, :data:`ID_COLUMNS`,
  :data:`EXPLAIN_COLUMN`, :data:`~breast_cancer_pipeline.serving.levels.LEVEL_COLUMNS`),
  which MLflow checks before the model runs;
* :func:`example_request`: a one-row request, scored once when the model is logged;
* :func:`served_tiles`: the tiling of a network trained on tiles, in its configuration;
* :func:`serving_requirements`: the pip requirements of what serving imports, nothing more.
  Left to itself, MLflow records the project's whole locked environment (``uv export`` of
  every dependency), so the served model would ask for dvc, kedro-viz, great-expectations,
  optuna and the rest of the training tools.

MLflow and kedro-mlflow are imported only when a model is packaged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from breast_cancer_pipeline.serving.levels import LEVEL_COLUMNS

if TYPE_CHECKING:
    from kedro.pipeline import Pipeline

logger = logging.getLogger(__name__)

#: Name of the served model in the MLflow model registry.
REGISTERED_MODEL_NAME = "breast-cancer-classifier"

#: The request column holding the image (base64 text in a request, a file loader in a batch).
IMAGE_COLUMN = "image"
#: Optional request columns echoed back with each prediction.
ID_COLUMNS = ("id", "path")
#: The optional request column asking for a row's Grad-CAM overlay (true/false per row).
EXPLAIN_COLUMN = "explain"
#: Side in pixels of the example request's image (any size is resized by the model's decoder).
EXAMPLE_SIZE = 32

#: The distributions the served model imports directly, each pinned to the trained version.
SERVING_DISTRIBUTIONS = (
    "kedro",  # the served pipeline and its catalog
    "kedro-mlflow",  # the pyfunc wrapper (KedroPipelineModel)
    "kedro-datasets",  # which that wrapper imports without declaring it
    "mlflow",
    "tensorflow",  # the classifier
    "keras",
    "onnxruntime",  # inference.serving.runtime: onnxruntime (model.onnx)
    "numpy",
    "pandas",  # requests and predictions
    "pillow",  # decoding PNG, JPEG, TIFF
    "pydicom",  # decoding DICOM, with its permissively licensed plugins:
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "python-gdcm",
)


def serving_signature() -> Any:
    """The served model's MLflow signature: the request columns.

    ``image`` (base64 text of an image file) is required, ``id`` and ``path`` (any type) are
    optional and echoed back, ``explain`` (true/false per row, optional) asks for the row's
    Grad-CAM overlay (``gradcam_png``; any type here, so that the node refuses a value such
    as "yes" instead of MLflow reading every non-empty text as true), and ``group``,
    ``laterality``, ``view`` and ``study`` (any type, optional, echoed back) identify the
    patient, breast or exam a row belongs to: the rows sharing a level's key also get that
    level's answer (:mod:`breast_cancer_pipeline.serving.levels`). MLflow checks a request
    against it before the model runs: a request without ``image`` is an HTTP 400 naming the
    missing and the extra columns; undeclared columns are dropped. The output (``label``,
    ``p_<class>``...) depends on the trained classes and is described in docs/serving.md.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    optional = (*ID_COLUMNS, EXPLAIN_COLUMN, *LEVEL_COLUMNS)
    columns = [ColSpec("string", IMAGE_COLUMN)]
    columns += [ColSpec(AnyType(), name, required=False) for name in optional]
    return ModelSignature(inputs=Schema(columns))


def example_request() -> Any:
    """A one-row request: a small grey gradient PNG, base64-encoded, with an ``id``.

    MLflow stores it with the model and, when logging, scores it once through the logged
    model (a request that fails there is reported in the run's log).
    """
    import base64
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image

    ramp = np.linspace(0, 255, EXAMPLE_SIZE, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.tile(ramp, (EXAMPLE_SIZE, 1))).save(buffer, format="PNG")
    return pd.DataFrame(
        {IMAGE_COLUMN: [base64.b64encode(buffer.getvalue()).decode()], "id": ["example"]}
    )


def served_tiles(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The ``tiles`` key of a serving configuration, from the classifier's metadata.

    A network trained on tiles (``augmentation.tiles``) answers for a whole image only after
    the image is cut as in training and the tiles' answers combined: its configuration
    carries the tiling (:meth:`~breast_cancer_pipeline.tiles.TileSpec.config`) under
    ``tiles``. A whole-image network's has no such key.

    Args:
        metadata: The classifier's metadata (``classifier_metadata.json``).

    Returns:
        ``{"tiles": {...}}``, or ``{}`` without tiles.
    """
    from breast_cancer_pipeline.tiles import TileSpec  # noqa: PLC0415

    spec = TileSpec.from_params(metadata.get("tiles"))
    return {} if spec is None else {"tiles": spec.config()}


def serving_requirements() -> list[str]:
    """Pin each of :data:`SERVING_DISTRIBUTIONS` to the installed version.

    One that is not installed under that name (``tensorflow-cpu`` installed by hand instead
    of ``tensorflow``) is recorded unpinned, with a warning, rather than failing every Kedro
    command that builds the pipelines.

    Returns:
        Requirement strings such as ``"keras==3.15.1"``, for ``mlflow.pyfunc.log_model``'s
        ``pip_requirements``.
    """
    pins = []
    for name in SERVING_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            logger.warning("%s is not installed: the served model will require it unpinned", name)
            pins.append(name)
    return pins


def with_served_model(training: Pipeline, inference: Pipeline, input_name: str) -> Pipeline:
    """Make ``training`` log and register the served model at the end of its MLflow run.

    kedro-mlflow's hook then logs a pyfunc model bundling ``inference`` with the persisted
    ``serving_model`` (written by the reporting pipeline), with :func:`serving_signature`,
    :func:`example_request` and :func:`serving_requirements`, and registers it as
    :data:`REGISTERED_MODEL_NAME`; ``training`` must therefore produce every input of
    ``inference`` but ``input_name``.
    :func:`~breast_cancer_pipeline.serving.registry.record_version` (from
    :class:`~breast_cancer_pipeline.hooks.ChampionHook`) then decides whether the new version
    becomes ``@champion``.

    Args:
        training: A pipeline ending with the reporting pipeline.
        inference: The served pipeline: a request in, predictions out.
        input_name: The dataset of ``inference`` each request's dataframe is fed into.

    A slice of it (``kedro run --nodes=...``, ``--from-nodes``...) that no longer produces the
    served model's inputs runs as a plain pipeline, logging and registering nothing
    (kedro-mlflow's own ``PipelineML`` refuses such a slice).

    Returns:
        A kedro-mlflow ``PipelineML`` that runs exactly the nodes of ``training``.
    """
    return _served_model_pipeline()(
        nodes=training.nodes,
        inference=inference,
        input_name=input_name,
        log_model_kwargs={
            "name": "model",
            "registered_model_name": REGISTERED_MODEL_NAME,
            "signature": serving_signature(),
            "input_example": example_request(),
            # What serving imports, not the whole training environment (dvc, optuna...).
            "pip_requirements": serving_requirements(),
        },
    )


@cache
def _served_model_pipeline() -> type:
    """kedro-mlflow's ``PipelineML`` whose slices without the served model's inputs are plain."""
    from kedro_mlflow.pipeline.pipeline_ml import KedroMlflowPipelineMLError, PipelineML

    class ServedModelPipeline(PipelineML):
        def _turn_pipeline_to_ml(self, pipeline: Pipeline) -> Pipeline:
            try:  # kedro-mlflow's own check: the slice must produce the inference's inputs
                return type(self)(
                    nodes=pipeline.nodes,
                    inference=self.inference,
                    input_name=self.input_name,
                    kpm_kwargs=self.kpm_kwargs,
                    log_model_kwargs=self.log_model_kwargs,
                )
            except KedroMlflowPipelineMLError as exc:
                logger.info(
                    "This slice of the pipeline runs without logging or registering the "
                    "served model: %s",
                    " ".join(str(exc).split()),
                )
                return pipeline

    return ServedModelPipeline

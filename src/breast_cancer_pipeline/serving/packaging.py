"""The pip requirements recorded with the served model: what serving imports, nothing more.

Left to itself, MLflow records the project's whole locked environment (``uv export`` of every
dependency), so the served model would ask for dvc, kedro-viz, great-expectations, optuna and
the rest of the training tools. The served model (kedro-mlflow's ``KedroPipelineModel`` running
:func:`~breast_cancer_pipeline.pipelines.inference.pipeline.create_serving_pipeline` on a
``ServingModelDataset``) imports only the distributions below and what they require;
``tests/test_serving_requirements.py`` checks that against what loading it imports.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

logger = logging.getLogger(__name__)

#: The distributions the served model imports directly, each pinned to the trained version.
SERVING_DISTRIBUTIONS = (
    "kedro",  # the served pipeline and its catalog
    "kedro-mlflow",  # the pyfunc wrapper (KedroPipelineModel)
    "kedro-datasets",  # which that wrapper imports without declaring it
    "mlflow",
    "tensorflow",  # the classifier
    "keras",
    "numpy",
    "pandas",  # requests and predictions
    "pillow",  # decoding PNG, JPEG, TIFF
    "pydicom",  # decoding DICOM, with its permissively licensed plugins:
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "python-gdcm",
)


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

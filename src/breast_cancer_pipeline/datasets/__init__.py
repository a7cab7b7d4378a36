"""Custom Kedro datasets for what kedro-datasets does not cover.

Every dataset here writes atomically: the data goes to a temporary file beside the target and is
renamed into place, so a killed run never leaves a half-written artefact that a later stage would
trust.

The names below are imported on first use (PEP 562), so ``import breast_cancer_pipeline.datasets``
is cheap: MLflow (behind ``LazyMlflowModelTrackingDataset``) and TensorFlow are imported only
when a dataset that needs them is used. The catalog's ``breast_cancer_pipeline.datasets.X``
types resolve through the same lookup.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Exported name -> module that defines it.
_EXPORTS = {
    "BinaryFileDataset": "breast_cancer_pipeline.datasets.binary_file",
    "ImageFolderDataset": "breast_cancer_pipeline.datasets.image_folder",
    "ImageStoreDataset": "breast_cancer_pipeline.datasets.image_store",
    "KerasModelDataset": "breast_cancer_pipeline.datasets.keras_model",
    "LazyMlflowModelTrackingDataset": "breast_cancer_pipeline.datasets.mlflow_model",
    "NamedTablesDataset": "breast_cancer_pipeline.datasets.named_tables",
    "NumpyArraysDataset": "breast_cancer_pipeline.datasets.numpy_arrays",
    # The plain records the datasets exchange with the nodes.
    "ArrayRows": "breast_cancer_pipeline.file_records",
    "FileTask": "breast_cancer_pipeline.file_records",
    "SourceFile": "breast_cancer_pipeline.file_records",
    "StoreCommit": "breast_cancer_pipeline.file_records",
    "StoredFiles": "breast_cancer_pipeline.file_records",
    "StorePlan": "breast_cancer_pipeline.file_records",
}

__all__ = [
    "ArrayRows",
    "BinaryFileDataset",
    "FileTask",
    "ImageFolderDataset",
    "ImageStoreDataset",
    "KerasModelDataset",
    "LazyMlflowModelTrackingDataset",
    "NamedTablesDataset",
    "NumpyArraysDataset",
    "SourceFile",
    "StoreCommit",
    "StorePlan",
    "StoredFiles",
]

if TYPE_CHECKING:
    from breast_cancer_pipeline.datasets.binary_file import BinaryFileDataset
    from breast_cancer_pipeline.datasets.image_folder import ImageFolderDataset
    from breast_cancer_pipeline.datasets.image_store import ImageStoreDataset
    from breast_cancer_pipeline.datasets.keras_model import KerasModelDataset
    from breast_cancer_pipeline.datasets.mlflow_model import LazyMlflowModelTrackingDataset
    from breast_cancer_pipeline.datasets.named_tables import NamedTablesDataset
    from breast_cancer_pipeline.datasets.numpy_arrays import NumpyArraysDataset
    from breast_cancer_pipeline.file_records import (
        ArrayRows,
        FileTask,
        SourceFile,
        StoreCommit,
        StoredFiles,
        StorePlan,
    )


def __getattr__(name: str) -> Any:
    """Import an exported dataset or record on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

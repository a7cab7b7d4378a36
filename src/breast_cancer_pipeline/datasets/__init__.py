"""Custom Kedro datasets for what kedro-datasets does not cover.

Every dataset here writes atomically: the data goes to a temporary file beside the target and is
renamed into place, so a killed run never leaves a half-written artefact that a later stage would
trust.
"""

from breast_cancer_pipeline.datasets.binary_file import BinaryFileDataset
from breast_cancer_pipeline.datasets.image_folder import ImageFolderDataset, SourceFile
from breast_cancer_pipeline.datasets.image_store import (
    FileTask,
    ImageStoreDataset,
    StoredFiles,
    StorePlan,
)
from breast_cancer_pipeline.datasets.keras_model import KerasModelDataset
from breast_cancer_pipeline.datasets.mlflow_model import LazyMlflowModelTrackingDataset
from breast_cancer_pipeline.datasets.numpy_arrays import NumpyArraysDataset

__all__ = [
    "BinaryFileDataset",
    "FileTask",
    "ImageFolderDataset",
    "ImageStoreDataset",
    "KerasModelDataset",
    "LazyMlflowModelTrackingDataset",
    "NumpyArraysDataset",
    "SourceFile",
    "StorePlan",
    "StoredFiles",
]

"""kedro-mlflow's model dataset, importing the MLflow flavour only when a model is logged."""

from __future__ import annotations

import importlib
from importlib.util import find_spec
from types import ModuleType
from typing import Any

from kedro_mlflow.io.models import MlflowModelTrackingDataset


class _LazyModule:
    """Stands in for a module and imports it on first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attribute)


class LazyMlflowModelTrackingDataset(MlflowModelTrackingDataset):
    """``MlflowModelTrackingDataset`` whose flavour module is imported when first used.

    kedro-mlflow instantiates every catalog dataset at the start of each run; the plain
    dataset imports its flavour then (``mlflow.keras`` imports TensorFlow, ~14 s), so even the
    data stages paid for it. This subclass only checks that the flavour exists.
    """

    @property
    def _mlflow_model_module(self) -> Any:
        if find_spec(self._flavor) is None:
            raise ImportError(f"MLflow flavour module '{self._flavor}' not found")
        return _LazyModule(self._flavor)

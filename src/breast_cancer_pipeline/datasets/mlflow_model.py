"""kedro-mlflow's model dataset, importing the MLflow flavour only when a model is logged.

Keras models are logged with their signature and an input example.
"""

from __future__ import annotations

import importlib
import os
from importlib.util import find_spec
from types import ModuleType
from typing import Any

import numpy as np
from kedro_mlflow.io.models import MlflowModelTrackingDataset


class _LazyModule:
    """Stands in for a module and imports it on first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attribute)


def keras_signature(model: Any) -> tuple[Any, np.ndarray]:
    """The MLflow signature of a single-input Keras model, and a one-image input example.

    Args:
        model: A built Keras model (e.g. the classifier: ``uint8`` images in, probabilities
            out).

    Returns:
        ``(signature, example)``: tensor specs of the input and output (batch dimension
        ``-1``) and an all-zero input batch of one.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(tensor: Any, name: str | None) -> Any:
        shape = (-1, *(-1 if d is None else int(d) for d in tuple(tensor.shape)[1:]))
        return TensorSpec(np.dtype(str(tensor.dtype)), shape, name)

    output_name = (getattr(model, "output_names", None) or [None])[0]
    signature = ModelSignature(
        Schema([spec(model.inputs[0], model.inputs[0].name)]),
        Schema([spec(model.outputs[0], output_name)]),
    )
    example_shape = (1, *(1 if d == -1 else d for d in signature.inputs.inputs[0].shape[1:]))
    return signature, np.zeros(example_shape, dtype=np.dtype(str(model.inputs[0].dtype)))


class _KerasFlavour:
    """``mlflow.keras`` logging with an input example (mlflow issue 16183, MLflow 3.17).

    ``mlflow.keras.save_model`` writes ``input_example.json`` into the model directory before
    it creates that directory, so ``mlflow.keras.log_model(..., input_example=...)`` fails
    with ``FileNotFoundError``; this flavour creates it first. Everything else is
    ``mlflow.keras``'s.
    """

    __name__ = "mlflow.keras"  # the flavour's name in MLflow's records

    @staticmethod
    def save_model(path: str, **kwargs: Any) -> Any:
        """``mlflow.keras.save_model`` into ``path``, created first."""
        import mlflow.keras

        os.makedirs(path, exist_ok=True)
        return mlflow.keras.save_model(path=path, **kwargs)

    def log_model(self, model: Any, **kwargs: Any) -> Any:
        """``mlflow.keras.log_model`` through :meth:`save_model`."""
        from mlflow.models import Model

        return Model.log(
            artifact_path=kwargs.pop("artifact_path", None), flavor=self, model=model, **kwargs
        )

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module("mlflow.keras"), attribute)


class LazyMlflowModelTrackingDataset(MlflowModelTrackingDataset):
    """``MlflowModelTrackingDataset`` whose flavour module is imported when first used.

    kedro-mlflow instantiates every catalog dataset at the start of each run; the plain
    dataset imports its flavour then (``mlflow.keras`` imports TensorFlow, ~14 s), so even the
    data stages paid for it. This subclass only checks that the flavour exists.

    A Keras model (``flavor: mlflow.keras``) is logged with :func:`keras_signature`'s
    signature and input example unless ``save_args`` sets a ``signature``.
    """

    @property
    def _mlflow_model_module(self) -> Any:
        if find_spec(self._flavor) is None:
            raise ImportError(f"MLflow flavour module '{self._flavor}' not found")
        return _KerasFlavour() if self._flavor == "mlflow.keras" else _LazyModule(self._flavor)

    def _save(self, model: Any) -> None:
        if self._flavor != "mlflow.keras" or "signature" in self._save_args:
            super()._save(model)
            return
        signature, example = keras_signature(model)
        save_args = self._save_args
        self._save_args = {"signature": signature, "input_example": example, **save_args}
        try:
            super()._save(model)
        finally:
            self._save_args = save_args

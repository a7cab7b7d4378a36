"""The one tiny finetune set-up of the tests: model input, backbone, head search, parameters.

Used by the finetune tests, the training tests and the scripts they start in subprocesses
(which import it with the project root on ``PYTHONPATH``: :func:`subprocess_env`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tests.params import PROJECT, _merge, base_params

SELECTED = {"backbone": "small_cnn", "weights": None}
#: What the head search writes to best_head.json.
BEST_HEAD = {"dropout": 0.1, "dense_units": None, "learning_rate": 0.01, "batch_size": 16}
AUGMENTATION = {"flip": "horizontal"}
#: A run of seconds: one phase-1 epoch, two phase-2 epochs, the whole small CNN unfrozen.
TINY = {
    "seed": 1,
    "deterministic": False,
    "strategy": "none",
    "batch_size": 8,
    "phase1": {"epochs": 1, "learning_rate": None},
    "phase2": {
        "epochs": 2,
        "learning_rate": 0.001,
        "unfreeze": {"from_layer": None, "fraction": 1.0},
    },
}


def model_input(n: int = 24, size: int = 16) -> dict[str, np.ndarray]:
    """Two classes of noisy grey images; a bright square marks class 1 (easy to learn)."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, size, size, 1)).astype(np.uint8)
    x[y == 1, 4:12, 4:12] = 220
    return {
        "x_train": x,
        "y_train": y,
        "x_val": x[:8],
        "y_val": y[:8],
        "x_test": x[8:16],
        "y_test": y[8:16],
        "paths_test": np.array([f"t{i}.png" for i in range(8)]),
        "class_names": np.array(["benign", "malignant"]),
    }


# Loaded at import: Kedro configures logging when its project module is first imported, which
# would drop pytest's log capture in the middle of a test.
_TINY_PARAMS = base_params("finetune", **TINY)


def finetune_params(**overrides: Any) -> dict[str, Any]:
    """``conf/base``'s ``finetune`` block with :data:`TINY`, then ``overrides``, merged in."""
    return _merge(_TINY_PARAMS, overrides)


def run_finetune(
    checkpoint_dir: str | Path, data: dict[str, np.ndarray] | None = None, **overrides: Any
) -> tuple[Any, dict[str, Any], dict[str, Any], Any]:
    """Run the finetune node on the tiny set-up, checkpointing to ``checkpoint_dir``."""
    from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory
    from breast_cancer_pipeline.pipelines.finetune.nodes import finetune_classifier

    return finetune_classifier(
        model_input() if data is None else data,
        SELECTED,
        BEST_HEAD,
        AUGMENTATION,
        CheckpointDirectory(checkpoint_dir),
        finetune_params(**overrides),
    )


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a test's Python subprocess: this helper importable, TF quiet."""
    path = os.pathsep.join(p for p in (str(PROJECT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}

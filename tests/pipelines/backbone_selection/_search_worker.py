"""A head search in its own process, for the storage tests.

``python -m tests.pipelines.backbone_selection._search_worker PARAMS_JSON DELAY OUT_JSON``.

The heads are scored by a cheap function of their settings (no TensorFlow), each after
``delay`` seconds; the features are the same in every process, so every worker opens the same
study. Writes the best head to ``OUT_JSON``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from breast_cancer_pipeline.pipelines.backbone_selection import nodes


def features() -> dict[str, np.ndarray]:
    """Fixed features (the study's digest covers them)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 10)
    x = rng.normal(size=(20, 4)).astype("float32")
    return {"features_train": x, "features_val": x, "y_train": y, "y_val": y}


def score(head: dict) -> float:
    """Best at dropout 0.3 and learning rate 3e-3."""
    return 1.0 - abs(head["dropout"] - 0.3) - abs(math.log10(head["learning_rate"]) + 2.5) / 10


def fake_fit_head(delay: float):
    """A stand-in for ``nodes.fit_head`` that waits ``delay`` seconds."""

    def fit_head(features, head, epochs, seed, predict_batch_size, steps_per_execution):
        time.sleep(delay)
        return {"val_auroc": score(head), "val_accuracy": 0.5}

    return fit_head


if __name__ == "__main__":
    params, delay, out = json.loads(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
    nodes.fit_head = fake_fit_head(delay)
    best, _ = nodes.search_head({"candidate": "small", "score": 0.5}, params, small=features())
    out.write_text(json.dumps(best))

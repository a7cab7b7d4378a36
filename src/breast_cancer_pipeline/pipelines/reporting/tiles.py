"""Tile-level figures of a network trained on tiles: ``metrics.json``'s ``tiles`` block.

Every other figure of the report is computed on image rows (the tiles' probabilities combined
per image, :mod:`.predictions`); this block says what the image rows were made from: how many
tiles each split had, how many an image gave, how well a single tile separates the positive
class from the rest (its label: its image's, or its mask's with ``labels: mask``), and the
rule that combined them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breast_cancer_pipeline.manifest import SPLITS
from breast_cancer_pipeline.metrics import binary_auroc, json_safe
from breast_cancer_pipeline.tiles import spec_of_arrays


def tile_metrics(
    serving_model: Any, model_input: dict[str, np.ndarray], params: dict
) -> dict[str, Any]:
    """The ``tiles`` block: tile counts, tiles per image, the test tiles' AUROC, the rule.

    Args:
        serving_model: The packaged model (its test-time views, no temperature: a tile's
            probability before its image's are combined).
        model_input: The model-input arrays.
        params: The ``reporting`` parameters (``positive_class``, ``batch_size``).

    Returns:
        ``{}`` for a whole-image network; else ``n_tiles`` and ``n_images`` per split,
        ``tiles_per_image`` (mean over the three splits), ``tile_auroc`` (test tiles,
        ``p(positive)`` against the tile's label; null with one class among them),
        ``tile_size``, ``labels`` and ``aggregation``.
    """
    spec = spec_of_arrays(model_input)
    if spec is None:
        return {}
    n_tiles = {split: len(model_input[f"y_{split}"]) for split in SPLITS}
    n_images = {split: len(model_input[f"paths_{split}"]) for split in SPLITS}
    class_names = [str(c) for c in np.asarray(model_input["class_names"])]
    positive = class_names.index(params["positive_class"])
    x_test, batch = model_input["x_test"], int(params["batch_size"])
    parts = [
        serving_model.averaged_proba(np.asarray(x_test[start : start + batch]))[:, positive]
        for start in range(0, len(x_test), batch)
    ]
    score = np.concatenate(parts) if parts else np.empty(0)
    is_positive = np.asarray(model_input["y_test"]) == positive
    return json_safe(
        {
            "n_tiles": n_tiles,
            "n_images": n_images,
            "tiles_per_image": sum(n_tiles.values()) / max(1, sum(n_images.values())),
            "tile_auroc": binary_auroc(is_positive, score),
            "tile_size": spec.size,
            "scale": spec.scale,
            "labels": spec.labels,
            "aggregation": spec.aggregation,
        }
    )

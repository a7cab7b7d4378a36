"""Inference: new image files in, class probabilities and label out.

Images are decoded and resized by the same functions as in training
(:mod:`breast_cancer_pipeline.imaging`); the model holds all other preprocessing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.imaging import ImageDecodeError, decode_image, resize_image

logger = logging.getLogger(__name__)


def predict_images(
    images: Mapping[str, Callable[[], bytes]],
    classifier: Any,
    metadata: dict[str, Any],
    params: dict,
) -> pd.DataFrame:
    """Score every image file; a file that cannot be decoded gets an error row.

    Args:
        images: ``{relative path: load function}`` of the folder to score.
        classifier: The trained Keras classifier.
        metadata: The classifier's metadata (class names, image size, colour mode).
        params: The ``inference`` parameters.

    Returns:
        One row per file: ``path``, ``label``, ``p_<class>`` columns and ``error``.
    """
    class_names = metadata["class_names"]
    decoded, rows = [], []
    for path in sorted(images):
        try:
            pixels = decode_image(images[path](), path, color_mode=metadata["color_mode"])
        except ImageDecodeError as exc:
            rows.append({"path": path, "error": str(exc)})
            continue
        decoded.append(resize_image(pixels, metadata["image_size"]))
        rows.append({"path": path, "error": ""})
    proba = (
        classifier.predict(np.stack(decoded), batch_size=params["batch_size"], verbose=0)
        if decoded
        else np.empty((0, len(class_names)))
    )
    good = iter(proba)
    for row in rows:
        if not row["error"]:
            p = next(good)
            row["label"] = class_names[int(np.argmax(p))]
            row.update({f"p_{c}": float(v) for c, v in zip(class_names, p, strict=True)})
    frame = pd.DataFrame(rows, columns=["path", "label", *(f"p_{c}" for c in class_names), "error"])
    logger.info(
        "Scored %d images (%d could not be decoded)", len(decoded), len(rows) - len(decoded)
    )
    return frame

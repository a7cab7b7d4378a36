"""Augmentation: the model's input arrays, the augmentation spec and a preview of it.

The model input is decoded once from the validated PNGs into ``uint8`` arrays at the
configured size (``data/05_model_input/arrays``, memory-mapped by the later stages).
Augmentation itself runs inside the model as Keras layers (see
:func:`breast_cancer_pipeline.modeling.build_augmenter`), active only in training, so
serving never re-implements it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.imaging import decode_image, resize_image

logger = logging.getLogger(__name__)

_FLIPS = {None, "horizontal", "vertical", "horizontal_and_vertical"}


def prepare_model_input(
    images: Mapping[str, Callable[[], bytes]], manifest: pd.DataFrame, params: dict
) -> dict[str, np.ndarray]:
    """Decode and resize every image of the manifest into per-split arrays.

    Args:
        images: ``{manifest path: load function}`` of the intermediate PNGs.
        manifest: The validated manifest.
        params: The ``augmentation`` parameters (``image_size``).

    Returns:
        ``x_<split>`` (``uint8``, N×S×S×C), ``y_<split>`` (class index), ``paths_<split>``
        for train, val and test, and ``class_names`` (sorted labels; the index order).

    Raises:
        ValueError: ``image_size`` is invalid or a manifest path has no PNG.
    """
    size = params["image_size"]
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"augmentation.image_size must be an integer ≥ 16, got {size!r}")
    color_mode = "rgb" if int(manifest["channels"].max()) == 3 else "grayscale"
    class_names = sorted(manifest["label"].unique())
    index = {name: i for i, name in enumerate(class_names)}
    missing = sorted(set(manifest["path"]) - set(images))
    if missing:
        raise ValueError(
            f"{len(missing)} manifest paths have no converted PNG (first: {missing[0]!r}); "
            "rerun the ingestion pipeline"
        )
    arrays: dict[str, np.ndarray] = {"class_names": np.array(class_names, dtype=np.str_)}
    for split in ("train", "val", "test"):
        rows = manifest[manifest["split"] == split]
        channels = 3 if color_mode == "rgb" else 1
        x = np.empty((len(rows), size, size, channels), dtype=np.uint8)
        for i, path in enumerate(rows["path"]):
            x[i] = resize_image(decode_image(images[path](), path, color_mode=color_mode), size)
        arrays[f"x_{split}"] = x
        arrays[f"y_{split}"] = rows["label"].map(index).to_numpy(dtype=np.int32)
        arrays[f"paths_{split}"] = rows["path"].to_numpy(dtype=np.str_)
    logger.info(
        "Model input: %s images of %dx%d px, %s",
        "/".join(str(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")),
        size,
        size,
        color_mode,
    )
    return arrays


def build_augmentation_spec(params: dict) -> dict[str, Any]:
    """Validate the augmentation parameters into the spec the model factory reads.

    Raises:
        ValueError: A transform's value is out of range; the message names the parameter.
    """
    spec = {
        "flip": params.get("flip"),
        "rotation": float(params.get("rotation") or 0.0),
        "zoom": float(params.get("zoom") or 0.0),
        "translation": float(params.get("translation") or 0.0),
        "contrast": float(params.get("contrast") or 0.0),
    }
    if spec["flip"] not in _FLIPS:
        raise ValueError(
            f"augmentation.flip must be one of {sorted(f for f in _FLIPS if f)} or null, "
            f"got {spec['flip']!r}"
        )
    for key in ("rotation", "zoom", "translation", "contrast"):
        if not 0.0 <= spec[key] < 1.0:
            raise ValueError(f"augmentation.{key} must be in [0, 1), got {spec[key]}")
    return spec


def preview_augmentation(
    model_input: dict[str, np.ndarray], spec: dict[str, Any], params: dict
) -> Any:
    """A grid of training images (left column) and augmented versions of each.

    Returns:
        A matplotlib figure.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from breast_cancer_pipeline.modeling import build_augmenter  # noqa: PLC0415

    preview = params["preview"]
    rng = np.random.default_rng(preview["seed"])
    x, y = model_input["x_train"], model_input["y_train"]
    rows = min(preview["rows"], len(x))
    picks = np.sort(rng.choice(len(x), size=rows, replace=False))
    augmenter = build_augmenter(spec, seed=preview["seed"])
    cols = preview["augmented_per_image"] + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for r, i in enumerate(picks):
        image = np.asarray(x[i], dtype=np.float32)[None]
        for c in range(cols):
            shown = image[0] if c == 0 else np.asarray(augmenter(image, training=True))[0]
            ax = axes[r][c]
            ax.imshow(np.clip(shown, 0, 255).astype(np.uint8).squeeze(), cmap="gray")
            ax.set_axis_off()
            if c == 0:
                ax.set_title(str(model_input["class_names"][y[i]]), fontsize=8)
    fig.suptitle("Training images (left) and augmented versions", fontsize=9)
    fig.tight_layout()
    return fig

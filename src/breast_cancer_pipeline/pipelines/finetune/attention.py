"""The attention head of ``augmentation.tiles.aggregation: attention``, after the tile model.

The trained tile classifier is frozen; its penultimate features of each training image's
tiles make that image's bag, and the gated attention head
(:mod:`breast_cancer_pipeline.training.attention`) learns the image labels from the bags,
stopping early on the validation images' bags.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breast_cancer_pipeline.tiles import attention_settings, image_classes, spec_of_arrays

#: The splits whose bags fit the head: trained on the first, stopped early on the second.
SPLITS = ("train", "val")


def split_bags(
    forward: Any, model_input: dict[str, np.ndarray], split: str, batch_size: int
) -> list[np.ndarray]:
    """The tile classifier's penultimate features of each image's tiles in ``split``.

    Args:
        forward: The tile classifier's forward pass
            (:func:`~breast_cancer_pipeline.serving.model.compiled_forward`).
        model_input: The tile arrays (``x_<split>``, ``tile_image_<split>``,
            ``image_y_<split>``).
        split: The split's name.
        batch_size: Tiles per forward pass.

    Returns:
        One ``(n_i, d)`` array per image of the split, in the split's image order.

    Raises:
        KeyError: The arrays hold no tiles (``augmentation.tiles`` is null).
    """
    from breast_cancer_pipeline.serving.model import penultimate_features
    from breast_cancer_pipeline.training.attention import bags_from_tiles

    key = f"tile_image_{split}"
    if key not in model_input:
        raise KeyError(
            f"the model input has no {key!r}: the attention head needs tiles; set "
            "augmentation.tiles (or another augmentation.tiles.aggregation)"
        )
    features = penultimate_features(forward, model_input[f"x_{split}"], batch_size)
    n_images = len(model_input[f"image_y_{split}"])
    return bags_from_tiles(features, model_input[key], n_images)


def fit_tile_attention(
    classifier: Any,
    model_input: dict[str, np.ndarray],
    augmentation: dict[str, Any],
    finetune: dict[str, Any],
    reporting: dict[str, Any],
) -> Any:
    """Fit the attention-MIL head on the frozen tile features of the train split's images.

    Args:
        classifier: The trained tile classifier.
        model_input: The tile arrays of the augmentation pipeline.
        augmentation: The ``augmentation`` parameters (``tiles.attention`` is the head's,
            :func:`~breast_cancer_pipeline.tiles.attention_settings`).
        finetune: The ``finetune`` parameters (``seed``).
        reporting: The ``reporting`` parameters (``batch_size``: tiles per forward pass).

    Returns:
        The trained head (a Keras model from a padded bag of tile features and its mask to
        the image's class probabilities and the tiles' attention weights).

    Raises:
        KeyError: The arrays hold no tiles.
    """
    from breast_cancer_pipeline.serving.model import compiled_forward
    from breast_cancer_pipeline.training.attention import fit_attention_head

    forward = compiled_forward(classifier)
    bags = {
        split: split_bags(forward, model_input, split, int(reporting["batch_size"]))
        for split in SPLITS
    }
    # The image classes: a tile network's internal background class is no image's label.
    classes = image_classes(list(model_input["class_names"]), spec_of_arrays(model_input))
    return fit_attention_head(
        bags["train"],
        np.asarray(model_input["image_y_train"]),
        attention_settings(augmentation["tiles"]),
        int(finetune["seed"]),
        validation=(bags["val"], np.asarray(model_input["image_y_val"])),
        num_classes=len(classes),
    )

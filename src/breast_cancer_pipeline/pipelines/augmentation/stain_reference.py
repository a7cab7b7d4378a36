"""The stain normalisation reference, fitted on a sample of the training images.

The maths is :func:`breast_cancer_pipeline.stain.fit_reference`; the reference travels in the
augmentation spec to the model factory, which puts it in the model's stain normalisation layer.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def fit_stain_reference(model_input: dict[str, np.ndarray], params: dict) -> dict[str, Any]:
    """The reference of ``augmentation.stain.normalize``, fitted on evenly spread training images.

    Args:
        model_input: The model-input arrays (``x_train``, memory-mapped).
        params: The ``augmentation`` parameters (``stain``: ``normalize``,
            ``reference_images``).

    Returns:
        :func:`~breast_cancer_pipeline.stain.fit_reference`'s reference
        (``{"normalize": None}`` when normalisation is off; TensorFlow is then not imported).

    Raises:
        ValueError: The training images are not RGB, or (``macenko``) none has stained tissue.
    """
    method = params["stain"]["normalize"]
    if method is None:
        return {"normalize": None}
    from breast_cancer_pipeline.stain import fit_reference, reference_sample  # noqa: PLC0415

    x_train = model_input["x_train"]
    picks = reference_sample(len(x_train), params["stain"]["reference_images"])
    reference = fit_reference(x_train[picks] if len(picks) else x_train, method)
    logger.info("Stain reference (%s) fitted on %d training images", method, len(picks))
    return reference

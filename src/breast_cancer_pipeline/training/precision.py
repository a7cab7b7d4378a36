"""Mixed precision: the Keras dtype policy a model is built and trained under.

:func:`mixed_precision_policy` resolves ``finetune.mixed_precision`` on this machine;
:func:`dtype_policy` sets it for the build and the training only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import tensorflow as tf

from breast_cancer_pipeline.training.options import MIXED_PRECISION

logger = logging.getLogger(__name__)

#: GPUs from this compute capability on have the tensor cores that make float16 pay.
MIXED_FLOAT16_MIN_CAPABILITY = (7, 0)


def mixed_precision_policy(setting: str) -> str:
    """The Keras dtype policy that ``finetune.mixed_precision`` names on this machine.

    ``auto`` is ``mixed_float16`` when every visible GPU has compute capability ≥ 7.0
    (Volta and later), otherwise ``float32`` (on CPUs mixed precision only adds casts);
    ``off`` is ``float32``; a policy name is itself.

    Raises:
        ValueError: An unknown setting.
    """
    if setting not in MIXED_PRECISION:
        raise ValueError(
            f"finetune.mixed_precision must be one of {list(MIXED_PRECISION)}, got {setting!r}"
        )
    if setting == "off":
        return "float32"
    if setting != "auto":
        return setting
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [
        tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0)
        for gpu in gpus
    ]
    if capabilities and min(capabilities) >= MIXED_FLOAT16_MIN_CAPABILITY:
        return "mixed_float16"
    return "float32"


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Make ``name`` Keras's global dtype policy inside the block; restore the previous after.

    Layers take the global policy when they are built, so a model built inside the block
    computes in ``name`` (its variables stay float32); code after the block is unaffected.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    if name != previous.name:
        logger.info("Keras dtype policy %s", name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)

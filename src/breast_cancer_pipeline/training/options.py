"""The values of the training settings that name a choice, without importing TensorFlow.

The ``finetune`` parameter schema checks a run's settings against them before the first node;
:mod:`.distribution` and :mod:`.precision` resolve them when training starts.
"""

from __future__ import annotations

from typing import Literal, get_args

Strategy = Literal["auto", "none", "mirrored", "multi_worker"]
#: The ``finetune.strategy`` values (``tf.distribute``), see
#: :func:`~breast_cancer_pipeline.training.distribution.make_strategy`.
STRATEGIES: tuple[str, ...] = get_args(Strategy)

MixedPrecision = Literal["auto", "off", "mixed_float16", "mixed_bfloat16"]
#: The ``finetune.mixed_precision`` values, see
#: :func:`~breast_cancer_pipeline.training.precision.mixed_precision_policy`.
MIXED_PRECISION: tuple[str, ...] = get_args(MixedPrecision)

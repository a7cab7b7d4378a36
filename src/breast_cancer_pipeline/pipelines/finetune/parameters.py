"""The ``finetune`` parameters (defaults: ``conf/base/parameters_finetune.yml``).

Checked by :class:`~breast_cancer_pipeline.hooks.ParameterCheckHook` before the first node of a
run, so ``--params finetune.phase1.epochs=-1`` fails in seconds rather than after backbone
selection. What depends on the data (class names in ``class_weight``, the number of weights)
is checked when training starts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StrictBool,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from breast_cancer_pipeline.param_schema import Params
from breast_cancer_pipeline.training.options import MixedPrecision, Strategy


def _one_message(message: str) -> WrapValidator:
    """A validator that replaces pydantic's errors for each union member by ``message``."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(message) from None

    return WrapValidator(check)


ClassWeight = Annotated[
    Literal["auto", "none"] | dict[str, PositiveFloat] | list[PositiveFloat],
    _one_message(
        "must be auto, none, {class name: weight > 0, ...} or a list of weights > 0 in class order"
    ),
]
JitCompile = Annotated[Literal["auto"] | StrictBool, _one_message("must be auto, true or false")]


class ReduceLR(Params):
    """Learning rate × ``factor`` after ``patience`` epochs without a better validation AUROC."""

    factor: Annotated[float, Field(gt=0.0, lt=1.0)]
    patience: NonNegativeInt
    min_lr: NonNegativeFloat


class Unfreeze(Params):
    """Where phase 2 unfreezes the base: from a layer index or for its top fraction."""

    from_layer: NonNegativeInt | None
    fraction: Annotated[float, Field(gt=0.0, le=1.0)] | None

    @model_validator(mode="after")
    def _exactly_one(self) -> Unfreeze:
        if (self.from_layer is None) == (self.fraction is None):
            raise ValueError(
                "set exactly one of from_layer (e.g. 300) or fraction (e.g. 0.3), the other "
                f"to null; got from_layer={self.from_layer}, fraction={self.fraction}"
            )
        return self


class Phase1(Params):
    """The head on the frozen base."""

    epochs: NonNegativeInt
    #: Null: the learning rate found by the head search (``best_head.json``).
    learning_rate: PositiveFloat | None


class Phase2(Params):
    """The base unfrozen, at a lower learning rate."""

    epochs: NonNegativeInt
    learning_rate: PositiveFloat
    unfreeze: Unfreeze


class FinetuneParams(Params):
    """Fine-tuning the selected backbone in two phases, resumably."""

    seed: NonNegativeInt
    #: TensorFlow op determinism (two runs with the same seed give identical metrics).
    deterministic: bool
    strategy: Strategy
    #: The Keras dtype policy of training: ``auto`` (``mixed_float16`` on GPUs of compute
    #: capability ≥ 7, else float32), ``off`` (float32), or a mixed policy by name.
    mixed_precision: MixedPrecision
    #: XLA compilation of the training step: ``auto`` (Keras's choice: off on CPUs) or a bool.
    jit_compile: JitCompile
    #: Continue a killed run from its checkpoint (false: delete it and start over).
    resume: bool
    #: Images per batch and per replica; null: the head search's batch size.
    batch_size: PositiveInt | None
    #: ``auto`` | ``none`` | ``{class name: weight}`` | ``[w0, w1, ...]`` (weights > 0).
    class_weight: ClassWeight
    #: Draw every class equally often in training batches.
    oversample: bool
    #: Overrides of the head search's head (``dropout`` in [0, 1), ``dense_units`` > 0 or null).
    head: dict[Literal["dropout", "dense_units"], int | float | None]
    #: Epochs without a better validation AUROC before a phase stops.
    early_stopping_patience: NonNegativeInt
    reduce_lr: ReduceLR
    phase1: Phase1
    phase2: Phase2

    @field_validator("head")
    @classmethod
    def _head_ranges(cls, head: dict[str, Any]) -> dict[str, Any]:
        dropout, units = head.get("dropout"), head.get("dense_units")
        if "dropout" in head and (dropout is None or not 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if units is not None and (not isinstance(units, int) or units < 1):
            raise ValueError(f"dense_units must be a positive integer or null, got {units!r}")
        return head


SCHEMA = FinetuneParams

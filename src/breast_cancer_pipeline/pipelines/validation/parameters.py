"""The ``validation`` parameters (defaults: ``conf/base/parameters_validation.yml``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, StringConstraints, create_model, field_validator

from breast_cancer_pipeline.param_schema import Params

from .expectations import SPECS

#: What a failed check does: ``error`` stops the run at the gate, ``warning`` is logged.
Severity = Literal["error", "warning"]

#: One severity per check of :data:`~.expectations.SPECS`, every one required.
SeverityParams = create_model(
    "SeverityParams",
    __base__=Params,
    __doc__="One severity per check name; the names are those of `expectations.SPECS`.",
    **{name: (Severity, Field(description=spec.why)) for name, spec in SPECS.items()},
)

Label = Annotated[str, StringConstraints(min_length=1)]
#: A manifest column's name.
Column = Annotated[str, StringConstraints(min_length=1)]
#: One allowed value of a descriptive column (``40`` and ``"40"`` are the same value).
Value = Annotated[str | int | float, Field(union_mode="left_to_right")]


class MaskGateParams(Params):
    """The gate's checks of lesion masks (``validation.masks``)."""

    #: Classes whose images must have a non-empty mask; null: every class but ``normal``.
    lesion_classes: Annotated[list[Label], Field(min_length=1)] | None
    #: ``error`` or ``warning`` for every mask check.
    severity: Severity


class ValidationParams(Params):
    """The data gate's thresholds, and what each failed check does."""

    #: Allowed labels; ``None`` accepts any label (``labels_in_set`` is then skipped).
    expected_labels: Annotated[list[Label], Field(min_length=1)] | None
    #: Fewest images of each class in each split.
    min_per_class: PositiveInt
    #: Largest / smallest class count in train.
    max_imbalance: float = Field(ge=1)
    #: Smallest accepted width and height, in pixels.
    min_size: PositiveInt
    #: Largest accepted |observed - configured| share of images per split.
    split_tolerance: float = Field(ge=0, le=1)
    #: Per-image intensity standard deviation (0-255) below which an image is blank.
    min_std: float = Field(ge=0)
    #: Largest shift of a split's mean intensity from train's, in train SDs.
    drift_max_shift: float = Field(ge=0)
    #: Descriptive column -> the values it may hold (besides empty).
    allowed_values: dict[Column, Annotated[list[Value], Field(min_length=1)]]
    #: Descriptive column -> the largest share of images for which it may be empty.
    max_missing_share: dict[Column, Annotated[float, Field(ge=0, le=1)]]
    #: Where the catalog saves the validation report; quoted in messages.
    report_path: Annotated[str, StringConstraints(min_length=1)]
    #: ``error`` or ``warning`` for each check.
    severity: SeverityParams  # type: ignore[valid-type]
    #: The checks of lesion masks.
    masks: MaskGateParams

    @field_validator("expected_labels")
    @classmethod
    def _distinct(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None and len(set(labels)) != len(labels):
            repeated = sorted({label for label in labels if labels.count(label) > 1})
            raise ValueError(
                f"labels must be distinct, e.g. [benign, malignant]; repeated: {repeated}"
            )
        return labels


SCHEMA = ValidationParams

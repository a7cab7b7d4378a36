"""The ``evaluation`` parameters (defaults: ``conf/base/parameters_evaluation.yml``).

Read by finetune (the folds), reporting and, through reporting, the served model.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from breast_cancer_pipeline.evaluation.aggregation import LEVEL_AGGREGATIONS
from breast_cancer_pipeline.evaluation.levels import LEVEL_LABELS
from breast_cancer_pipeline.param_schema import Params


class EvaluationParams(Params):
    """How the model's figure is estimated, and what the served model applies to its outputs."""

    #: Patient-grouped, stratified folds of the non-test images; 1 keeps the single split.
    folds: PositiveInt
    #: Seed of the fold assignment and of each fold's validation carving.
    fold_seed: int
    #: Share of the training folds' patients that becomes each fold's validation set.
    fold_val_share: Annotated[float, Field(gt=0.0, le=0.5)]
    #: Serve (and report on the test split) the average of the fold models; needs folds >= 2.
    ensemble: bool
    #: Test-time augmentation averaged in probability space.
    tta: Literal["off", "flips", "flips_shifts"]
    #: Augmented views averaged per image (the original included) when ``tta`` is not off.
    tta_passes: PositiveInt
    #: Shift of a shifted view (``flips_shifts``), a fraction of the image side (at least 1 px).
    tta_shift: Annotated[float, Field(gt=0.0, le=0.25)]
    #: Recalibration of the probabilities, fitted on the validation predictions.
    calibration: Literal["temperature", "temperature_floor", "none"]
    #: Level name → the manifest columns that identify one (``patient: [group]``).
    levels: dict[Annotated[str, Field(min_length=1)], list[Annotated[str, Field(min_length=1)]]]
    #: How a level's images' probabilities are combined (``evaluation/aggregation.py``).
    level_aggregation: Literal[LEVEL_AGGREGATIONS]  # type: ignore[valid-type]
    #: How a level's label comes from its images' labels.
    level_label: Literal[LEVEL_LABELS]  # type: ignore[valid-type]

    @field_validator("levels")
    @classmethod
    def _levels_named_with_columns(cls, levels: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, columns in levels.items():
            if name == "image":
                raise ValueError("'image' is the images' own level: name the level otherwise")
            if not columns or len(set(columns)) != len(columns):
                raise ValueError(
                    f"level {name!r} needs one or more distinct manifest columns, got {columns}"
                )
        return levels

    @field_validator("tta", mode="before")
    @classmethod
    def _unquoted_off(cls, value: object) -> object:
        from breast_cancer_pipeline.evaluation.tta import mode_of  # noqa: PLC0415

        return mode_of(value)

    @model_validator(mode="after")
    def _ensemble_needs_folds(self) -> EvaluationParams:
        if self.ensemble and self.folds < 2:
            raise ValueError(
                f"ensemble: true averages the fold models, but folds = {self.folds}: "
                "set evaluation.folds to 2 or more, or ensemble to false"
            )
        return self

    @model_validator(mode="after")
    def _passes_exist(self) -> EvaluationParams:
        from breast_cancer_pipeline.evaluation.tta import views  # noqa: PLC0415

        views(self.tta, self.tta_passes)  # its ValueError names both parameters
        return self


SCHEMA = EvaluationParams

"""The ``backbone_selection`` parameters (defaults: ``parameters_backbone_selection.yml``).

Candidate backbones are checked against the registry of :mod:`breast_cancer_pipeline.backbones`
and their weights with :func:`~breast_cancer_pipeline.backbones.check_weights` (a local weights
file must exist), so a typo fails before the first image is read, with the valid names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
)

from breast_cancer_pipeline.backbones import check_weights, get_backbone
from breast_cancer_pipeline.param_schema import Params

#: A dropout rate: a fraction of the head's inputs, below 1.
DropoutRate = Annotated[float, Field(ge=0.0, lt=1.0)]


def active_candidates(candidates: Mapping[str, Any]) -> dict[str, Any]:
    """The candidates that run: those not set to null.

    An environment cannot delete a key of ``conf/base`` (Kedro merges it), so
    ``efficientnet_b0: null`` in ``conf/<env>/parameters.yml`` drops that candidate there.
    """
    return {name: spec for name, spec in candidates.items() if spec is not None}


class Candidate(Params):
    """One backbone to compare."""

    #: A registered backbone name (``breast_cancer_pipeline.backbones.REGISTRY``).
    backbone: str
    #: ``imagenet``, the path of a local weights file, or null (random initialisation).
    weights: str | None

    @field_validator("backbone")
    @classmethod
    def _registered(cls, name: str) -> str:
        get_backbone(name, "backbone")
        return name

    @field_validator("weights")
    @classmethod
    def _weights_exist(cls, weights: str | None, info: ValidationInfo) -> str | None:
        if "backbone" in info.data:  # else the backbone's own error is reported
            check_weights(weights, get_backbone(info.data["backbone"]), "weights")
        return weights


class Head(Params):
    """The classification head trained on cached features."""

    dropout: DropoutRate
    #: Units of a hidden dense layer, or null for none.
    dense_units: PositiveInt | None
    learning_rate: PositiveFloat
    batch_size: PositiveInt


class SearchSpace(Params):
    """Where Optuna looks: ``[low, high]`` ranges and lists of choices."""

    #: Uniform ``[low, high]``.
    dropout: tuple[float, float]
    #: Log-uniform ``[low, high]``.
    learning_rate: tuple[PositiveFloat, PositiveFloat]
    #: Choices (null = no hidden layer).
    dense_units: Annotated[list[PositiveInt | None], Field(min_length=1)]
    #: Choices.
    batch_size: Annotated[list[PositiveInt], Field(min_length=1)]

    @field_validator("dropout")
    @classmethod
    def _dropout_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= value[0] <= value[1] < 1.0:
            raise ValueError("must be [low, high] with 0 <= low <= high < 1")
        return value

    @field_validator("learning_rate")
    @classmethod
    def _learning_rate_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError("must be [low, high] with low <= high")
        return value


class HeadSearch(Params):
    """Optuna (TPE) search of the winner's head, kept in a study (``study.py``)."""

    #: Completed trials the study should hold; 0 keeps the configured ``head``.
    n_trials: NonNegativeInt
    #: Epochs per trial.
    epochs: PositiveInt
    space: SearchSpace
    #: SQLAlchemy URL of Optuna's storage (``sqlite:///optuna.db``), or null: in memory.
    storage: str | None
    #: The study's name, before the digest of its features and settings.
    study_name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    #: Resume the study when it exists in ``storage`` (else such a run fails).
    load_if_exists: bool

    @field_validator("storage")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        if url is not None and "://" not in url:
            raise ValueError(
                "must be a database URL such as sqlite:///optuna.db or "
                "postgresql://user@host/db, or null to keep the study in memory"
            )
        return url


class BackboneSelectionParams(Params):
    """Comparing candidate backbones on cached features, then searching the winner's head."""

    #: Candidate id → backbone; null drops a candidate of ``conf/base`` in an environment.
    candidates: Annotated[dict[str, Candidate | None], Field(min_length=1)]
    #: The metric the winner is chosen by.
    metric: Literal["val_auroc", "val_accuracy"]
    #: Near-tie band within which the faster candidate wins.
    tolerance: Annotated[float, Field(ge=0.0)]
    seed: NonNegativeInt
    #: Images per batch through the frozen backbone.
    extraction_batch_size: PositiveInt
    #: Feature vectors per batch when a head scores the validation features.
    predict_batch_size: PositiveInt
    #: Head training steps per compiled call (the same updates, less per-step overhead).
    steps_per_execution: PositiveInt
    #: Extra passes of the training images through the augmentation layers.
    augmented_passes: NonNegativeInt
    #: Epochs of each head training.
    epochs: PositiveInt
    #: Seeds each candidate's head is trained with.
    repeats: PositiveInt
    head: Head
    head_search: HeadSearch
    #: Resolution of the comparison chart.
    figure_dpi: PositiveInt

    @field_validator("candidates")
    @classmethod
    def _one_left(cls, candidates: dict[str, Candidate | None]) -> dict[str, Candidate | None]:
        if not active_candidates(candidates):
            raise ValueError(
                "every candidate is null (dropped): keep at least one, e.g. "
                "small_cnn: {backbone: small_cnn, weights: null}"
            )
        return candidates


SCHEMA = BackboneSelectionParams

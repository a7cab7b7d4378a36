"""The ``reporting`` parameters (defaults: ``conf/base/parameters_reporting.yml``).

Checked before the first node runs. What needs the data is checked by the nodes: that
``positive_class`` is one of the model's classes, and that the validation split holds images
of it and of the others.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from breast_cancer_pipeline.param_schema import Params

#: A share in [0, 1].
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Bootstrap(Params):
    """The stratified percentile bootstrap of the test metrics' confidence intervals."""

    #: Resamples of the test split (each resamples within every class).
    n_resamples: PositiveInt
    #: Coverage of the interval, strictly between 0 and 1.
    confidence: Annotated[float, Field(gt=0.0, lt=1.0)]
    #: Seed of the resampling (``numpy.random.default_rng``).
    seed: NonNegativeInt


class Gallery(Params):
    """The gallery of the most confident test errors."""

    n_errors: PositiveInt


class GradCam(Params):
    """Grad-CAM overlays of the most confidently correct test images."""

    per_class: PositiveInt
    #: A layer of the backbone, or null for the backbone's output.
    layer: str | None
    #: Opacity of the heat map.
    alpha: Fraction


class Explanation(Params):
    """Grad-CAM checked against the experts' lesion masks (``metrics.json`` ``explanation``)."""

    #: With tiles, the most tiles of a test image whose Grad-CAM is computed and stitched.
    max_tiles: PositiveInt


class OodImages(Params):
    """The synthetic out-of-distribution set of the report (``evaluation.ood.ood_images``)."""

    #: Images of each kind.
    per_kind: PositiveInt
    #: Seed of the generator.
    seed: NonNegativeInt


class Champion(Params):
    """The gate a registered version passes to become the ``champion`` (the served one)."""

    #: The test metric compared; its ``<metric>_ci_low`` is the bootstrap interval's bound.
    metric: Literal["auroc", "auroc_positive"]
    #: The lowest acceptable lower bound of the metric's confidence interval.
    min_ci_low: Fraction
    #: How far below the current champion's metric a new champion may be.
    max_drop: Fraction


class DecisionCurve(Params):
    """The threshold probabilities of the decision curve (net benefit)."""

    #: Lowest threshold probability, in (0, 1).
    low: Annotated[float, Field(gt=0.0, lt=1.0)]
    #: Highest threshold probability, in (0, 1).
    high: Annotated[float, Field(gt=0.0, lt=1.0)]
    #: Step between two thresholds.
    step: Annotated[float, Field(gt=0.0, lt=1.0)]

    @model_validator(mode="after")
    def _ordered(self) -> DecisionCurve:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


#: Increasing band edges of a numeric subgroup column (``patient_age: [40, 50, 60, 70]``).
BandEdges = Annotated[list[float], Field(min_length=1)]


class ReportingParams(Params):
    """Operating point, test metrics, figures and report."""

    #: The class of the binary view; must be a class of the model (checked with the data).
    positive_class: Annotated[str, Field(min_length=1)]
    #: ``youden`` or a target sensitivity in (0, 1].
    threshold: Literal["youden"] | float
    #: Images per forward pass when predicting the validation and test splits.
    batch_size: PositiveInt
    bootstrap: Bootstrap
    #: Equal-width reliability bins (at least 2).
    calibration_bins: Annotated[int, Field(ge=2)]
    #: ECE of p(positive_class) above which the report lists poor calibration.
    ece_warning: Fraction
    gallery: Gallery
    gradcam: GradCam
    ood_images: OodImages
    figure_dpi: PositiveInt
    champion: Champion
    #: Manifest columns whose values are subgroups, or column → band edges (null: its values).
    subgroups: list[Annotated[str, Field(min_length=1)]] | dict[str, BandEdges | None]
    decision_curve: DecisionCurve
    explanation: Explanation

    @field_validator("subgroups")
    @classmethod
    def _increasing_edges(cls, value: Any) -> Any:
        for column, edges in value.items() if isinstance(value, dict) else []:
            if edges and any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"the band edges of {column!r} must increase, got {edges}")
        return value

    @field_validator("threshold", mode="before")
    @classmethod
    def _rule(cls, value: Any) -> Any:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if value == "youden" or (is_number and 0 < value <= 1):
            return value
        raise ValueError("must be a target sensitivity in (0, 1] such as 0.95, or 'youden'")


SCHEMA = ReportingParams


def check_positive_class(positive: str, class_names: list[str]) -> None:
    """Check ``reporting.positive_class`` against the model's classes (known with the data).

    Raises:
        ValueError: ``positive`` is not one of ``class_names``.
    """
    if positive not in class_names:
        raise ValueError(
            f"reporting.positive_class={positive!r} is not a class of the model "
            f"({', '.join(class_names)}): set it to one of them"
        )

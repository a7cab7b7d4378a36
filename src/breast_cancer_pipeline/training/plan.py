"""What a training run does, and what its phases share (no TensorFlow at import).

- :class:`FinetunePlan`: everything the run does, resolved from the ``finetune`` parameters
  and the head search (learning rates, batch size, head, epochs per phase, class weighting...).
- :class:`PhasePlan`: one of its two phases.
- :class:`TrainingRun`: the run's strategy, dtype policy, checkpoints, record and input
  pipelines, shared by the phases (:func:`~breast_cancer_pipeline.training.run.start_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The head settings taken from the head search (``best_head.json``) unless ``finetune.head``
#: overrides them.
HEAD_KEYS = ("dropout", "dense_units")


@dataclass(frozen=True)
class PhasePlan:
    """One training phase: how long, how fast, and (phase 2) how much of the base trains."""

    name: str
    epochs: int
    learning_rate: float
    from_layer: int | None
    fraction: float | None


@dataclass(frozen=True)
class FinetunePlan:
    """What a finetune run does, resolved from ``finetune`` and ``best_head.json``."""

    seed: int
    deterministic: bool
    strategy: str
    #: ``finetune.mixed_precision`` as set (``auto`` is resolved when training starts).
    mixed_precision: str
    jit_compile: str | bool
    resume: bool
    #: Images per batch and per replica.
    batch_size: int
    head: dict[str, Any]
    class_weight: Any
    oversample: bool
    early_stopping_patience: int
    reduce_lr: dict[str, float]
    phase1: PhasePlan
    phase2: PhasePlan

    @classmethod
    def from_params(cls, params: dict[str, Any], best_head: dict[str, Any]) -> FinetunePlan:
        """The plan of the ``finetune`` parameters; nulls are filled from the head search.

        Raises:
            ValueError: A null parameter whose value ``best_head.json`` does not hold.
        """
        phase1, phase2 = params["phase1"], params["phase2"]
        batch_size = params["batch_size"]
        if batch_size is None:
            batch_size = int(_from_best_head(best_head, "batch_size", "finetune.batch_size"))
        learning_rate = phase1["learning_rate"]
        if learning_rate is None:
            learning_rate = _from_best_head(
                best_head, "learning_rate", "finetune.phase1.learning_rate"
            )
        head = {
            key: params["head"][key]
            if key in params["head"]
            else _from_best_head(best_head, key, f"finetune.head.{key}")
            for key in HEAD_KEYS
        }
        return cls(
            seed=params["seed"],
            deterministic=params["deterministic"],
            strategy=params["strategy"],
            mixed_precision=params["mixed_precision"],
            jit_compile=params["jit_compile"],
            resume=params["resume"],
            batch_size=batch_size,
            head=head,
            class_weight=params["class_weight"],
            oversample=params["oversample"],
            early_stopping_patience=params["early_stopping_patience"],
            reduce_lr=dict(params["reduce_lr"]),
            phase1=PhasePlan("phase1", phase1["epochs"], learning_rate, None, None),
            phase2=PhasePlan(
                "phase2",
                phase2["epochs"],
                phase2["learning_rate"],
                phase2["unfreeze"]["from_layer"],
                phase2["unfreeze"]["fraction"],
            ),
        )


def _from_best_head(best_head: dict[str, Any], key: str, parameter: str) -> Any:
    if key not in best_head:
        raise ValueError(
            f"{parameter} is not set and best_head.json has no {key!r}: set {parameter} "
            "or rerun backbone_selection"
        )
    return best_head[key]


@dataclass
class TrainingRun:
    """What the phases of one run share."""

    plan: FinetunePlan
    #: The ``tf.distribute`` strategy.
    strategy: Any
    #: The Keras dtype policy the model is built and trained under.
    policy: str
    #: This worker's checkpoint handle.
    checkpoints: Any
    #: The run's :class:`~breast_cancer_pipeline.training.checkpoints.RunRecord`.
    record: Any
    n_classes: int
    train_data: Any
    steps: int
    val_data: Any
    class_weight: dict[int, float] | None
    #: Publish the epochs' metrics (the chief only, under several workers).
    publish: bool

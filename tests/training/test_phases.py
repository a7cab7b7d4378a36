"""The two fit phases: the head on the frozen base, then the base unfrozen and recompiled."""

import numpy as np
import pytest
from keras import layers

from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory
from breast_cancer_pipeline.training.distribution import make_strategy
from breast_cancer_pipeline.training.phases import (
    fit_head_phase,
    fit_unfrozen_phase,
    unfreeze,
)
from breast_cancer_pipeline.training.plan import FinetunePlan
from breast_cancer_pipeline.training.run import build_model, start_run
from tests.pipelines.finetune.helpers import (
    AUGMENTATION,
    BEST_HEAD,
    SELECTED,
    finetune_params,
    model_input,
)


def test_unfreeze_keeps_pretrained_batchnorm_frozen():
    from breast_cancer_pipeline.modeling import build_classifier

    model = build_classifier("mobilenet_v2", 2, 32, 3, None, {})
    base = model.get_layer("backbone")
    n = unfreeze(model, fraction=0.5, keep_batchnorm_frozen=True)
    trainable = [layer for layer in base.layers if layer.trainable]
    assert n == len(trainable) > 0
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in trainable)
    assert not any(layer.trainable for layer in base.layers[: len(base.layers) // 2])
    with pytest.raises(ValueError, match="exactly one"):
        unfreeze(model)


def _weights(model):
    base = model.get_layer("backbone")
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in base.layers}


def _changed(before, after):
    return sorted(
        name
        for name, weights in before.items()
        if any(not np.array_equal(a, b) for a, b in zip(weights, after[name], strict=True))
    )


def test_the_head_phase_trains_the_head_and_the_unfrozen_phase_the_top_of_the_base(tmp_path):
    unfrozen = {"epochs": 1, "unfreeze": {"from_layer": None, "fraction": 0.5}}
    plan = FinetunePlan.from_params(finetune_params(phase2=unfrozen), BEST_HEAD)
    data = model_input()
    store = CheckpointDirectory(tmp_path / "ckpt")
    run = start_run(data, SELECTED, AUGMENTATION, plan, make_strategy("none"), store)
    model = build_model(data, SELECTED, AUGMENTATION, run)
    start = _weights(model)
    fit_head_phase(model, run)
    assert _changed(start, _weights(model)) == []  # the base stayed frozen
    head_optimizer = model.optimizer
    after_head = _weights(model)
    fit_unfrozen_phase(model, run, keep_batchnorm_frozen=True)
    # Recompiled after unfreezing: a new optimizer, the phase's learning rate, and the top
    # half of the small CNN's convolutions trained while BatchNorm kept its statistics.
    assert model.optimizer is not head_optimizer
    assert run.record.histories["phase2"]["learning_rate"] == [pytest.approx(0.001)]
    assert _changed(after_head, _weights(model)) == ["block3_conv", "block4_conv"]
    assert run.record.completed == ["phase1", "phase2"]
    assert run.record.histories["phase2"]["epoch"] == [1]

"""Mixed precision and XLA wiring of finetune, checked on CPU (no GPU needed)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from breast_cancer_pipeline.training.run import build_classifier
from tests.pipelines.finetune.helpers import run_finetune


@pytest.fixture
def built(monkeypatch):
    """What each build and compile of the classifier saw, in order."""
    seen = SimpleNamespace(builds=[], compiles=[])
    compile_ = keras.Model.compile

    def spy_build(*args, **kwargs):
        model = build_classifier(*args, **kwargs)
        seen.builds.append((keras.mixed_precision.global_policy().name, model))
        return model

    def spy_compile(model, *args, **kwargs):
        compile_(model, *args, **kwargs)
        seen.compiles.append((model, type(model.optimizer).__name__, model.jit_compile))

    monkeypatch.setattr("breast_cancer_pipeline.training.run.build_classifier", spy_build)
    monkeypatch.setattr(keras.Model, "compile", spy_compile)
    return seen


def _conv_dtype(model):
    return model.get_layer("backbone").get_layer("block1_conv").compute_dtype


@pytest.mark.parametrize(
    ("policy", "compute", "optimizer"),
    [("mixed_bfloat16", "bfloat16", "Adam"), ("mixed_float16", "float16", "LossScaleOptimizer")],
)
def test_a_forced_policy_trains_in_it_and_returns_a_float32_classifier(
    tmp_path, built, policy, compute, optimizer
):
    model, metadata, history, _ = run_finetune(tmp_path / "ckpt", mixed_precision=policy)
    (trained_policy, trained), (copy_policy, copy) = built.builds
    # Built and trained under the policy; the softmax output stays float32.
    assert trained_policy == policy
    assert _conv_dtype(trained) == compute
    assert trained.output.dtype == "float32"
    # float16 needs loss scaling: Keras wraps the optimizer of a mixed_float16 model.
    assert [name for m, name, _ in built.compiles if m is trained] == [optimizer, optimizer]
    losses = history["phase1"]["loss"] + history["phase2"]["loss"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    # The policy does not leak to the rest of the process.
    assert keras.mixed_precision.global_policy().name == "float32"
    # What is returned is a float32 rebuild holding exactly the trained weights.
    assert model is copy and copy_policy == "float32"
    assert _conv_dtype(model) == "float32" and model.output.dtype == "float32"
    for got, want in zip(model.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert all(layer.trainable for layer in model.get_layer("backbone").layers)
    assert metadata["mixed_precision"] == policy
    probabilities = model.predict(np.zeros((2, 16, 16, 1), np.uint8), verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_jit_compile_reaches_every_compile(tmp_path, built, request):
    # Keras drops XLA while TensorFlow's op determinism is on (XLA has no deterministic kernels
    # for every op), and a deterministic test earlier in this worker turns that process-wide
    # switch on; TensorFlow's public API has no way back, its config module has one.
    from tensorflow.python.framework import config as tf_config

    if tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
        request.addfinalizer(tf_config.enable_op_determinism)
    # One phase: XLA compiling each phase's step is what takes the time here.
    model, metadata, _, _ = run_finetune(tmp_path / "ckpt", jit_compile=True, phase2={"epochs": 0})
    assert [jit for _, _, jit in built.compiles] == [True]
    assert model.jit_compile is True and metadata["jit_compile"] is True
    # float32 by default on CPU: the trained model itself is returned, no copy.
    assert len(built.builds) == 1 and metadata["mixed_precision"] == "float32"

"""The Keras dtype policy of training: what ``auto`` resolves to, and its scope."""

import keras
import pytest
import tensorflow as tf

from breast_cancer_pipeline.training.precision import dtype_policy, mixed_precision_policy


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU is visible")
def test_auto_is_float32_on_cpu():
    assert mixed_precision_policy("auto") == "float32"


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ([(7, 5)], "mixed_float16"),
        ([(8, 0), (9, 0)], "mixed_float16"),
        ([(6, 1)], "float32"),
        ([(8, 0), (6, 1)], "float32"),  # one old GPU: no tensor cores to use there
        ([None], "float32"),
    ],
)
def test_auto_is_mixed_float16_on_gpus_with_tensor_cores(monkeypatch, capabilities, expected):
    gpus = [f"gpu{i}" for i in range(len(capabilities))]
    details = dict(zip(gpus, capabilities, strict=True))
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus)
    monkeypatch.setattr(
        tf.config.experimental,
        "get_device_details",
        lambda gpu: {} if details[gpu] is None else {"compute_capability": details[gpu]},
    )
    assert mixed_precision_policy("auto") == expected
    assert mixed_precision_policy("off") == "float32"
    assert mixed_precision_policy("mixed_bfloat16") == "mixed_bfloat16"


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="finetune.mixed_precision must be one of .*'auto'"):
        mixed_precision_policy("float16")


def test_dtype_policy_restores_the_previous_policy_after_an_error():
    with pytest.raises(RuntimeError), dtype_policy("mixed_bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        raise RuntimeError
    assert keras.mixed_precision.global_policy().name == "float32"

import pytest

from breast_cancer_pipeline.param_schema import ParameterError, validate_block
from tests.params import base_params


@pytest.mark.parametrize("env", [None, "demo"])
def test_the_configured_blocks_validate(env):
    validate_block("finetune", base_params("finetune", env))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"strategy": "tpu"}, r"finetune.strategy = 'tpu': .*'auto', 'none', 'mirrored'"),
        (
            {"mixed_precision": "fp16"},
            r"finetune.mixed_precision = 'fp16': .*'auto', 'off', 'mixed_float16' or 'mixed_bf",
        ),
        ({"jit_compile": "yes"}, r"finetune.jit_compile = 'yes': must be auto, true or false"),
        ({"batch_size": 0}, r"finetune.batch_size = 0: Input should be greater than 0"),
        ({"phase1": {"epochs": -1}}, r"finetune.phase1.epochs = -1: .*greater than or equal to 0"),
        ({"phase2": {"epochs": -2}}, r"finetune.phase2.epochs = -2"),
        ({"phase2": {"learning_rate": 0}}, r"finetune.phase2.learning_rate = 0"),
        (
            {"phase2": {"unfreeze": {"from_layer": 3, "fraction": 0.5}}},
            r"finetune.phase2.unfreeze = .*exactly one of from_layer .* or fraction",
        ),
        (
            {"phase2": {"unfreeze": {"from_layer": None, "fraction": None}}},
            r"finetune.phase2.unfreeze = .*exactly one of from_layer .* or fraction",
        ),
        ({"phase2": {"unfreeze": {"fraction": 1.5}}}, r"finetune.phase2.unfreeze.fraction"),
        ({"reduce_lr": {"factor": 1.0}}, r"finetune.reduce_lr.factor = 1.0: .*less than 1"),
        ({"reduce_lr": {"factor": 0}}, r"finetune.reduce_lr.factor = 0: .*greater than 0"),
        ({"early_stopping_patience": -1}, r"finetune.early_stopping_patience = -1"),
        ({"class_weight": "balanced"}, r"finetune.class_weight = 'balanced': .*auto, none"),
        ({"class_weight": [1.0, 0.0]}, r"finetune.class_weight = \[1.0, 0.0\]: .*weights > 0"),
        ({"class_weight": {"malignant": -2}}, r"finetune.class_weight = .*auto, none"),
        ({"head": {"dropout": 1.0}}, r"finetune.head = .*: dropout must be in \[0, 1\)"),
        ({"head": {"dense_units": 0}}, r"finetune.head = .*dense_units must be a positive"),
        ({"head": {"units": 8}}, r"finetune.head.units"),
        ({"phse1": {"epochs": 1}}, r"finetune.phse1: unknown key"),
        ({"resume": "maybe"}, r"finetune.resume = 'maybe'"),
    ],
)
def test_each_bad_value_is_refused_naming_its_key(override, message):
    with pytest.raises(ParameterError, match=message):
        validate_block("finetune", base_params("finetune", **override))


@pytest.mark.parametrize(
    "override",
    [
        {"batch_size": None},
        {"class_weight": "none"},
        {"class_weight": {"malignant": 3.0}},
        {"class_weight": [1.0, 2.0, 0.5]},
        {"head": {"dropout": 0.0, "dense_units": None}},
        {"phase1": {"epochs": 0, "learning_rate": 0.01}},
        {"phase2": {"unfreeze": {"from_layer": 100, "fraction": None}}},
    ],
)
def test_every_documented_form_is_accepted(override):
    validate_block("finetune", base_params("finetune", **override))


def test_a_missing_key_names_the_file_of_its_default():
    params = base_params("finetune")
    del params["reduce_lr"]["min_lr"]
    with pytest.raises(ParameterError, match=r"finetune.reduce_lr.min_lr: missing; add it to "):
        validate_block("finetune", params)

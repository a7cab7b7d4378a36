"""The ``backbone_selection`` parameter model: conf/base and demo validate, bad values are named."""

import pytest

from breast_cancer_pipeline.param_schema import ParameterError, validate_block
from tests.params import base_params


def _check(**overrides):
    return validate_block("backbone_selection", base_params("backbone_selection", **overrides))


@pytest.mark.parametrize("env", [None, "demo"])
def test_configured_blocks_validate(env):
    model = validate_block("backbone_selection", base_params("backbone_selection", env=env))
    assert model.candidates["small_cnn"].backbone == "small_cnn"
    assert model.head_search.space.learning_rate == (1e-4, 1e-2)


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        ({"epochs": -1}, "backbone_selection.epochs = -1", "greater than 0"),
        ({"repeats": 0}, "backbone_selection.repeats = 0", "greater than 0"),
        ({"head_search": {"n_trials": -3}}, "backbone_selection.head_search.n_trials = -3", ""),
        ({"head_search": {"epochs": 0}}, "backbone_selection.head_search.epochs = 0", ""),
        ({"tolerance": -0.1}, "backbone_selection.tolerance = -0.1", "greater than or equal"),
        ({"metric": "auc"}, "backbone_selection.metric = 'auc'", "'val_auroc' or 'val_accuracy'"),
        ({"augmented_passes": -1}, "backbone_selection.augmented_passes = -1", ""),
        ({"predict_batch_size": 0}, "backbone_selection.predict_batch_size = 0", ""),
        ({"steps_per_execution": 0}, "backbone_selection.steps_per_execution = 0", ""),
        ({"figure_dpi": 0}, "backbone_selection.figure_dpi = 0", ""),
        ({"head": {"dropout": 1.0}}, "backbone_selection.head.dropout = 1.0", "less than 1"),
        ({"head": {"learning_rate": 0}}, "backbone_selection.head.learning_rate = 0", ""),
        (
            {"head_search": {"space": {"dropout": [0.6, 0.1]}}},
            "backbone_selection.head_search.space.dropout = [0.6, 0.1]",
            "0 <= low <= high < 1",
        ),
        (
            {"head_search": {"space": {"learning_rate": [1e-2, 1e-4]}}},
            "backbone_selection.head_search.space.learning_rate = [0.01, 0.0001]",
            "low <= high",
        ),
        (
            {"head_search": {"space": {"batch_size": []}}},
            "backbone_selection.head_search.space.batch_size",
            "at least 1 item",
        ),
        ({"epoch": 3}, "backbone_selection.epoch: unknown key", ""),
    ],
)
def test_bad_values_are_named(overrides, key, message):
    with pytest.raises(ParameterError) as info:
        _check(**overrides)
    assert key in str(info.value)
    assert message in str(info.value)


def test_unknown_backbone_lists_the_registered_names():
    with pytest.raises(ParameterError) as info:
        _check(candidates={"typo": {"backbone": "resnet9000", "weights": None}})
    message = str(info.value)
    assert "backbone_selection.candidates.typo.backbone = 'resnet9000'" in message
    assert "unknown backbone" in message
    assert "efficientnet_b0" in message and "small_cnn" in message
    assert "invalid parameters (1)" in message  # the weights are not checked against no backbone


def test_weights_must_be_imagenet_null_or_an_existing_file(tmp_path):
    missing = tmp_path / "missing.weights.h5"
    with pytest.raises(ParameterError) as info:
        _check(candidates={"mobilenet_v3_small": {"weights": str(missing)}})
    assert "backbone_selection.candidates.mobilenet_v3_small.weights" in str(info.value)
    assert "does not exist" in str(info.value)
    missing.write_bytes(b"weights")
    model = _check(candidates={"mobilenet_v3_small": {"weights": str(missing)}})
    assert model.candidates["mobilenet_v3_small"].weights == str(missing)


def test_imagenet_weights_for_a_backbone_without_them_fail():
    with pytest.raises(ParameterError, match="small_cnn' has no ImageNet weights"):
        _check(candidates={"small_cnn": {"weights": "imagenet"}})


def test_every_problem_is_listed_at_once():
    with pytest.raises(ParameterError) as info:
        _check(epochs=-1, head_search={"n_trials": -3})
    assert "invalid parameters (2)" in str(info.value)


def test_null_drops_a_candidate_and_one_must_remain():
    from breast_cancer_pipeline.pipelines.backbone_selection.parameters import active_candidates

    demo = base_params("backbone_selection", env="demo")
    assert demo["candidates"]["efficientnet_b0"] is None  # the demo drops both (conf/demo)
    # The demo's own three, from random weights: the small CNN at two widths, a residual one.
    assert list(active_candidates(demo["candidates"])) == [
        "small_cnn",
        "small_cnn_narrow",
        "small_resnet",
    ]
    validate_block("backbone_selection", demo)
    with pytest.raises(ParameterError, match="every candidate is null"):
        _check(candidates={name: None for name in demo["candidates"]})


def test_select_backbone_ranks_only_the_candidates_that_ran():
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import select_backbone

    from .test_nodes import _record

    params = base_params("backbone_selection")
    params["candidates"]["efficientnet_b0"] = None  # as an environment drops it
    records = (_record("small_cnn", 0.70, 1.0), _record("mobilenet_v3_small", 0.75, 2.0))
    selected, comparison, _ = select_backbone(params, *records)
    assert selected["candidate"] == "mobilenet_v3_small"
    assert sorted(comparison["candidate"]) == ["mobilenet_v3_small", "small_cnn"]

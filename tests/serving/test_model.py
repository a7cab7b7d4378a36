"""The served model: its configuration and its probability path (views, temperature, floor)."""

import numpy as np
import pytest

from tests.serving._served import CONFIG, LEVEL_OPERATING_POINTS, tiny_serving_model


def test_config_errors_name_the_problem():
    from breast_cancer_pipeline.serving import ServingModel, check_config

    with pytest.raises(ValueError, match="lacks \\['threshold'\\]"):
        check_config({k: v for k, v in CONFIG.items() if k != "threshold"})
    with pytest.raises(ValueError, match="reporting.positive_class"):
        check_config({**CONFIG, "positive_class": "cancer"})
    with pytest.raises(ValueError, match="levels' positive class 'benign' is not the model's"):
        check_config({**CONFIG, "levels": {**LEVEL_OPERATING_POINTS, "positive_class": "benign"}})
    assert check_config(CONFIG)["levels"] is None  # packaged without levels
    with pytest.raises(ValueError, match="the serving configuration says"):
        ServingModel(tiny_serving_model().model, {**CONFIG, "image_size": 64})


def test_a_portrait_model_carries_its_geometry_and_old_configs_mean_stretch():
    from breast_cancer_pipeline.modeling import build_classifier
    from breast_cancer_pipeline.serving import ServingModel, check_config

    model = build_classifier("small_cnn", 3, (48, 24), 1, None, {"dropout": 0.0})
    portrait = {"image_size": [48, 24], "resize": "crop_foreground", "crop_margin": 0.02}
    served = ServingModel(model, {**CONFIG, **portrait})
    assert {k: served.config[k] for k in portrait} == portrait
    x = np.zeros((2, 48, 24, 1), np.uint8)
    assert served.predict_proba(x).shape == (2, 3)
    with pytest.raises(ValueError, match=r"\(48, 24, 1\) but the serving configuration says"):
        ServingModel(model, {**CONFIG, **portrait, "image_size": [24, 48]})
    old = check_config(CONFIG)  # packaged before resize modes: stretched, as it was trained
    assert (old["image_size"], old["resize"], old["crop_margin"]) == (32, "stretch", 0.0)
    with pytest.raises(ValueError, match="resize must be one of"):
        check_config({**CONFIG, "resize": "squash"})


def test_probability_path_views_then_temperature_and_old_configs():
    """predict_proba = views averaged, then T; a config without the keys is served as before."""
    from breast_cancer_pipeline.evaluation.calibration import apply_temperature
    from breast_cancer_pipeline.serving import PROBABILITY_DEFAULTS, check_config

    old = tiny_serving_model()  # CONFIG predates tta, temperature and conformal
    assert {k: old.config[k] for k in PROBABILITY_DEFAULTS} == PROBABILITY_DEFAULTS
    x = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 1)).astype(np.uint8)
    bare = old.model.predict(x, verbose=0)
    np.testing.assert_allclose(old.predict_proba(x), bare, atol=1e-5)
    assert old.prediction_sets(bare) == [None, None, None]

    calls = []
    tuned = old.with_config(
        tta={"mode": "flips", "passes": 2},
        temperature=2.0,
        conformal={"method": "lac", "alpha": 0.1, "threshold": 0.3},
    )
    assert tuned.model is old.model and tuned.config["tta"]["shift"] == 0.05
    forward = tuned._forwards[0]
    tuned._forwards = [lambda images: calls.append(1) or forward(images)]
    flipped = old.model.predict(x[:, :, ::-1], verbose=0)
    expected = apply_temperature((bare + flipped) / 2, 2.0)
    np.testing.assert_allclose(tuned.predict_proba(x), expected, atol=1e-5)
    assert len(calls) == 2  # one forward pass per view
    sets = tuned.prediction_sets(expected)
    assert sets == [
        [c for c, p in zip(CONFIG["class_names"], row, strict=True) if p >= 0.3] for row in expected
    ]
    with pytest.raises(ValueError, match="tta 'flips' has 4 views"):
        check_config({**CONFIG, "tta": {"mode": "flips", "passes": 9}})
    with pytest.raises(ValueError, match="temperature must be positive"):
        check_config({**CONFIG, "temperature": 0})
    with pytest.raises(ValueError, match="calibration floor must be within"):
        check_config({**CONFIG, "calibration_floor": 0.9})
    # The floor comes after the temperature: (1 - eps) softmax(log p / T) + eps / k.
    floored = tuned.with_config(calibration_floor=0.3)
    k = len(CONFIG["class_names"])
    np.testing.assert_allclose(floored.predict_proba(x), 0.7 * expected + 0.3 / k, atol=1e-5)

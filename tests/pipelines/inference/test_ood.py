"""The out-of-distribution check end to end: a tiny model in tmp_path whose features are planted
colour clusters, packaged with its score, loaded and asked through the inference node."""

import base64

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.imaging import encode_png
from breast_cancer_pipeline.pipelines.inference.nodes import predict_requests
from tests.params import base_params

SIZE = 8
CONFIG = {
    "class_names": ["benign", "malignant", "normal"],
    "image_size": SIZE,
    "channels": 3,
    "color_mode": "rgb",
    "positive_class": "malignant",
    "threshold": 0.5,
}
#: Class k: a flat image of colour COLOURS[k]; the model's features are the mean colour.
COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])


def _images(colours: np.ndarray, seed: int, noise: float = 8) -> np.ndarray:
    jitter = np.random.default_rng(seed).normal(0, noise, (len(colours), 3))
    pixels = np.clip(colours + jitter, 0, 255).astype(np.uint8)
    return np.broadcast_to(pixels[:, None, None, :], (len(colours), SIZE, SIZE, 3)).copy()


def _tiny_model():
    """uint8 image -> mean colour (the penultimate features) -> Dense softmax."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1 / 255, name="to_float")(inputs)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(3, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """The tiny model with a score fitted on its own features, saved and loaded again."""
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.evaluation.ood import METHOD, fit_ood
    from breast_cancer_pipeline.serving import ServingModel

    model = _tiny_model()
    labels = np.repeat(np.arange(3), 20)
    bare = ServingModel(model, CONFIG)
    train, _ = bare.forward(_images(COLOURS[labels], seed=0))
    val, _ = bare.forward(_images(COLOURS[labels], seed=1))
    ood = fit_ood(METHOD, train, labels, val)
    dataset = ServingModelDataset(str(tmp_path_factory.mktemp("ood") / "serving_model"))
    dataset.save(ServingModel(model, CONFIG, ood=ood))
    return dataset.load()


def _request(images: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"image": [base64.b64encode(encode_png(i)).decode() for i in images]})


def _params(action: str = "flag") -> dict:
    return base_params("inference", serving={"ood": {"action": action}})


def test_features_come_from_the_same_pass_as_the_probabilities(packaged):
    images = _images(COLOURS, seed=3)
    features, proba = packaged.forward(images)
    np.testing.assert_allclose(features, images.reshape(3, -1, 3).mean(axis=1) / 255, atol=1e-5)
    np.testing.assert_allclose(proba, packaged.model.predict(images, verbose=0), atol=1e-6)
    np.testing.assert_array_equal(packaged.predict_proba(images), proba)
    assert packaged.forward(images[:0])[0].shape == (0, 3)


def test_a_far_away_image_is_flagged_and_training_like_ones_accepted(packaged):
    like_training = _images(COLOURS[[0, 1, 2, 0]], seed=4, noise=3)
    far = _images(np.array([[200, 200, 200], [0, 120, 255]]), seed=5)  # grey, azure
    out = predict_requests(_request(np.concatenate([like_training, far])), packaged, _params())
    assert out["in_distribution"].tolist() == [True] * 4 + [False] * 2
    threshold = packaged.ood.threshold(0.95)
    scores = out["ood_score"].astype(float)
    assert (scores[:4] <= threshold).all() and (scores[4:] > threshold).all()
    # flag: answered and marked.
    assert (out["error"] == "").all() and out["p_malignant"].notna().all()
    assert out.columns.tolist()[-4:] == ["ood_score", "in_distribution", "prediction_set", "error"]


def test_reject_answers_an_ood_row_with_an_error_instead_of_probabilities(packaged):
    images = np.concatenate(
        [_images(COLOURS[:1], seed=6, noise=3), _images(np.array([[0, 0, 0]]), 7)]
    )
    cells = [*_request(images)["image"], "%%% not base64"]
    out = predict_requests(pd.DataFrame({"image": cells}), packaged, _params("reject"))
    good, refused, broken = (out.iloc[i] for i in range(3))
    assert good["error"] == "" and good["in_distribution"] is True
    assert refused["in_distribution"] is False and refused["label"] is None
    assert refused["p_malignant"] is None and refused["ood_score"] > 0
    assert "out of distribution" in refused["error"] and "threshold" in refused["error"]
    assert f"{refused['ood_score']:.4g}" in refused["error"]
    assert "Send an image of the kind" in refused["error"]
    # A row that could not be decoded keeps its own error and has no score.
    assert "not valid base64" in broken["error"]
    assert broken["ood_score"] is None and broken["in_distribution"] is None


def test_accept_rate_moves_the_threshold_at_serving_time(packaged):
    images = _images(COLOURS[np.repeat(np.arange(3), 10)], seed=8)
    strict = base_params("inference", serving={"ood": {"accept_rate": 0.5}})
    loose = predict_requests(_request(images), packaged, _params())["in_distribution"]
    tight = predict_requests(_request(images), packaged, strict)["in_distribution"]
    assert sum(tight) < sum(loose)


def test_a_model_saved_without_a_score_loads_and_answers_null(tmp_path):
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.serving import ServingModel

    dataset = ServingModelDataset(str(tmp_path / "serving_model"))
    dataset.save(ServingModel(_tiny_model(), CONFIG))
    assert not (tmp_path / "serving_model" / "ood.npz").exists()
    loaded = dataset.load()
    assert loaded.ood is None
    out = predict_requests(_request(_images(COLOURS, seed=9)), loaded, _params("reject"))
    assert (out["error"] == "").all()
    assert out["ood_score"].isna().all() and out["in_distribution"].isna().all()


def test_a_broken_score_file_names_the_file(tmp_path, packaged):
    from kedro.io import DatasetError

    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset

    dataset = ServingModelDataset(str(tmp_path / "serving_model"))
    dataset.save(packaged)
    np.savez(tmp_path / "serving_model" / "ood.npz", method=np.array("knn"))
    with pytest.raises(DatasetError, match="ood.npz.*re-run the reporting pipeline"):
        dataset.load()


def test_a_model_without_a_final_dense_layer_serves_without_features():
    """E.g. an average of fold models: probabilities as before, no features to score."""
    import keras

    from breast_cancer_pipeline.serving import ServingModel, penultimate_layer

    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Softmax()(pooled)
    served = ServingModel(keras.Model(inputs, outputs), CONFIG)
    images = _images(COLOURS, seed=10)
    features, proba = served.forward(images)
    assert features.shape == (3, 0) and served.forward(images[:0])[0].shape == (0, 0)
    np.testing.assert_allclose(proba, served.model.predict(images, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="not a Dense layer"):
        penultimate_layer(served.model)

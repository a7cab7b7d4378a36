"""A tile model combined by its attention head: packaged with it, served and reported through it."""

import json

import numpy as np
import pytest

from tests.params import base_params
from tests.serving._served import tiny_tile_model
from tests.serving.test_tiles import rgb_image


@pytest.fixture(scope="module")
def attended_model():
    """The tiny tile model (3 classes) with ``aggregation: attention`` and a random head."""
    from breast_cancer_pipeline.modeling import build_attention_mil_head, set_seed
    from breast_cancer_pipeline.serving import penultimate_layer

    tile_model = tiny_tile_model()
    model = tile_model.with_config(tiles={**tile_model.config["tiles"], "aggregation": "attention"})
    set_seed(1)
    head = build_attention_mil_head(
        penultimate_layer(model.model).input.shape[-1], 3, {"hidden": 8}
    )
    return model.with_attention_head(head)


def _cut(images, spec):
    from breast_cancer_pipeline.serving.tiling import cut_image

    return [cut_image(image, f"{i}.png", spec, None) for i, image in enumerate(images)]


def test_the_served_answer_is_the_heads_and_the_top_tiles_are_the_most_attended(
    attended_model,
):
    from breast_cancer_pipeline.imaging import encode_png
    from breast_cancer_pipeline.pipelines.inference.nodes import collect_images, predict_files
    from breast_cancer_pipeline.serving import ServingModel
    from breast_cancer_pipeline.training.attention import attention_aggregate

    cut = _cut([rgb_image(96, 128), rgb_image(64, 64)], attended_model.tiles)
    answer = attended_model.predict_tiled(cut, batch_size=5)
    features = [attended_model.forward(image.tiles.pixels)[0] for image in cut]
    proba, attention = attention_aggregate(attended_model.attention_head, features)
    np.testing.assert_allclose(answer.proba, attended_model.calibrate(proba), rtol=1e-5)
    for weights, expected in zip(answer.tile_attention, attention, strict=True):
        np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-7)
    # The same model without its head combines the tiles by their mean, as before.
    plain = ServingModel(attended_model.model, attended_model.config)
    assert plain.predict_tiled(cut, batch_size=5).tile_attention is None

    files = {"a.png": lambda: encode_png(rgb_image(96, 128))}
    predictions, _ = predict_files(collect_images(files), attended_model, base_params("inference"))
    top = json.loads(predictions.loc[0, "top_tiles"])
    np.testing.assert_allclose(
        [t["attention"] for t in top], np.sort(attention[0])[::-1][:3], rtol=1e-5
    )


def test_the_head_is_packaged_beside_the_model_and_loaded_with_it(attended_model, tmp_path):
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.serving.model import ATTENTION_HEAD_FILE

    dataset = ServingModelDataset(filepath=str(tmp_path / "serving_model"))
    dataset.save(attended_model)
    assert (tmp_path / "serving_model" / ATTENTION_HEAD_FILE).is_file()
    loaded = dataset.load()
    assert loaded.config["tiles"]["attention_head"] == ATTENTION_HEAD_FILE
    cut = _cut([rgb_image(96, 128)], attended_model.tiles)
    before = attended_model.predict_tiled(cut, batch_size=8)
    after = loaded.predict_tiled(cut, batch_size=8)
    np.testing.assert_allclose(after.proba, before.proba, rtol=1e-6)
    np.testing.assert_allclose(after.tile_attention[0], before.tile_attention[0], rtol=1e-6)


def test_reporting_combines_the_tiles_of_a_split_by_the_head(attended_model):
    from breast_cancer_pipeline.pipelines.reporting.predictions import predict_split
    from breast_cancer_pipeline.training.attention import attention_aggregate

    cut = _cut([rgb_image(96, 128), rgb_image(64, 96)], attended_model.tiles)
    arrays = {
        "x_test": np.concatenate([image.tiles.pixels for image in cut]),
        "tile_image_test": np.repeat([0, 1], [len(image.tiles) for image in cut]),
        "image_y_test": np.array([1, 0]),
        "paths_test": np.array(["a.png", "b.png"]),
        "class_names": np.array(attended_model.class_names),
        "tiles": np.array(json.dumps(attended_model.tiles.config())),
    }
    table = predict_split(attended_model, arrays, "test", batch_size=4)
    features = [attended_model.forward(image.tiles.pixels)[0] for image in cut]
    proba, _ = attention_aggregate(attended_model.attention_head, features)
    expected = attended_model.calibrate(proba)
    np.testing.assert_allclose(table[["p_benign", "p_malignant", "p_normal"]], expected, rtol=1e-5)


def test_only_a_tile_model_combined_by_attention_takes_a_head(attended_model):
    from breast_cancer_pipeline.serving import ServingModel

    tiles = {**attended_model.config["tiles"], "aggregation": "top_k_mean"}
    plain = ServingModel(attended_model.model, {**attended_model.config, "tiles": tiles})
    with pytest.raises(ValueError, match="aggregation: attention"):
        plain.with_attention_head(attended_model.attention_head)

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.pipelines.augmentation.nodes import (
    build_augmentation_spec,
    prepare_model_input,
)


def _png(value: int, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _manifest(rows):
    return pd.DataFrame(rows, columns=["path", "label", "split", "channels"])


def test_prepare_model_input_shapes_classes_and_values():
    files = {
        "b/1.png": _png(10, (40, 30)),
        "m/2.png": _png(200, (20, 20)),
        "b/3.png": _png(50, (20, 20)),
        "m/4.png": _png(90, (20, 20)),
    }
    manifest = _manifest(
        [
            ("b/1.png", "benign", "train", 1),
            ("m/2.png", "malignant", "train", 1),
            ("b/3.png", "benign", "val", 1),
            ("m/4.png", "malignant", "test", 1),
        ]
    )
    loaders = {k: (lambda v=v: v) for k, v in files.items()}
    arrays = prepare_model_input(loaders, manifest, {"image_size": 16})
    assert arrays["x_train"].shape == (2, 16, 16, 1)
    assert arrays["x_train"].dtype == np.uint8
    assert list(arrays["class_names"]) == ["benign", "malignant"]
    assert arrays["y_train"].tolist() == [0, 1]
    assert arrays["x_train"][0].mean() == pytest.approx(10)
    assert arrays["x_test"][0].mean() == pytest.approx(90)
    assert arrays["paths_val"].tolist() == ["b/3.png"]


def test_prepare_model_input_missing_png_is_a_clear_error():
    manifest = _manifest([("b/1.png", "benign", "train", 1)])
    with pytest.raises(ValueError, match="rerun the ingestion pipeline"):
        prepare_model_input({}, manifest, {"image_size": 16})


def test_spec_validation_names_the_parameter():
    spec = build_augmentation_spec({"flip": "horizontal", "rotation": 0.1, "zoom": None})
    assert spec == {
        "flip": "horizontal",
        "rotation": 0.1,
        "zoom": 0.0,
        "translation": 0.0,
        "contrast": 0.0,
    }
    with pytest.raises(ValueError, match="augmentation.flip"):
        build_augmentation_spec({"flip": "diagonal"})
    with pytest.raises(ValueError, match="augmentation.zoom"):
        build_augmentation_spec({"zoom": 1.5})


def test_augmenter_changes_images_only_in_training():
    from breast_cancer_pipeline.modeling import build_augmenter

    augmenter = build_augmenter(
        {"flip": "horizontal", "rotation": 0.2, "zoom": 0.2, "contrast": 0.3}, seed=1
    )
    image = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(augmenter(image, training=False)), image)
    assert not np.allclose(np.asarray(augmenter(image, training=True)), image)

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.datasets import NumpyArraysDataset
from breast_cancer_pipeline.pipelines.augmentation.nodes import (
    build_augmentation_spec,
    prepare_model_input,
    preview_augmentation,
)
from tests.params import base_params


def _png(value: int, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _manifest(rows):
    return pd.DataFrame(rows, columns=["path", "label", "split", "channels"])


def test_prepare_model_input_shapes_classes_and_values(tmp_path):
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
    dataset = NumpyArraysDataset(str(tmp_path / "arrays"))
    dataset.save(prepare_model_input(loaders, manifest, base_params("augmentation", image_size=16)))
    arrays = dataset.load()
    assert arrays["x_train"].shape == (2, 16, 16, 1)
    assert arrays["x_train"].dtype == np.uint8
    assert list(arrays["class_names"]) == ["benign", "malignant"]
    assert arrays["y_train"].tolist() == [0, 1]
    assert arrays["x_train"][0].mean() == pytest.approx(10)
    assert arrays["x_test"][0].mean() == pytest.approx(90)
    assert arrays["paths_val"].tolist() == ["b/3.png"]
    # How the images were made travels with them (the finetune stage records it for serving).
    assert (str(arrays["resize"]), float(arrays["crop_margin"])) == ("stretch", 0.02)


def test_model_input_takes_height_and_width_and_keeps_the_aspect_with_letterbox(tmp_path):
    """A 40 x 20 image in a [24, 32] input: stretched it fills it; letterboxed it is centred."""
    manifest = _manifest([("b/1.png", "benign", "train", 1), ("m/2.png", "malignant", "val", 1)])
    manifest.loc[len(manifest)] = ("m/3.png", "malignant", "test", 1)
    loaders = {p: (lambda: _png(200, (40, 20))) for p in manifest["path"]}
    dataset = NumpyArraysDataset(str(tmp_path / "arrays"))
    for resize in ("stretch", "letterbox"):
        params = base_params("augmentation", image_size=[24, 32], resize=resize)
        dataset.save(prepare_model_input(loaders, manifest, params))
        x = np.asarray(dataset.load()["x_train"])[0, ..., 0]
        assert x.shape == (24, 32)
        columns = np.flatnonzero(x.max(axis=0) > 0)
        if resize == "stretch":
            assert (x == 200).all()
        else:  # scaled to 24 x 12, columns 10..21, black around
            assert (columns.min(), columns.max()) == (10, 21)
            assert (x[:, 10:22] == 200).all() and (x[:, :10] == 0).all()


def test_prepare_model_input_missing_png_is_a_clear_error():
    manifest = _manifest([("b/1.png", "benign", "train", 1)])
    with pytest.raises(ValueError, match="rerun the ingestion pipeline"):
        prepare_model_input({}, manifest, base_params("augmentation", image_size=16))


def test_spec_holds_the_transforms_as_numbers():
    spec = build_augmentation_spec(base_params("augmentation", zoom=0, flip=None))
    assert spec == {
        "flip": None,
        "rotation": 0.05,
        "zoom": 0.0,
        "translation": 0.05,
        "contrast": 0.1,
        "hed_jitter": 0.0,
        "stain_reference": {"normalize": None},
    }
    assert isinstance(spec["zoom"], float)
    reference = {"normalize": "reinhard", "lab_mean": [60.0, 20.0, -10.0], "lab_std": [9, 5, 4]}
    params = base_params("augmentation", stain={"normalize": "reinhard", "jitter": 0.05})
    spec = build_augmentation_spec(params, reference)
    assert (spec["hed_jitter"], spec["stain_reference"]) == (0.05, reference)


def test_augmenter_changes_images_only_in_training():
    from breast_cancer_pipeline.modeling import build_augmenter

    augmenter = build_augmenter(
        {"flip": "horizontal", "rotation": 0.2, "zoom": 0.2, "contrast": 0.3}, seed=1
    )
    image = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(augmenter(image, training=False)), image)
    assert not np.allclose(np.asarray(augmenter(image, training=True)), image)


def _preview_input(value: int, n: int = 5) -> dict[str, np.ndarray]:
    return {
        "x_train": np.full((n, 24, 24, 1), value, dtype=np.uint8),
        "y_train": np.arange(n) % 2,
        "class_names": np.array(["benign", "malignant"]),
    }


def _png_pixels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("L")).astype(int)


NO_CHANGE = {"flip": None, "rotation": 0.0, "zoom": 0.0, "translation": 0.0, "contrast": 0.0}


def test_preview_is_a_png_grid_showing_true_brightness():
    """A flat grey image is shown grey (not stretched to black), one panel per view."""
    params = base_params(
        "augmentation", preview={"rows": 2, "augmented_per_image": 3, "figure_dpi": 100}
    )
    pixels = _png_pixels(preview_augmentation(_preview_input(200), NO_CHANGE, params))
    # 4 columns of 1.6 inch at 100 dpi, under bbox "tight" (a little less).
    assert 0.8 * 4 * 160 < pixels.shape[1] < 4 * 160
    wider = base_params("augmentation", preview={"rows": 2, "augmented_per_image": 5})
    wide = _png_pixels(preview_augmentation(_preview_input(200), NO_CHANGE, wider))
    assert wide.shape[1] == pytest.approx(pixels.shape[1] * 6 / 4, rel=0.1)
    grey = np.abs(pixels - 200) <= 2
    assert grey.sum() > 0.4 * pixels.size  # the 8 panels fill much of the figure
    assert (pixels < 50).sum() < 0.05 * pixels.size  # not stretched to a black square


def test_preview_shows_the_augmentation():
    """With contrast on, the augmented panels differ from the same grid without it."""
    params = base_params("augmentation", preview={"rows": 2, "augmented_per_image": 3})
    ramp = np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (5, 24, 1))[..., None]
    x = {**_preview_input(0), "x_train": ramp}
    plain = _png_pixels(preview_augmentation(x, NO_CHANGE, params))
    augmented = _png_pixels(preview_augmentation(x, {**NO_CHANGE, "contrast": 0.9}, params))
    assert plain.shape == augmented.shape
    assert np.abs(plain - augmented).mean() > 2

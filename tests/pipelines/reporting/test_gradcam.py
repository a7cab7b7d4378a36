"""Grad-CAM on the nested backbone: a tiny small_cnn learns a planted bright square (~35 s)."""

import numpy as np
import pytest

SIZE, BLOB = 64, 14


def _images(n, rng):
    """Noise; class 1 has a bright square at a random place. Returns images, labels, centres."""
    x = rng.integers(0, 90, (n, SIZE, SIZE, 1)).astype(np.uint8)
    y = np.arange(n) % 2
    centres = np.zeros((n, 2), dtype=int)
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, SIZE - BLOB, 2)
        x[i, r : r + BLOB, c : c + BLOB] = 255
        centres[i] = (r + BLOB // 2, c + BLOB // 2)
    return x, y, centres


@pytest.fixture(scope="module")
def trained():
    import keras

    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.training.phases import unfreeze

    set_seed(0)
    rng = np.random.default_rng(0)
    x, y, _ = _images(256, rng)
    model = build_classifier("small_cnn", 2, SIZE, 1, None, {"dropout": 0.0})
    unfreeze(model, fraction=1.0, keep_batchnorm_frozen=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    # Learned in 2 epochs; the rest lets BatchNorm's moving statistics settle (inference mode).
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    return model, rng


@pytest.mark.slow
@pytest.mark.parametrize("layer", [None, "block3_relu"])
def test_heat_map_peaks_on_the_planted_square(trained, layer):
    from breast_cancer_pipeline.explain import grad_cam

    model, rng = trained
    x, y, centres = _images(16, rng)
    positives = np.flatnonzero(y)
    assert (model.predict(x[positives], verbose=0)[:, 1] > 0.8).all()  # it did learn the square
    heat = grad_cam(model, x[positives], 1, layer=layer)
    assert heat.shape == (len(positives), SIZE, SIZE)
    assert heat.max() == pytest.approx(1.0)
    cell = SIZE // (4 if layer is None else 8)  # resolution of the explained feature map
    for h, (r, c) in zip(heat, centres[positives], strict=True):
        pr, pc = np.unravel_index(np.argmax(h), h.shape)
        assert abs(pr - r) <= cell and abs(pc - c) <= cell
        inside = h[r - BLOB // 2 : r + BLOB // 2, c - BLOB // 2 : c + BLOB // 2].mean()
        assert inside > 2 * h.mean()


@pytest.mark.slow
def test_unknown_layer_and_missing_backbone_are_clear_errors(trained):
    import keras

    from breast_cancer_pipeline.explain import grad_cam

    model, _ = trained
    x = np.zeros((1, SIZE, SIZE, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="reporting.gradcam.layer='nope'"):
        grad_cam(model, x, 0, layer="nope")
    plain = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="nested model named 'backbone'"):
        grad_cam(plain, x, 0)


@pytest.mark.slow
def test_gradcam_figure_overlays_each_class_row(trained):
    import io

    import pandas as pd
    from PIL import Image

    from breast_cancer_pipeline.pipelines.reporting.figures import plot_gradcam
    from tests.params import base_params

    model, rng = trained
    x, y, _ = _images(8, rng)
    names = ["plain", "square"]
    proba = model.predict(x, verbose=0)
    predictions = pd.DataFrame(
        {"path": [f"{i}.png" for i in range(len(y))], "label": [names[i] for i in y]}
    )
    predictions["predicted"] = [names[i] for i in proba.argmax(axis=1)]
    for k, name in enumerate(names):
        predictions[f"p_{name}"] = proba[:, k]
    model_input = {"x_test": x, "paths_test": predictions["path"].to_numpy()}
    params = base_params("reporting", figure_dpi=40, gradcam={"per_class": 2})
    png = plot_gradcam(model, predictions, model_input, {"class_names": names}, params)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    height, width = pixels.shape[:2]
    assert width == pytest.approx(height, rel=0.3)  # 2 classes x 2 images
    # the images are grey: strongly coloured pixels come from the heat map, in both rows
    coloured = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 80
    for row in (coloured[: height // 2], coloured[height // 2 :]):
        assert row.mean() > 0.05

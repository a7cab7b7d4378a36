"""The model factory's own layers."""

import numpy as np


def test_random_affine_is_one_resampling_of_the_configured_ranges(tmp_path):
    """The fused augmentation: identity in inference, the ranges it is given, and it saves."""
    import keras

    from breast_cancer_pipeline.modeling import RandomAffine, build_augmenter, build_classifier

    image = np.zeros((1, 33, 33, 1), np.float32)
    image[0, 16, 24] = 255.0  # one bright pixel, 8 px right of the centre
    batch = np.repeat(image, 64, axis=0)
    np.testing.assert_array_equal(RandomAffine(0.25, seed=1)(batch, training=False), batch)
    np.testing.assert_array_equal(RandomAffine(seed=1)(batch, training=True), batch)

    def bright_spot(layer):
        out = np.asarray(layer(batch, training=True))[..., 0]
        rows, cols = np.unravel_index(out.reshape(len(out), -1).argmax(axis=1), out.shape[1:])
        return rows - 16, cols - 16

    dy, dx = bright_spot(RandomAffine(translation=0.2, seed=1))  # ±6.6 px
    assert np.abs(dx - 8).max() <= 7 and np.abs(dy).max() <= 7 and dx.std() > 1
    dy, dx = bright_spot(RandomAffine(rotation=0.25, seed=1))  # ±90°: stays 8 px away
    np.testing.assert_allclose(np.hypot(dy, dx), 8, atol=1.5)
    assert (dy < -2).any() and (dy > 2).any()  # turned both ways

    layers = [
        type(layer).__name__
        for layer in build_augmenter(
            {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "contrast": 0.1}
        ).layers
    ]
    assert layers == ["RandomFlip", "RandomAffine", "RandomContrast"]
    model = build_classifier(
        "small_cnn", 2, 16, 1, None, {}, {"rotation": 0.1, "zoom": 0.1, "translation": 0.1}
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    affine = loaded.get_layer("augmentation").get_layer("random_affine")
    assert (affine.rotation, affine.zoom, affine.translation) == (0.1, 0.1, 0.1)


def test_attention_head_weighs_only_the_real_tiles_of_a_bag():
    """Gated attention: weights sum to 1 over the unmasked tiles, 0 on padding it ignores."""
    from breast_cancer_pipeline.modeling import build_attention_mil_head, set_seed

    set_seed(3)
    head = build_attention_mil_head(8, 3, {"hidden": 16})
    rng = np.random.default_rng(0)
    bags = rng.normal(size=(2, 6, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.float32)
    proba, weights = (np.asarray(out) for out in head([bags, mask], training=False))
    assert proba.shape == (2, 3) and weights.shape == (2, 6)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(weights[0, 4:], 0.0)
    assert (weights[0, :4] > 0).all() and weights[0, :4].std() > 0  # the tiles differ
    # What the padding holds changes nothing; the bag alone, unpadded, gives the same answer.
    bags[0, 4:] = 1e3
    again, _ = head([bags, mask], training=False)
    np.testing.assert_allclose(np.asarray(again), proba, rtol=1e-5)
    alone, alone_weights = head([bags[:1, :4], mask[:1, :4]], training=False)
    np.testing.assert_allclose(np.asarray(alone)[0], proba[0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(alone_weights)[0], weights[0, :4], rtol=1e-5)

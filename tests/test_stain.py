"""Stain normalisation and HED jitter against scikit-image, torchstain and planted stains.

Colour conversions are checked against scikit-image (``rgb2hed``, ``hed2rgb``, ``rgb2lab``,
``lab2rgb``); Reinhard and Macenko against torchstain's NumPy normalisers (the published
methods); the in-graph 3x3 eigensolver against NumPy's; and the layers on images of two
synthetic "sites" whose only difference is their staining.
"""

import warnings

import numpy as np
import pytest

from tests.he_images import SITE_A, SITE_B, he_images

SIZE = 32


@pytest.fixture(scope="module")
def stain():
    from breast_cancer_pipeline import stain

    return stain


@pytest.fixture(scope="module")
def sites():
    """``(site A images, site B images)``, 6 each at 32 px: the same tissue, stained apart."""
    return he_images(6, SIZE, 0, SITE_A), he_images(6, SIZE, 0, SITE_B, scale=(0.8, 1.8))


def test_hed_conversions_match_scikit_image(stain):
    from skimage.color import hed2rgb, rgb2hed

    rgb = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    rgb[0, 0, 0] = (0, 0, 0)
    np.testing.assert_allclose(np.asarray(stain.rgb_to_hed(rgb)), rgb2hed(rgb), atol=1e-5)
    hed = np.random.default_rng(1).uniform(-0.02, 0.15, (2, 16, 16, 3))
    got = np.asarray(stain.hed_to_rgb(hed.astype(np.float32)))
    np.testing.assert_allclose(got, 255.0 * hed2rgb(hed), atol=2e-3)


def test_lab_conversions_match_scikit_image(stain):
    from skimage.color import lab2rgb, rgb2lab

    rgb = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    rgb[0, 0, :3] = [(0, 0, 0), (255, 255, 255), (3, 2, 1)]  # both branches of each curve
    lab = rgb2lab(rgb)
    np.testing.assert_allclose(np.asarray(stain.rgb_to_lab(rgb)), lab, atol=2e-3)
    shifted = lab + np.random.default_rng(1).normal(0.0, 8.0, lab.shape)  # some out of gamut
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-image warns of the negative Z it clips
        expected = 255.0 * lab2rgb(shifted)
    got = np.asarray(stain.lab_to_rgb(shifted.astype(np.float32)))
    np.testing.assert_allclose(got, expected, atol=0.02)


def test_closed_form_eigenvectors_match_numpy(stain):
    rng = np.random.default_rng(0)
    od = rng.normal(0, 1, (64, 200, 3)) @ rng.normal(0, 0.3, (64, 3, 3))
    matrices = np.einsum("npi,npj->nij", od, od) / 200.0
    values, vectors = np.linalg.eigh(matrices)
    gaps = np.diff(values, axis=1).min(axis=1) / values[:, 2]
    matrices, vectors = matrices[gaps > 0.05], vectors[gaps > 0.05]  # eigenvectors well defined
    assert len(matrices) > 40
    largest, smallest = stain.symmetric_eigenvectors(matrices.astype(np.float32))
    # Eigenvectors up to sign: |cos| of the angle between them is 1.
    for found, expected in ((largest, vectors[..., 2]), (smallest, vectors[..., 0])):
        np.testing.assert_allclose(np.abs(np.sum(found * expected, -1)), 1.0, atol=1e-4)


def test_masked_percentiles_follow_numpy(stain):
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, (3, 101)).astype(np.float32)
    mask = (rng.uniform(0, 1, (3, 101)) > 0.4).astype(np.float32)
    found = stain.masked_percentiles(values, mask, [1.0, 50.0, 99.0])
    for percent, got in zip([1.0, 50.0, 99.0], found, strict=True):
        expected = [np.percentile(v[m > 0], percent) for v, m in zip(values, mask, strict=True)]
        np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def _truncated_like(got: np.ndarray, expected_uint8: np.ndarray, share: float = 0.999) -> None:
    """``got`` (float) matches an implementation that truncates to ``uint8``."""
    diff = np.asarray(got, np.float64) - expected_uint8
    inside = (diff >= -0.05) & (diff <= 1.05)
    assert inside.mean() >= share, (inside.mean(), np.abs(diff).max())


def test_reinhard_matches_torchstain(stain, sites):
    from torchstain.numpy.normalizers import NumpyReinhardNormalizer

    target, source = sites[0][0], sites[1][0]
    theirs = NumpyReinhardNormalizer()
    theirs.fit(target)
    reference = stain.fit_reference(target[None], "reinhard")
    np.testing.assert_allclose(reference["lab_mean"], theirs.target_means, atol=2e-3)
    np.testing.assert_allclose(reference["lab_std"], theirs.target_stds, atol=2e-3)
    got = stain.reinhard(source[None], reference["lab_mean"], reference["lab_std"])[0]
    _truncated_like(got, theirs.normalize(source))


def test_macenko_matches_torchstain(stain, sites):
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    target, source = sites[0][0], sites[1][0]
    theirs = NumpyMacenkoNormalizer()
    theirs.fit(target)
    reference = stain.fit_reference(target[None], "macenko")
    np.testing.assert_allclose(reference["stain_matrix"], theirs.HERef, atol=2e-4)
    np.testing.assert_allclose(reference["max_concentrations"], theirs.maxCRef, rtol=2e-4)
    got = stain.macenko(source[None], theirs.HERef, theirs.maxCRef)[0]
    expected, _, _ = theirs.normalize(source, stains=False)
    _truncated_like(got, expected, share=0.995)


def test_macenko_finds_the_planted_stains(stain, sites):
    for images, stains in zip(sites, (SITE_A, SITE_B), strict=True):
        found = np.asarray(stain.fit_reference(images, "macenko")["stain_matrix"])
        truth = stains / np.linalg.norm(stains, axis=0)
        cosines = np.sum(found * truth, axis=0)
        assert cosines.min() > 0.99, cosines  # haematoxylin first, eosin second


def test_macenko_brings_a_second_site_to_the_first(stain, sites):
    site_a, site_b = (images.astype(np.float32) for images in sites)
    layer = stain.StainNormalization(stain.fit_reference(sites[0], "macenko"))
    before = np.abs(site_b - site_a).mean()
    after = np.abs(np.asarray(layer(site_b)) - site_a).mean()
    assert before > 10 and after < before / 3, (before, after)


def test_reinhard_gives_every_image_the_reference_statistics(stain, sites):
    reference = stain.fit_reference(sites[0], "reinhard")
    site_b = sites[1].astype(np.float32)
    target = np.array([reference["lab_mean"], reference["lab_std"]])
    before = np.stack([np.asarray(s) for s in stain.reinhard_statistics(site_b)], axis=1)
    out = stain.StainNormalization(reference)(site_b)
    after = np.stack([np.asarray(s) for s in stain.reinhard_statistics(out)], axis=1)
    assert np.abs(before - target).max() > 5
    np.testing.assert_allclose(after, np.broadcast_to(target, after.shape), atol=0.5)


def test_a_blank_image_passes_macenko_unchanged(stain, sites):
    reference = stain.fit_reference(sites[0], "macenko")
    blank = np.full((1, SIZE, SIZE, 3), 245, dtype=np.uint8)
    batch = np.concatenate([blank, sites[1][:1]]).astype(np.float32)
    out = np.asarray(
        stain.macenko(batch, reference["stain_matrix"], reference["max_concentrations"])
    )
    np.testing.assert_array_equal(out[0], batch[0])
    assert np.abs(out[1] - batch[1]).mean() > 5


def test_hed_jitter_scales_and_shifts_each_stain_in_training_only(stain, sites):
    from skimage.color import rgb2hed

    sigma = 0.05
    layer = stain.HEDJitter(sigma, seed=3)
    images = he_images(4, SIZE, 2, scale=(2.0, 2.0)).astype(np.float32)  # strong stains
    np.testing.assert_array_equal(np.asarray(layer(images)), images)
    out = np.asarray(layer(images, training=True), np.float64)
    before, after = rgb2hed(images / 255.0), rgb2hed(out / 255.0)
    fits = []
    for i in range(len(images)):
        unclipped = (out[i].min(-1) > 1) & (out[i].max(-1) < 254)
        for k in (0, 1):  # haematoxylin, eosin
            keep = unclipped & (before[i, ..., k] > 0.06)  # jittered stain stays > 0
            scale, shift = np.polyfit(before[i, ..., k][keep], after[i, ..., k][keep], 1)
            residual = after[i, ..., k][keep] - (scale * before[i, ..., k][keep] + shift)
            assert np.abs(residual).max() < 1e-3
            assert abs(scale - 1) <= sigma + 1e-3 and abs(shift) <= sigma + 1e-3
            fits.append((scale, shift))
    assert np.ptp(np.array(fits), axis=0).min() > 0.005  # drawn per image and channel


def test_the_reference_sample_is_spread_over_the_images(stain):
    np.testing.assert_array_equal(stain.reference_sample(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(stain.reference_sample(3, 64), [0, 1, 2])


def test_a_grayscale_reference_and_a_blank_sample_are_refused(stain):
    with pytest.raises(ValueError, match=r"normalize='reinhard' needs RGB.*ingestion.color_mode"):
        stain.fit_reference(np.zeros((2, 8, 8, 1), np.uint8), "reinhard")
    with pytest.raises(ValueError, match="none of the 2 reference images has stained tissue"):
        stain.fit_reference(np.full((2, 8, 8, 3), 250, np.uint8), "macenko")
    with pytest.raises(ValueError, match="expected one of macenko, reinhard"):
        stain.StainNormalization({"normalize": "vahadane"})
    assert stain.fit_reference(np.zeros((2, 8, 8, 1), np.uint8), None) == {"normalize": None}


def test_the_classifier_normalises_inside_and_survives_saving(stain, sites, tmp_path):
    from breast_cancer_pipeline.modeling import (
        build_classifier,
        build_feature_extractor,
        load_model,
        set_seed,
    )

    set_seed(0)
    spec = {"hed_jitter": 0.05, "stain_reference": stain.fit_reference(sites[0], "macenko")}
    model = build_classifier("small_cnn", 2, SIZE, 3, None, {"dropout": 0.0}, spec, seed=1)
    names = [layer.name for layer in model.layers]
    assert names.index("stain_normalization") < names.index("augmentation")
    assert "hed_jitter" in [layer.name for layer in model.get_layer("augmentation").layers]
    model.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    layer = loaded.get_layer("stain_normalization")
    assert layer.reference == spec["stain_reference"]
    x = sites[1][:3]
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
    with pytest.raises(ValueError, match="augmentation.stain needs RGB images"):
        build_classifier("small_cnn", 2, SIZE, 1, None, {}, spec)
    # Backbone selection's features are of normalised images too.
    extractor = build_feature_extractor("small_cnn", SIZE, 3, None, spec)
    assert extractor.get_layer("stain_normalization").reference == spec["stain_reference"]

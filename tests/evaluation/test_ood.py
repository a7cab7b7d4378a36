"""The out-of-distribution score (planted clusters) and the out-of-distribution image set."""

import numpy as np
import pytest

from breast_cancer_pipeline.evaluation.ood import (
    KINDS,
    OodScore,
    fit_ood,
    normalise_features,
    ood_images,
)

D = 48  # more features than training images per class: the covariance needs shrinkage


def _clusters(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative features (as after a ReLU): class k is active in dimensions 8k..8k+7."""
    rng = np.random.default_rng(seed)
    features, labels = [], []
    for k in range(3):
        centre = np.full(D, 0.05)
        centre[8 * k : 8 * k + 8] = 1.0
        features.append(np.abs(centre + rng.normal(0, 0.08, (n_per_class, D))))
        labels += [k] * n_per_class
    return np.concatenate(features), np.array(labels)


@pytest.fixture(scope="module")
def fitted():
    train, labels = _clusters(12, seed=0)
    val, _ = _clusters(20, seed=1)
    return fit_ood("mahalanobis", train, labels, val)


def test_a_far_away_input_is_flagged_and_a_training_like_one_accepted(fitted):
    threshold = fitted.threshold(0.95)
    like_training, _ = _clusters(30, seed=2)
    far = np.full((5, D), 0.05)
    far[:, 30:40] = 1.0  # active where no class is
    blank = np.zeros((1, D))  # what a blank frame can give
    assert np.mean(fitted.score(like_training) <= threshold) >= 0.9
    assert (fitted.score(far) > 10 * threshold).all()
    assert fitted.score(blank)[0] > threshold
    # The score sees the direction of the features, not their size.
    np.testing.assert_allclose(fitted.score(3 * like_training), fitted.score(like_training))


def test_the_score_is_the_mahalanobis_distance_with_the_shrunk_precision(fitted):
    """The low-rank form gives what the d x d precision gives, to rounding."""
    from sklearn.covariance import LedoitWolf

    train, labels = _clusters(12, seed=0)
    x = normalise_features(train)
    means = np.stack([x[labels == k].mean(axis=0) for k in range(3)])
    precision = LedoitWolf(assume_centered=True).fit(x - means[labels]).precision_
    probe = normalise_features(_clusters(4, seed=3)[0])
    expected = np.min([np.einsum("ij,jk,ik->i", probe - m, precision, probe - m) for m in means], 0)
    np.testing.assert_allclose(fitted.score(_clusters(4, seed=3)[0]), expected, rtol=1e-9)
    assert len(fitted.weights) < D  # 36 images: the covariance's rank is below 48


def test_threshold_accepts_the_asked_share_of_validation():
    score = OodScore("mahalanobis", np.arange(1.0, 101.0))
    assert score.threshold(0.95) == 95.0
    assert np.mean(score.val_scores <= score.threshold(0.9)) == 0.9
    assert score.threshold(1.0) == 100.0


def test_saved_arrays_give_the_same_scores_without_pickle(tmp_path, fitted):
    np.savez(tmp_path / "ood.npz", **fitted.to_arrays())
    with np.load(tmp_path / "ood.npz", allow_pickle=False) as arrays:
        loaded = OodScore.from_arrays(dict(arrays))
    probe, _ = _clusters(3, seed=5)
    np.testing.assert_array_equal(loaded.score(probe), fitted.score(probe))
    assert loaded.threshold(0.95) == fitted.threshold(0.95)
    with pytest.raises(ValueError, match="re-run the reporting pipeline"):
        OodScore.from_arrays({"method": np.array("knn"), "val_scores": np.zeros(3)})
    with pytest.raises(ValueError, match="missing"):
        OodScore.from_arrays({"means": np.zeros(3)})


def test_energy_is_minus_logsumexp_of_the_logits():
    kernel = np.array([[4.0, 0.0], [0.0, 0.0]])
    bias = np.array([0.0, 1.0])
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    score = fit_ood("energy", train, np.array([0, 1]), train, (kernel, bias))
    features = np.array([[1.0, 0.0], [0.0, 0.0]])
    logits = features @ kernel + bias
    np.testing.assert_allclose(score.score(features), -np.log(np.exp(logits).sum(axis=1)))
    assert score.score(features)[0] < score.score(features)[1]  # a confident logit: lower
    with pytest.raises(ValueError, match="kernel and bias"):
        fit_ood("energy", train, np.array([0, 1]), train)
    with pytest.raises(ValueError, match="unknown out-of-distribution method"):
        fit_ood("knn", train, np.array([0, 1]), train)


def test_normalisation_is_a_signed_root_of_unit_norm():
    rows = normalise_features(np.array([[4.0, -9.0, 0.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(rows[0], np.array([2.0, -3.0, 0.0]) / np.sqrt(13))
    np.testing.assert_array_equal(rows[1], 0.0)


def test_ood_images_are_seeded_and_of_every_kind():
    images, kinds = ood_images(3, 24, 1, seed=4)
    again, _ = ood_images(3, 24, 1, seed=4)
    other, _ = ood_images(3, 24, 1, seed=5)
    assert images.shape == (3 * len(KINDS), 24, 24, 1) and images.dtype == np.uint8
    assert kinds.tolist() == [k for k in KINDS for _ in range(3)]
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(images, other)
    by_kind = {k: images[kinds == k].astype(float) for k in KINDS}
    assert all(np.ptp(image) == 0 for image in by_kind["blank"])
    assert all(image.std() > 40 for image in by_kind["noise"])
    assert all(np.ptp(image) > 60 for image in by_kind["gradient"])
    # Text: ink on paper; the modalities: a dark background around a bright body.
    assert all(np.ptp(image) > 40 for image in by_kind["text"])
    for kind in ("chest_xray", "ct_slice"):
        for image in by_kind[kind]:
            assert image[0, 0, 0] < 60 and image[12, 12, 0] > 60
    rgb, _ = ood_images(1, 16, 3, seed=4)
    assert rgb.shape == (len(KINDS), 16, 16, 3)
    portrait, _ = ood_images(1, (32, 16), 1, seed=4)  # the input of a [32, 16] model
    assert portrait.shape == (len(KINDS), 32, 16, 1)

"""Test-time views: fixed, in order, averaged in probability space."""

import numpy as np
import pytest

from breast_cancer_pipeline.evaluation.tta import (
    VIEWS,
    average_over_views,
    shift_pixels,
    tta_settings,
    view_images,
    views,
)


def _batch():
    return np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1)


def test_flips_and_shifts_move_the_pixels_as_named():
    x = _batch()
    np.testing.assert_array_equal(view_images(x, (False, True, 0, 0), 1), x[:, :, ::-1])
    np.testing.assert_array_equal(view_images(x, (True, False, 0, 0), 1), x[:, ::-1])
    down_right = view_images(x, (False, False, 1, 1), 1)
    # Content moves one pixel down and right; the uncovered row and column repeat the edge.
    np.testing.assert_array_equal(down_right[:, 1:, 1:], x[:, :-1, :-1])
    np.testing.assert_array_equal(down_right[:, 0, 1:], x[:, 0, :-1])
    np.testing.assert_array_equal(down_right[:, 1:, 0], x[:, :-1, 0])
    up_left = view_images(x, (False, False, -1, -1), 1)
    np.testing.assert_array_equal(up_left[:, :-1, :-1], x[:, 1:, 1:])
    assert up_left.shape == x.shape and up_left.dtype == np.uint8
    assert view_images(x, (False, False, 0, 0), 1) is x


def test_views_are_the_original_first_and_bounded():
    assert views("off", 4) == VIEWS["off"]
    assert views("flips", 2) == ((False, False, 0, 0), (False, True, 0, 0))
    assert len(views("flips_shifts", 8)) == len(set(views("flips_shifts", 8))) == 8
    with pytest.raises(ValueError, match="tta 'flips' has 4 views"):
        views("flips", 5)
    with pytest.raises(ValueError, match="evaluation.tta must be one of"):
        views("rotations", 2)
    assert shift_pixels(128, 0.05) == 6 and shift_pixels(8, 0.05) == 1


def test_average_is_in_probability_space_one_pass_per_view():
    calls = []

    def forward(images):
        # Depends on the image's orientation: p(class 1) = mean of the left column / 255.
        calls.append(images.copy())
        p = images[:, :, 0, 0].mean(axis=1) / 255.0
        return np.stack([1 - p, p], axis=1).astype(np.float32)

    x = np.zeros((1, 4, 4, 1), np.uint8)
    x[:, :, -1] = 255  # bright right column: p = 0 as is, 1 flipped left-right
    assert average_over_views(forward, x, "off", 4, 0.05).tolist() == [[1.0, 0.0]]
    calls.clear()
    out = average_over_views(forward, x, "flips", 2, 0.05)
    np.testing.assert_allclose(out, [[0.5, 0.5]])
    assert len(calls) == 2 and out.dtype == np.float32
    # The original view's probabilities given: only the other views are run.
    calls.clear()
    given = average_over_views(forward, x, "flips", 2, 0.05, first=forward(x))
    np.testing.assert_array_equal(given, out)
    assert len(calls) == 2  # forward(x) above, then the flipped view
    # Deterministic: the same views, the same answer.
    np.testing.assert_array_equal(
        average_over_views(forward, x, "flips_shifts", 8, 0.25),
        average_over_views(forward, x, "flips_shifts", 8, 0.25),
    )


def test_probability_average_differs_from_a_logit_average():
    def forward(images):
        return np.array([[0.99, 0.01]]) if images[0, 0, 0, 0] else np.array([[0.5, 0.5]])

    x = np.zeros((1, 2, 2, 1), np.uint8)
    x[0, 0, 0] = 1  # top-left pixel: only the original view sees it there
    out = average_over_views(forward, x, "flips", 2, 0.05)
    np.testing.assert_allclose(out, [[0.745, 0.255]], atol=1e-6)


@pytest.mark.parametrize(
    ("tta", "expected"),
    [
        ("flips", {"mode": "flips", "passes": 3, "shift": 0.1}),
        ("off", {"mode": "off", "passes": 1, "shift": 0.1}),  # one view, whatever tta_passes
        (False, {"mode": "off", "passes": 1, "shift": 0.1}),  # YAML's unquoted off
    ],
)
def test_the_served_settings_come_from_the_evaluation_parameters(tta, expected):
    assert tta_settings({"tta": tta, "tta_passes": 3, "tta_shift": 0.1}) == expected

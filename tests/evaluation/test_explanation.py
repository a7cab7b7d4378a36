"""Energy inside the mask and the pointing game, on hand-made maps and masks."""

from __future__ import annotations

import numpy as np
import pytest

from breast_cancer_pipeline.evaluation.explanation import (
    energy_inside,
    explanation_summary,
    image_figures,
    mask_area,
    pointing_hit,
)
from tests.params import base_params

BOOTSTRAP = {**base_params("reporting")["bootstrap"], "n_resamples": 200}


def _mask() -> np.ndarray:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:4, 2:7] = True  # 10 pixels
    return mask


def test_energy_inside_is_the_share_of_the_map_on_the_mask():
    cam = np.zeros((10, 10))
    cam[2, 2:7] = 1.0  # 5 inside
    cam[9, 0:5] = 0.5  # 2.5 outside
    assert energy_inside(cam, _mask()) == pytest.approx(5 / 7.5)
    assert energy_inside(np.ones((10, 10)), _mask()) == pytest.approx(mask_area(_mask())) == 0.1
    assert energy_inside(np.zeros((10, 10)), _mask()) == 0.0


def test_pointing_game_hits_when_the_maximum_is_inside():
    cam = np.full((10, 10), 0.2)
    cam[3, 5] = 1.0
    assert pointing_hit(cam, _mask()) == 1.0
    cam[8, 8] = 2.0
    assert pointing_hit(cam, _mask()) == 0.0
    assert pointing_hit(np.zeros((10, 10)), _mask()) == 0.0  # a flat map points nowhere
    assert pointing_hit(np.ones((10, 10)), _mask()) == 0.0
    tied = np.zeros((10, 10))
    tied[2, 2] = tied[3, 6] = 1.0  # two maxima, both inside
    assert pointing_hit(tied, _mask()) == 1.0
    tied[0, 0] = 1.0  # and one outside
    assert pointing_hit(tied, _mask()) == 0.0
    with pytest.raises(ValueError, match="does not fit"):
        pointing_hit(np.zeros((4, 4)), _mask())


def test_summary_averages_per_class_with_intervals_around_the_mean():
    masks = np.stack([_mask()] * 6)
    cams = np.zeros((6, 10, 10))
    cams[:4, 3, 3] = 1.0  # four maps wholly inside
    cams[4:, 9, 9] = 1.0  # two wholly outside
    y = np.array([0, 0, 1, 1, 1, 1])
    figures = image_figures(cams, masks)
    np.testing.assert_allclose(figures[:, 0], [1, 1, 1, 1, 0, 0])
    summary = explanation_summary(figures, y, ["benign", "malignant", "normal"], BOOTSTRAP)
    assert summary["n"] == 6 and summary["bootstrap"] == "image"
    assert summary["energy_inside"] == pytest.approx(4 / 6)
    assert summary["pointing_game"] == pytest.approx(4 / 6)
    assert summary["mask_area"] == pytest.approx(0.1)
    assert summary["energy_inside_ci_low"] <= 4 / 6 <= summary["energy_inside_ci_high"]
    assert summary["per_class"]["benign"]["pointing_game"] == 1.0
    assert summary["per_class"]["malignant"]["energy_inside"] == pytest.approx(0.5)
    assert set(summary["per_class"]) == {"benign", "malignant"}  # no normal image with a mask


def test_patients_make_it_a_cluster_bootstrap():
    figures = image_figures(np.stack([np.eye(10)] * 4), np.stack([_mask()] * 4))
    groups = np.array(["p1", "p1", "p2", "p2"])
    summary = explanation_summary(figures, np.zeros(4, int), ["a", "b"], BOOTSTRAP, groups)
    assert summary["bootstrap"] == "cluster"

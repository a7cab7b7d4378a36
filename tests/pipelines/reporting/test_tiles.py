"""Tile-level figures (``metrics.json`` ``tiles``), their report line, and ``tiles`` when served."""

import numpy as np
import pytest

from breast_cancer_pipeline.pipelines.reporting.nodes import compute_metrics
from breast_cancer_pipeline.pipelines.reporting.report import render_report
from breast_cancer_pipeline.pipelines.reporting.tiles import tile_metrics
from breast_cancer_pipeline.serving.packaging import served_tiles
from breast_cancer_pipeline.tiles import TileSpec, spec_arrays

from .test_report import META, PARAMS, POINT, _manifest, _predictions

SPEC = TileSpec(size=4, stride=4, aggregation="top_k_mean", top_k=2)


class _Served:
    """``averaged_proba`` answering each tile's planted p(malignant) (pixel [0, 0] / 100)."""

    def __init__(self):
        self.batches = []

    def averaged_proba(self, images):
        self.batches.append(len(images))
        p = images[:, 0, 0, 0].astype(float) / 100
        return np.stack([1 - p, p], axis=1)


def _tiled() -> dict[str, np.ndarray]:
    """Train 2 images (5 tiles), val 1 (2), test 2 images: 3 malignant-labelled tiles, 1 not."""
    test = np.zeros((4, 4, 4, 1), dtype=np.uint8)
    test[:, 0, 0, 0] = [90, 60, 20, 10]  # the two malignant tiles outrank one, not the other
    arrays = {"class_names": np.array(["benign", "malignant"]), **spec_arrays(SPEC)}
    for split, tiles, images in (("train", 5, 2), ("val", 2, 1)):
        arrays |= {f"y_{split}": np.zeros(tiles, int), f"paths_{split}": np.arange(images)}
    return arrays | {
        "x_test": test,
        "y_test": np.array([1, 0, 1, 0]),
        "paths_test": np.array(["a.png", "b.png"]),
    }


def test_tile_block_counts_tiles_and_scores_single_tiles():
    served = _Served()
    block = tile_metrics(served, _tiled(), {"positive_class": "malignant", "batch_size": 3})
    assert served.batches == [3, 1]
    assert block["n_tiles"] == {"train": 5, "val": 2, "test": 4}
    assert block["n_images"] == {"train": 2, "val": 1, "test": 2}
    assert block["tiles_per_image"] == pytest.approx(11 / 5)
    assert block["tile_auroc"] == pytest.approx(0.75)  # 90 > both, 20 > 10 only
    assert (block["aggregation"], block["labels"], block["tile_size"]) == ("top_k_mean", "image", 4)
    whole = {"x_test": np.zeros((2, 4, 4, 1)), "class_names": np.array(["benign", "malignant"])}
    assert tile_metrics(served, whole, {"positive_class": "malignant", "batch_size": 3}) == {}


def test_the_block_reaches_metrics_the_report_and_the_card():
    block = tile_metrics(_Served(), _tiled(), {"positive_class": "malignant", "batch_size": 8})
    metrics = compute_metrics(_predictions(), META, POINT, PARAMS, tiles=block)[0]
    assert metrics["tiles"] == block
    html, card = render_report(metrics, POINT, META, _manifest(), _predictions(), PARAMS)
    line = next(row for row in card.splitlines() if row.startswith("| Tiles"))
    assert "4 px cut at full resolution" in line and "2.2 per image" in line
    assert "top k mean of its tiles" in line and "AUROC 0.750" in line
    assert "train/val/test 5/2/4" in html
    without = compute_metrics(_predictions(), META, POINT, PARAMS, tiles={})[0]
    assert "tiles" not in without
    _, plain = render_report(without, POINT, META, _manifest(), _predictions(), PARAMS)
    assert "| Tiles" not in plain


def test_the_serving_config_carries_the_tiling():
    assert served_tiles({"class_names": ["a", "b"]}) == {}
    assert served_tiles({"tiles": SPEC.config()}) == {"tiles": SPEC.config()}
    assert served_tiles({"tiles": SPEC.config()})["tiles"]["aggregation"] == "top_k_mean"

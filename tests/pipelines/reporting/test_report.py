"""The report and the model card: what they show, rendered from the templates.

The figures themselves are tested in test_figures.py.
"""

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.pipelines.reporting.figures import confident_errors
from breast_cancer_pipeline.pipelines.reporting.nodes import compute_metrics
from breast_cancer_pipeline.pipelines.reporting.report import FIGURES, data_summary, render_report
from tests.params import base_params

NAMES = ["benign", "malignant"]
META = {"class_names": NAMES, "backbone": "small_cnn", "image_size": 8, "color_mode": "grayscale"}
PARAMS = base_params(
    "reporting",
    positive_class="malignant",
    bootstrap={"n_resamples": 50, "seed": 0},
    calibration_bins=5,
    ece_warning=0.1,
    gallery={"n_errors": 2},
    figure_dpi=40,
)
POINT = {
    "threshold": 0.5,
    "rule": "youden",
    "positive_class": "malignant",
    "val_sensitivity": 1.0,
    "val_specificity": 0.5,
    "n_val": 4,
}


def _predictions():
    pm = np.array([0.95, 0.7, 0.4, 0.2, 0.9, 0.6, 0.3, 0.1])
    labels = ["malignant"] * 4 + ["benign"] * 4
    frame = pd.DataFrame({"path": [f"img{i}.png" for i in range(8)], "label": labels})
    frame["predicted"] = np.where(pm >= 0.5, "malignant", "benign")
    frame["p_benign"], frame["p_malignant"] = 1 - pm, pm
    return frame


def _manifest():
    return pd.DataFrame(
        {
            "label": ["benign", "malignant"] * 6,
            "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 4,
            "group": ["p1", "p1", "p2", "p2", "p3", "p3", "p4", "p4", "p5", "p6", "p7", "p8"],
        }
    )


def _png(seed=0, size=(30, 20)):
    pixels = np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def metrics():
    return compute_metrics(_predictions(), META, POINT, PARAMS)[0]


def _rows(html, table_heading):
    """The cell texts of the first table after ``table_heading``."""
    table = html.split(table_heading, 1)[1].split("</table>", 1)[0]
    return [
        re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, flags=re.S)
    ]


def test_confident_errors_order():
    errors = confident_errors(_predictions(), 5)
    # benign called malignant at 0.9 and 0.6, malignant called benign at 1 - 0.4, 1 - 0.2
    assert errors["path"].tolist() == ["img4.png", "img3.png", "img2.png", "img5.png"]
    assert errors["confidence"].tolist() == pytest.approx([0.9, 0.8, 0.6, 0.6])


def test_data_summary_counts_images_and_patients():
    summary = data_summary(_manifest())
    assert summary.columns.tolist() == ["train", "val", "test", "all"]
    assert summary.index.tolist() == ["benign", "malignant", "total", "patients"]
    assert summary.loc["benign"].tolist() == [3, 1, 2, 6]
    assert summary.loc["total"].tolist() == [6, 2, 4, 12]
    assert summary.loc["patients"].tolist() == [3, 1, 4, 8]


def test_report_embeds_every_figure_in_order_and_fetches_nothing(metrics):
    figures = {name: _png(seed) for seed, (name, _) in enumerate(FIGURES)}
    figures["gradcam"] = lambda: _png(99)  # figures may come as lazy loaders
    html, card = render_report(metrics, POINT, META, _manifest(), _predictions(), PARAMS, **figures)

    found = re.findall(
        r'<figure id="(\w+)">\s*<img alt="\w+" src="data:image/png;base64,([^"]+)"', html
    )
    assert [name for name, _ in found] == [name for name, _ in FIGURES]
    assert base64.b64decode(found[0][1]) == figures["roc_pr"]
    assert base64.b64decode(found[-1][1]) == _png(99)
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", html)
    assert captions[1] == dict(FIGURES)["confusion_matrix"]
    assert not re.search(r"(src|href)=['\"](?!data:)", html)  # nothing to fetch
    assert "<script" not in html and "<link" not in html
    links = re.findall(r"- \[(\w+)\]\(figures/(\w+)\.png\)", card)
    assert links == [(name, name) for name, _ in FIGURES]


def test_a_missing_figure_is_left_out(metrics):
    html, _ = render_report(
        metrics, POINT, META, _manifest(), _predictions(), PARAMS, roc_pr=_png(), gradcam=None
    )
    assert re.findall(r'<figure id="(\w+)">', html) == ["roc_pr"]


def test_report_tables_hold_the_metrics(metrics):
    html, _ = render_report(metrics, POINT, META, _manifest(), _predictions(), PARAMS)

    assert "<h1>Breast image classifier — small_cnn</h1>" in html
    assert "Research use only" in html and "Not a diagnostic device" in html
    model = dict(_rows(html, "<h2>Model</h2>"))
    assert model["Classes"] == "benign, malignant"
    assert model["Input"] == "8 × 8 px (stretch), grayscale"
    assert model["Operating point"] == (
        "p(malignant) ≥ 0.5000 (youden on validation: sensitivity 1.000, specificity 0.500, n=4)"
    )
    summary = _rows(html, "<h2>Data and splits</h2>")
    assert summary[0] == ["", "train", "val", "test", "all"]
    assert summary[-1] == ["patients", "3", "1", "4", "8"]
    rows = {row[0]: row[1:] for row in _rows(html, "<h2>Test metrics</h2>")[1:]}
    auroc = (
        f"{metrics['auroc']:.3f} [{metrics['auroc_ci_low']:.3f}, {metrics['auroc_ci_high']:.3f}]"
    )
    assert rows["AUROC"][0] == auroc
    assert rows["Test images"][0] == "8"
    assert rows["Sensitivity"] == ["0.500", "at p(malignant) ≥ 0.500"]
    assert rows["Confusion at threshold"][0] == "TP 2 · FP 2 · TN 2 · FN 2"
    assert rows["ECE of p(malignant)"][0] == f"{metrics['ece_positive']:.3f}"
    assert rows["Brier score"][0] == f"{metrics['brier_score']:.3f}"
    assert rows["Log loss"][0] == f"{metrics['log_loss']:.3f}"
    per_class = _rows(html, "One-vs-rest AUROC per class")
    assert per_class[1:] == [[c, f"{v:.3f}"] for c, v in metrics["auroc_per_class"].items()]
    section = html.split("Known failure cases", 1)[1].split("</ul>", 1)[0]
    failures = re.findall(r"<li>(.*?)</li>", section)
    assert failures[-2:] == [
        "<code>img4.png</code>: benign called malignant with 90% confidence.",
        "<code>img3.png</code>: malignant called benign with 80% confidence.",
    ]
    assert failures[:3] == [
        "Weakest class (one-vs-rest AUROC): benign (0.625).",
        "2 malignant test image(s) fall below the threshold (false negatives).",
        f"Probabilities are poorly calibrated (ECE {metrics['ece_positive']:.3f} &gt; 0.1): "
        "recalibrate before reading them as risks.",
    ]


def test_model_card_sections_and_tables(metrics):
    _, card = render_report(metrics, POINT, META, _manifest(), _predictions(), PARAMS)

    headings = re.findall(r"^## (.+)$", card, flags=re.M)
    assert headings == [
        "Model",
        "Intended use and limits",
        "Data and splits",
        "Metrics (test split)",
        "Calibration",
        "Known failure cases",
        "Figures",
    ]
    assert "| patients | 3 | 1 | 4 | 8 |" in card
    assert "| Backbone | small\\_cnn |" in card  # Markdown-escaped, shown as small_cnn
    assert f"| Brier score | {metrics['brier_score']:.3f} |" in card
    assert f"| Log loss | {metrics['log_loss']:.3f} |" in card
    assert (
        f"Expected calibration error of p(malignant): {metrics['ece_positive']:.3f} "
        "(5 equal-width bins)"
    ) in card
    assert "- `img4.png`: benign called malignant with 90% confidence." in card
    # every table row has as many cells as its header
    for table in re.findall(r"(?:^\|.*\|\n)+", card, flags=re.M):
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(widths) == 1, table


def test_brier_score_and_log_loss_show_a_dash_until_they_are_computed(metrics):
    older = {k: v for k, v in metrics.items() if k not in ("brier_score", "log_loss")}
    html, card = render_report(older, POINT, META, _manifest(), _predictions(), PARAMS)
    rows = {row[0]: row[1] for row in _rows(html, "<h2>Test metrics</h2>")[1:]}
    assert rows["Brier score"] == rows["Log loss"] == "–"
    assert "| Brier score | – |" in card
    assert "log loss (natural log): –;" in card


EXPORT = {
    "onnx": {
        "file": "model.onnx",
        "opset": 17,
        "converter": "tf2onnx 1.17.0, onnx 1.23.2",
        "runtime": "onnxruntime 1.32.0",
        "bytes": 790000,
        "images": 8,
        "tolerance": 1e-4,
        "max_abs_diff_batch_1": 2.98e-08,
        "max_abs_diff_batch_7": 5.96e-08,
        "max_abs_diff": 5.96e-08,
        "shipped": True,
        "graph": "one graph: the classifier",
    },
    "litert": {
        "file": "model.tflite",
        "operators": "LiteRT builtins only (no TensorFlow select ops)",
        "quantization": "none (float32)",
        "converter": "tensorflow 2.21.0",
        "runtime": "ai-edge-litert 2.3.0",
        "shipped": False,
        "error": "LiteRT conversion (builtin operators only) failed: Erfc\nmore",
        "graph": "one graph: the classifier",
    },
}


def test_the_model_card_lists_the_exported_files_and_their_parity():
    metrics, tracked, _ = compute_metrics(_predictions(), META, POINT, PARAMS, export=EXPORT)
    assert metrics["export"] == EXPORT
    assert tracked["export.onnx.max_abs_diff"]["value"] == pytest.approx(5.96e-08)
    assert tracked["export.onnx.opset"]["value"] == 17
    _, card = render_report(metrics, POINT, META, _manifest(), _predictions(), PARAMS)
    section = card.split("## Exported files", 1)[1].split("\n## ", 1)[0]
    assert "(one graph: the classifier;" in section and "over the 8 test images" in section
    rows = [line for line in section.splitlines() if line.startswith("| model")]
    assert rows == [
        "| model.onnx | yes | 3.0e-08 (batch 1), 6.0e-08 (batch 7) | tf2onnx 1.17.0, onnx 1.23.2 "
        "| onnxruntime 1.32.0 | opset 17 |",
        "| model.tflite | no | – | tensorflow 2.21.0 | ai-edge-litert 2.3.0 | not shipped: LiteRT "
        "conversion (builtin operators only) failed: Erfc |",
    ]
    _, without = render_report(
        compute_metrics(_predictions(), META, POINT, PARAMS)[0],
        POINT,
        META,
        _manifest(),
        _predictions(),
        PARAMS,
    )
    assert "## Exported files" not in without


def test_explanations_against_masks_have_a_section_and_a_card_line(metrics):
    explanation = {
        "n": 4,
        "energy_inside": 0.61,
        "energy_inside_ci_low": 0.5,
        "energy_inside_ci_high": 0.7,
        "pointing_game": 0.75,
        "pointing_game_ci_low": 0.5,
        "pointing_game_ci_high": 1.0,
        "mask_area": 0.08,
        "bootstrap": "cluster",
        "per_class": {"malignant": {"n": 2, "energy_inside": 0.4, "pointing_game": 0.5}},
    }
    with_block = {**metrics, "explanation": explanation}
    html, card = render_report(with_block, POINT, META, _manifest(), _predictions(), PARAMS)
    rows = _rows(html, '<h2 id="explanation">')
    assert rows[1] == ["all", "4", "0.610 [0.500, 0.700]", "0.080", "0.750 [0.500, 1.000]"]
    assert rows[2] == ["malignant", "2", "0.400", "–", "0.500"]
    assert r"(4 test images with a lesion mask): 0.610 \[0.500, 0.700\] of the Grad-CAM" in card
    assert r"pointing game 0.750 \[0.500, 1.000\] (cluster bootstrap intervals)" in card
    plain, plain_card = render_report(metrics, POINT, META, _manifest(), _predictions(), PARAMS)
    assert "expert masks" not in plain and "expert masks" not in plain_card

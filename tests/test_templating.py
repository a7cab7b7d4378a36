"""Reports show users' labels and file names as text: the templates escape them.

The acceptance test ingests, through the ingestion nodes, a class named ``<script>x</script>``
and a file named ``"><img src=x onerror=alert(1)>.png`` and reads every report back through an
HTML parser (the model card through a Markdown renderer first).
"""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from markdown_it import MarkdownIt
from PIL import Image

from breast_cancer_pipeline.datasets import ImageFolderDataset, ImageStoreDataset
from breast_cancer_pipeline.pipelines.ingestion.nodes import (
    collapse_duplicates,
    collect_conversion,
    index_source,
    plan_conversion,
    split_manifest,
)
from breast_cancer_pipeline.pipelines.reporting.nodes import compute_metrics
from breast_cancer_pipeline.pipelines.reporting.report import render_report
from breast_cancer_pipeline.pipelines.validation.nodes import run_expectations
from breast_cancer_pipeline.templating import (
    fmt,
    fmt_interval,
    markdown_code,
    markdown_text,
    render,
)
from tests.params import base_params

LABEL = "<script>x</script>"
FILE = '"><img src=x onerror=alert(1)>.png'


class _Page(HTMLParser):
    """The tags and the text of an HTML page, as a browser would see them."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _png(seed: int, size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _ingest(tmp_path: Path) -> tuple[pd.DataFrame, dict]:
    """Four images per class, listed in a CSV; one class and one file name are hostile."""
    source = tmp_path / "source"
    (source / "img").mkdir(parents=True)
    names = [FILE, *(f"img/{LABEL[1:7]}_{i}.png" for i in range(3))]
    names += [f"img/benign_{i}.png" for i in range(4)]
    labels = [LABEL] * 4 + ["benign"] * 4
    for seed, name in enumerate(names):
        (source / name).write_bytes(_png(seed))
    pd.DataFrame({"file": names, "finding": labels}).to_csv(source / "labels.csv", index=False)
    params = base_params(
        "ingestion",
        source_dir=str(source),
        layout="csv",
        csv={"path": "labels.csv", "path_column": "file", "label_column": "finding"},
        workers=1,
    )
    raw = ImageFolderDataset(str(source)).load()
    inventory = index_source(raw, params)
    store = ImageStoreDataset(
        path=str(tmp_path / "out" / "images"), journal=str(tmp_path / "out" / "journal.jsonl")
    )
    store.save(plan_conversion(raw, inventory, params))
    info, _ = collect_conversion(store.load(), inventory, params)
    unique, _ = collapse_duplicates(info)
    return split_manifest(unique, params), params


def _predictions(manifest: pd.DataFrame) -> pd.DataFrame:
    """Every image scored; the hostile file is the most confident error."""
    frame = manifest[["path", "label"]].copy()
    p_label = np.where(frame["label"] == LABEL, 0.8, 0.3)
    p_label[frame["path"].to_numpy() == FILE] = 0.02
    frame["predicted"] = np.where(p_label >= 0.5, LABEL, "benign")
    frame[f"p_{LABEL}"], frame["p_benign"] = p_label, 1 - p_label
    return frame


def _assert_shown_as_text(page: _Page) -> None:
    assert not [tag for tag, _ in page.tags if tag == "script"]
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    text = "".join(page.text)
    assert LABEL in text
    assert FILE in text


def test_user_labels_and_file_names_are_text_in_every_report(tmp_path):
    manifest, ingestion = _ingest(tmp_path)
    assert FILE in set(manifest["path"])
    assert set(manifest["label"]) == {LABEL, "benign"}

    # The 24 px images fail min_image_size (every path listed) and min_images_per_class
    # (every split/label row listed), so both names reach the validation report.
    results, _, _, validation_report = run_expectations(
        manifest, base_params("validation"), ingestion
    )
    assert {"min_image_size", "min_images_per_class"} <= set(results["failed"])

    metadata = {
        "class_names": [LABEL, "benign"],
        "backbone": "small_cnn",
        "image_size": 24,
        "color_mode": "grayscale",
    }
    reporting = base_params("reporting", positive_class=LABEL)
    reporting["bootstrap"]["n_resamples"] = 20
    point = {
        "threshold": 0.5,
        "rule": "youden",
        "positive_class": LABEL,
        "val_sensitivity": 1.0,
        "val_specificity": 1.0,
        "n_val": 2,
    }
    predictions = _predictions(manifest)
    metrics, _, _ = compute_metrics(predictions, metadata, point, reporting)
    report, card = render_report(
        metrics, point, metadata, manifest, predictions, reporting, gradcam=_png(99)
    )

    for page in (validation_report, report):
        assert LABEL not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;x&lt;/script&gt;" in page
        assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.png" in page
        _assert_shown_as_text(_Page(page))
    assert "<script" not in card and "<img" not in card
    assert "&lt;script&gt;x&lt;/script&gt;" in card
    _assert_shown_as_text(_Page(MarkdownIt("commonmark").enable("table").render(card)))


def test_markdown_text_cannot_break_a_table_or_start_markup():
    assert markdown_text("a|b") == "a\\|b"
    assert markdown_text("**bold** _x_ [l](u) `c`") == "\\*\\*bold\\*\\* \\_x\\_ \\[l\\](u) \\`c\\`"
    assert markdown_text("<b>&amp;</b>") == "&lt;b&gt;&amp;amp;&lt;/b&gt;"
    assert markdown_text("two\nlines") == "two lines"
    assert markdown_text("back\\slash") == "back\\\\slash"
    assert markdown_code("img_1.png") == "`img_1.png`"
    assert markdown_code("a`b.png") == "a\\`b.png"  # no code span that a backtick could end
    assert markdown_code("a|b.png") == "a\\|b.png"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "–"), (float("nan"), "–"), (0.12345, "0.123"), (3, "3"), ("benign", "benign")],
)
def test_fmt_shows_unknown_values_as_a_dash(value, shown):
    assert fmt(value) == shown


BLOCK = {"auroc": 0.91234, "auroc_ci_low": 0.85, "auroc_ci_high": None, "sensitivity": 0.8}


@pytest.mark.parametrize(
    ("key", "options", "shown"),
    [
        ("auroc", {}, "0.912 [0.850, –]"),
        ("auroc", {"value": False}, "[0.850, –]"),
        ("auroc", {"optional": True}, "0.912"),  # an end unknown: the value alone
        ("sensitivity", {}, "0.800 [–, –]"),
        ("sensitivity", {"optional": True}, "0.800"),
        ("missing", {}, "– [–, –]"),
    ],
)
def test_fmt_interval_shows_a_value_and_its_interval(key, options, shown):
    assert fmt_interval(BLOCK, key, **options) == shown
    both = {"x": 0.5, "x_ci_low": 0.25, "x_ci_high": 0.75}
    assert fmt_interval(both, "x", **options) == (
        "[0.250, 0.750]" if options.get("value") is False else "0.500 [0.250, 0.750]"
    )


def test_an_unknown_template_variable_is_an_error():
    with pytest.raises(Exception, match="undefined"):
        render("validation_report.html.j2", status="passed")


def test_code_spans_escape_first_then_mark_backtick_parts_as_code():
    from breast_cancer_pipeline.templating import code_spans

    shown = code_spans("at least `validation.min_per_class` <script>x</script> `<b>`")
    assert str(shown) == (
        "at least <code>validation.min_per_class</code> &lt;script&gt;x&lt;/script&gt; "
        "<code>&lt;b&gt;</code>"
    )

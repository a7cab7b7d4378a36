"""Ingestion nodes on tiny images written to tmp_path."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.datasets import ImageFolderDataset
from breast_cancer_pipeline.pipelines.ingestion.nodes import (
    collapse_duplicates,
    index_source,
    split_manifest,
)

from .helpers import PARAMS, image_bytes, ingest, params, write_tree


def _index(src, files, **overrides):
    write_tree(src, files)
    return index_source(ImageFolderDataset(str(src)).load(), params(**overrides))


def test_class_folders_labels_and_masks_excluded(src):
    inventory = _index(
        src,
        {
            "benign/benign (1).png": image_bytes(1),
            "benign/benign (1)_mask.png": image_bytes(2),
            "malignant/m 1.jpg": image_bytes(3, fmt="JPEG"),
            "normal/n.tif": image_bytes(4, fmt="TIFF", mode="I;16"),
            "notes.txt": b"hello",
            "benign/.DS_Store": b"x",
        },
    )
    assert dict(zip(inventory["source_path"], inventory["label"], strict=True)) == {
        "benign/benign (1).png": "benign",
        "malignant/m 1.jpg": "malignant",
        "normal/n.tif": "normal",
    }
    assert (inventory["split"] == "").all()
    assert (inventory["group"] == inventory["source_path"]).all()


def test_label_and_group_patterns_and_label_map(src):
    files = {
        f"breast/{label}/SOB/x/SOB_{label[0].upper()}_A-14-{pid}-40-{i:03d}.png": image_bytes(i)
        for label in ["benign", "malignant"]
        for pid in (1, 2)
        for i in range(3)
    }
    inventory = _index(
        src,
        files,
        label_pattern=r"breast/(benign|malignant)/",
        group_pattern=r"A-14-(\d+)-",
        label_map={"malignant": "cancer"},
    )
    assert inventory.groupby("label").size().to_dict() == {"benign": 6, "cancer": 6}
    assert set(inventory["group"]) == {"1", "2"}


def test_conversion_writes_lossless_png_and_stats(src, out):
    write_tree(src, {"a/x.jpg": image_bytes(1, fmt="JPEG"), "b/y.png": image_bytes(2)})
    result = ingest(src, out, params(split={"ratios": [0.5, 0.5]}))
    stored = result.store.load()
    assert set(stored) == {"a/x.jpg.png", "b/y.png"}
    decoded = np.asarray(Image.open(io.BytesIO(stored["b/y.png"]())))
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(src / "b/y.png")))
    row = result.manifest.set_index("path").loc["b/y.png"]
    assert (row["width"], row["height"], row["channels"]) == (24, 24, 1)
    assert row["mean"] == pytest.approx(decoded.mean())
    assert row["source_path"] == "b/y.png" and len(row["sha256"]) == 64
    assert result.rejected.empty and result.duplicates.empty


def test_rgb_color_mode_gives_three_channels(src, out):
    write_tree(src, {"a/x.png": image_bytes(1), "b/y.tif": image_bytes(2, fmt="TIFF", mode="RGB")})
    result = ingest(src, out, params(color_mode="rgb", split={"ratios": [0.5, 0.5]}))
    assert (result.manifest["channels"] == 3).all()
    png = np.asarray(Image.open(out / "images" / "b/y.tif.png"))
    np.testing.assert_array_equal(png, np.asarray(Image.open(src / "b/y.tif")))


def test_exact_duplicates_collapse_and_conflicts_are_kept_and_reported(src, out, caplog):
    same = image_bytes(7)
    write_tree(
        src,
        {
            "benign/a.png": same,
            "benign/copy of a.png": same,
            "benign/b.png": image_bytes(8),
            "malignant/c.png": image_bytes(9),
            "malignant/b again.png": image_bytes(8),  # b under another label: a conflict
            "malignant/d.png": image_bytes(10),
            "normal/e.png": image_bytes(11),
            "normal/f.png": image_bytes(12),
        },
    )
    result = ingest(src, out, params(split={"ratios": [0.5, 0.5]}))
    manifest = result.manifest.set_index("source_path")
    assert "benign/copy of a.png" not in manifest.index
    assert manifest.loc["benign/a.png", "duplicates"] == "benign/copy of a.png"
    assert manifest.loc["benign/b.png", "duplicates"] == ""
    # The conflict keeps both rows, so the validation gate (sha256_in_one_label) sees it.
    assert {"benign/b.png", "malignant/b again.png"} <= set(manifest.index)
    report = result.duplicates.set_index("source_path")
    assert report.loc["benign/copy of a.png", ["kind", "kept_source_path"]].tolist() == [
        "duplicate",
        "benign/a.png",
    ]
    assert report.loc[["benign/b.png", "malignant/b again.png"], "kind"].tolist() == [
        "conflict",
        "conflict",
    ]
    assert "carry different labels" in caplog.text and "malignant/b again.png" in caplog.text


def test_duplicates_across_provider_splits_keep_one_copy():
    info = pd.DataFrame(
        {
            "source_path": ["test/1/x.png", "train/1/x.png", "train/0/y.png"],
            "label": ["1", "1", "0"],
            "sha256": ["s", "s", "t"],
            "split": ["test", "train", "train"],
        }
    )
    unique, report = collapse_duplicates(info)
    assert unique["source_path"].tolist() == ["test/1/x.png", "train/0/y.png"]
    assert report["kind"].tolist() == ["duplicate"]


def _info(n_groups_per_label: int, images_per_group: int = 2) -> pd.DataFrame:
    rows = []
    for label in ["benign", "malignant"]:
        for g in range(n_groups_per_label):
            for i in range(images_per_group):
                rows.append(
                    {
                        "source_path": f"{label}/{g}_{i}.png",
                        "path": f"{label}/{g}_{i}.png",
                        "label": label,
                        "group": f"{label}-{g}",
                        "split": "",
                        "width": 8,
                        "height": 8,
                        "channels": 1,
                        "sha256": f"{label}{g}{i}",
                        "mean": 1.0,
                        "std": 1.0,
                    }
                )
    return pd.DataFrame(rows)


def test_split_is_grouped_stratified_and_deterministic():
    info = _info(20)
    a = split_manifest(info, params())
    b = split_manifest(info.sample(frac=1, random_state=3), params())
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("group")["split"].nunique().max() == 1
    counts = a.groupby(["label", "split"])["group"].nunique().unstack()
    assert counts.loc["benign"].to_dict() == {"test": 4, "train": 12, "val": 4}
    assert counts.loc["malignant"].to_dict() == {"test": 4, "train": 12, "val": 4}
    c = split_manifest(info, params(split={"seed": 1}))
    assert not a["split"].equals(c["split"])


def test_two_way_split_takes_val_from_train():
    run_params = params(split={"ratios": [0.7, 0.3], "val_from_train": 0.25})
    manifest = split_manifest(_info(20), run_params)
    groups = manifest.groupby(["label", "split"])["group"].nunique().unstack()
    assert groups.loc["benign"].to_dict() == {"test": 6, "train": 10, "val": 4}


@pytest.mark.parametrize("ratios", [[0.5, 0.4], [0.8, 0.1, 0.2], [1.0], [0.7, -0.1, 0.4]])
def test_bad_ratios_name_the_parameter(src, ratios):
    with pytest.raises(ValueError, match=r"ingestion\.split\.ratios"):
        _index(src, {"a/x.png": image_bytes(1)}, split={"ratios": ratios})


@pytest.mark.parametrize(
    ("overrides", "parameter"),
    [
        ({"layout": "folders"}, "ingestion.layout"),
        ({"layout": "csv"}, "ingestion.csv.path"),
        ({"color_mode": "cmyk"}, "ingestion.color_mode"),
        ({"on_bad_file": "ignore"}, "ingestion.on_bad_file"),
        ({"group_pattern": "no group"}, "ingestion.group_pattern"),
        ({"png_compress_level": 12}, "ingestion.png_compress_level"),
    ],
)
def test_bad_parameters_name_the_parameter(src, overrides, parameter):
    with pytest.raises(ValueError, match=parameter.replace(".", r"\.")):
        _index(src, {"a/x.png": image_bytes(1)}, **overrides)


def test_no_images_is_a_clear_error(src):
    with pytest.raises(ValueError, match="no images found in ingestion.source_dir"):
        _index(src, {"readme.txt": b"x"})


def test_params_default_file_has_every_key_the_tests_use():
    import yaml

    path = Path(__file__).resolve().parents[3] / "conf" / "base" / "parameters_ingestion.yml"
    base = yaml.safe_load(path.read_text())["ingestion"]
    assert set(PARAMS) <= set(base) and set(PARAMS["csv"]) == set(base["csv"])

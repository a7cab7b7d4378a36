"""Ingestion nodes on tiny images built in memory."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.pipelines.ingestion.nodes import (
    BadFilesError,
    convert_images,
    index_source,
    split_manifest,
)

PARAMS = {
    "layout": "auto",
    "label_pattern": None,
    "group_pattern": None,
    "label_map": {},
    "exclude": ["*_mask*"],
    "include": None,
    "color_mode": "grayscale",
    "max_pixels": 10_000_000,
    "on_bad_file": "fail",
    "workers": 1,
    "split": {"ratios": [0.6, 0.2, 0.2], "val_from_train": 0.25, "seed": 0},
}


def _png(value: int, size: int = 24, fmt: str = "PNG", mode: str = "L") -> bytes:
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 255, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    if mode == "I;16":
        Image.fromarray(pixels.astype(np.uint16) * 100).save(buffer, format=fmt)
    else:
        Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _loaders(files: dict[str, bytes]) -> dict:
    return {path: (lambda data=data: data) for path, data in files.items()}


def _params(**overrides):
    return {**PARAMS, **overrides}


def test_class_folders_labels_and_masks_excluded():
    files = {
        "benign/benign (1).png": _png(1),
        "benign/benign (1)_mask.png": _png(2),
        "malignant/m 1.jpg": _png(3, fmt="JPEG"),
        "normal/n.tif": _png(4, fmt="TIFF", mode="I;16"),
        "notes.txt": b"hello",
    }
    inventory = index_source(_loaders(files), _params())
    assert sorted(inventory["source_path"]) == [
        "benign/benign (1).png",
        "malignant/m 1.jpg",
        "normal/n.tif",
    ]
    assert dict(zip(inventory["source_path"], inventory["label"], strict=True)) == {
        "benign/benign (1).png": "benign",
        "malignant/m 1.jpg": "malignant",
        "normal/n.tif": "normal",
    }
    assert (inventory["split"] == "").all()


def test_presplit_layout_keeps_provider_split_and_maps_valid():
    files = {
        f"{split}/{label}/{i}.png": _png(i + 10 * j)
        for j, split in enumerate(["train", "valid", "test"])
        for label in ["0", "1"]
        for i in range(2)
    }
    inventory = index_source(_loaders(files), _params())
    assert set(inventory["split"]) == {"train", "val", "test"}
    assert set(inventory["label"]) == {"0", "1"}
    png, info, rejected = convert_images(_loaders(files), inventory, _params())
    manifest = split_manifest(info, _params())
    assert (manifest["split_origin"] == "provider").all()
    assert manifest.loc[manifest["source_path"] == "valid/1/0.png", "split"].item() == "val"


def test_label_and_group_patterns_and_label_map():
    files = {
        f"breast/{label}/SOB/x/SOB_{label[0].upper()}_A-14-{pid}-40-{i:03d}.png": _png(i + pid)
        for label in ["benign", "malignant"]
        for pid in (1, 2)
        for i in range(3)
    }
    params = _params(
        label_pattern=r"breast/(benign|malignant)/",
        group_pattern=r"A-14-(\d+)-",
        label_map={"malignant": "cancer"},
    )
    inventory = index_source(_loaders(files), params)
    assert set(inventory["label"]) == {"benign", "cancer"}
    assert set(inventory["group"]) == {"1", "2"}


def test_conversion_writes_png_and_stats():
    files = {"a/x.jpg": _png(1, fmt="JPEG"), "b/y.png": _png(2)}
    inventory = index_source(_loaders(files), _params())
    png, info, rejected = convert_images(_loaders(files), inventory, _params())
    assert set(png) == {"a/x.jpg.png", "b/y.png"}
    assert rejected.empty
    decoded = np.asarray(Image.open(io.BytesIO(png["b/y.png"])))
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(io.BytesIO(files["b/y.png"]))))
    row = info.set_index("path").loc["b/y.png"]
    assert (row["width"], row["height"], row["channels"]) == (24, 24, 1)
    assert row["mean"] == pytest.approx(decoded.mean())
    assert len(row["sha256"]) == 64


@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_bad_files_are_all_listed(mode):
    files = {
        "a/good.png": _png(1),
        "a/empty.png": b"",
        "a/text.jpg": b"this is not a jpeg",
        "b/trunc.png": _png(3)[:60],
    }
    inventory = index_source(_loaders(files), _params())
    params = _params(on_bad_file=mode)
    if mode == "fail":
        with pytest.raises(BadFilesError) as info:
            convert_images(_loaders(files), inventory, params)
        message = str(info.value)
        for name in ("a/empty.png", "a/text.jpg", "b/trunc.png"):
            assert name in message
        assert "on_bad_file: skip" in message
        assert "a/good.png" not in message
    else:
        png, info, rejected = convert_images(_loaders(files), inventory, params)
        assert set(png) == {"a/good.png"}
        assert sorted(rejected["path"]) == ["a/empty.png", "a/text.jpg", "b/trunc.png"]
        assert rejected["reason"].str.len().min() > 0


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
    a = split_manifest(info, _params())
    b = split_manifest(info.sample(frac=1, random_state=3), _params())
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("group")["split"].nunique().max() == 1
    counts = a.groupby(["label", "split"])["group"].nunique().unstack()
    assert counts.loc["benign"].to_dict() == {"test": 4, "train": 12, "val": 4}
    assert counts.loc["malignant"].to_dict() == {"test": 4, "train": 12, "val": 4}
    c = split_manifest(info, _params(split={**PARAMS["split"], "seed": 1}))
    assert not a["split"].equals(c["split"])


def test_two_way_split_takes_val_from_train():
    params = _params(split={"ratios": [0.7, 0.3], "val_from_train": 0.25, "seed": 0})
    manifest = split_manifest(_info(20), params)
    groups = manifest.groupby(["label", "split"])["group"].nunique().unstack()
    assert groups.loc["benign"].to_dict() == {"test": 6, "train": 10, "val": 4}


@pytest.mark.parametrize("ratios", [[0.5, 0.4], [0.8, 0.1, 0.2], [1.0], [0.7, -0.1, 0.4]])
def test_bad_ratios_name_the_parameter(ratios):
    files = {"a/x.png": _png(1)}
    with pytest.raises(ValueError, match=r"ingestion\.split\.ratios"):
        index_source(_loaders(files), _params(split={"ratios": ratios, "seed": 0}))


def test_no_images_is_a_clear_error():
    with pytest.raises(ValueError, match="no images found in ingestion.source_dir"):
        index_source(_loaders({"readme.txt": b"x"}), _params())

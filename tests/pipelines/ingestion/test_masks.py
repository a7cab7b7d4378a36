"""Lesion masks at ingestion: paired by pattern or table column, merged, converted, listed."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.datasets import ImageFolderDataset
from breast_cancer_pipeline.param_schema import ParameterError, validate_block
from breast_cancer_pipeline.pipelines.ingestion.mask_pairing import MaskPattern, check_pattern
from breast_cancer_pipeline.pipelines.ingestion.nodes import collect_masks, index_source

from .helpers import dicom_image, image_bytes, ingest, params, write_tree

SIZE = 24
BUSI = "Dataset_BUSI_with_GT"


def _mask(rows: slice, cols: slice, size: tuple[int, int] = (SIZE, SIZE)) -> bytes:
    pixels = np.zeros(size, dtype=np.uint8)
    pixels[rows, cols] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _busi_files() -> dict[str, bytes]:
    """Three classes of 5 images, BUSI's names; benign (1) has a second lesion's mask."""
    files = {}
    for c, label in enumerate(["benign", "malignant", "normal"]):
        for i in range(1, 6):
            stem = f"{BUSI}/{label}/{label} ({i})"
            files[f"{stem}.png"] = image_bytes(100 * c + i, SIZE)
            lesion = (slice(0, 0), slice(0, 0)) if label == "normal" else (slice(2, 8), slice(i, 9))
            files[f"{stem}_mask.png"] = _mask(*lesion)
    files[f"{BUSI}/benign/benign (1)_mask_1.png"] = _mask(slice(15, 20), slice(15, 22))
    del files[f"{BUSI}/malignant/malignant (5)_mask.png"]  # an image without its mask
    files[f"{BUSI}/benign/benign (9)_mask.png"] = _mask(slice(0, 4), slice(0, 4))  # no image
    files[f"{BUSI}/benign/benign (4)_mask.png"] = _mask(slice(0, 4), slice(0, 4), (SIZE, 30))
    return files


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def busi(tmp_path_factory):
    """The BUSI-like tree ingested with ``{stem}_mask*.png``: source, result, mask table."""
    root = tmp_path_factory.mktemp("busi")
    src, out = write_tree(root / "source", _busi_files()), root / "out"
    out.mkdir()
    before = _tree_hash(src)
    run_params = params(mask_pattern="{stem}_mask*.png")
    result = ingest(src, out, run_params)
    raw = ImageFolderDataset(str(src)).load()
    table = collect_masks(result.store.load(), result.manifest, raw, run_params, {})
    return src, out, result, table, before


def test_busi_masks_are_paired_in_the_manifest(busi):
    _, _, result, _, _ = busi
    masks = result.manifest.set_index("path")["mask_path"]
    assert masks[f"{BUSI}/benign/benign (1).png"] == f"{BUSI}/benign/benign (1)_mask.png"
    assert masks[f"{BUSI}/normal/normal (3).png"] == f"{BUSI}/normal/normal (3)_mask.png"
    assert masks[f"{BUSI}/malignant/malignant (5).png"] == ""
    assert masks[f"{BUSI}/benign/benign (4).png"] == ""  # its mask has another size
    assert (masks != "").sum() == 13
    assert not result.manifest["path"].str.contains("_mask").any()


def test_a_second_lesion_is_merged_into_one_lossless_0_255_mask(busi):
    _, out, _, _, _ = busi
    stored = out / "images" / BUSI / "benign" / "benign (1)_mask.png"
    pixels = np.asarray(Image.open(stored))
    assert pixels.shape == (SIZE, SIZE) and set(np.unique(pixels).tolist()) == {0, 255}
    assert (pixels == 255).sum() == 6 * 8 + 5 * 7  # both lesions, each where it was drawn
    assert pixels[3, 4] == 255 and pixels[17, 18] == 255
    assert not (out / "images" / BUSI / "benign" / "benign (1)_mask_1.png").exists()


def test_the_source_folder_is_never_modified(busi):
    src, _, _, _, before = busi
    assert _tree_hash(src) == before


def test_the_mask_table_lists_every_mask_file_and_the_orphan(busi):
    _, _, _, table, _ = busi
    rows = table.set_index("mask")
    assert len(table) == 16  # 15 paired files (14 images, one with two) and one orphan
    second = rows.loc[f"{BUSI}/benign/benign (1)_mask_1.png"]
    assert second["image"] == f"{BUSI}/benign/benign (1).png"
    assert (second["width"], second["n_values"], second["lesion_pixels"]) == (SIZE, 2, 35)
    assert rows.loc[f"{BUSI}/normal/normal (2)_mask.png", "lesion_pixels"] == 0
    assert rows.loc[f"{BUSI}/normal/normal (2)_mask.png", "n_values"] == 1
    wide = rows.loc[f"{BUSI}/benign/benign (4)_mask.png"]
    assert (wide["width"], wide["image_width"]) == (30, SIZE)
    orphan = rows.loc[f"{BUSI}/benign/benign (9)_mask.png"]
    assert orphan["image"] == "" and np.isnan(orphan["width"])


def test_an_exact_pattern_pairs_one_mask_per_image():
    files = ["a/x.png", "a/x_mask.png", "a/x_mask_1.png", "b/x_mask.png", "a/y (2).png"]
    exact = MaskPattern("{stem}_mask.png", files)
    assert exact.masks_of("a/x.png") == ["a/x_mask.png"]
    assert MaskPattern("{stem}_mask*.png", files).masks_of("a/x.png") == [
        "a/x_mask.png",
        "a/x_mask_1.png",
    ]
    assert MaskPattern("masks/{stem}.png", ["a/masks/x.png"]).masks_of("a/x.png") == [
        "a/masks/x.png"
    ]
    assert exact.masks_of("a/y (2).png") == []


@pytest.mark.parametrize("pattern", ["mask.png", "{stem}", "/abs/{stem}.png", "../{stem}_m.png"])
def test_a_mask_pattern_without_a_place_is_refused_naming_the_parameter(pattern):
    with pytest.raises(ValueError, match=r"\{stem\}"):
        check_pattern(pattern)
    with pytest.raises(ParameterError, match="ingestion.mask_pattern"):
        validate_block("ingestion", params(mask_pattern=pattern))


def test_a_mask_also_taken_as_an_image_is_an_error_naming_it(src):
    write_tree(
        src, {f"{k}/{i}{s}.png": image_bytes(i) for k in "ab" for i in range(2) for s in ("", "_m")}
    )
    raw = ImageFolderDataset(str(src)).load()
    with pytest.raises(ValueError, match=r"'a/0_m\.png'.*ingestion\.exclude"):
        index_source(raw, params(mask_pattern="{stem}_m.png", exclude=[]))


def test_csv_mask_column_joins_the_masks_of_one_image_and_names_a_missing_one(src, out):
    files, rows = {}, []
    for p in range(6):
        image = f"P{p}/image.dcm"
        files[image] = dicom_image(p, rows=16, cols=12)
        for lesion in (1, 2) if p == 0 else (1,):
            mask = f"P{p}/roi_{lesion}.png"
            files[mask] = _mask(slice(lesion, lesion + 2), slice(0, 3), (16, 12))
            rows.append({"path": image, "label": "ab"[p % 2], "patient": f"P{p}", "roi": mask})
    rows[-1]["roi"] = "P5/missing.png"
    write_tree(src, files)
    pd.DataFrame(rows).to_csv(src / "t.csv", index=False)
    csv = {
        "path": "t.csv",
        "path_column": "path",
        "label_column": "label",
        "group_column": "patient",
        "mask_column": "roi",
    }
    result = ingest(src, out, params(csv=csv, on_bad_file="skip"))
    masks = result.manifest.set_index("source_path")["mask_path"]
    assert masks["P0/image.dcm"] == "P0/roi_1.png" and masks["P1/image.dcm"] == "P1/roi_1.png"
    merged = np.asarray(Image.open(out / "images" / "P0" / "roi_1.png"))
    assert (merged == 255).sum() == 3 * 3  # rows 1-2 and rows 2-3: the union is rows 1..3
    (reason,) = result.rejected.loc[result.rejected["path"] == "P5/image.dcm", "reason"]
    assert "'P5/missing.png'" in reason and "mask_column" in reason

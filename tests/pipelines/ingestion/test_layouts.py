"""Each layout users bring, generated in tmp_path: labels, counts, groups and splits."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from .helpers import assert_grouped, dicom_image, image_bytes, ingest, params, write_tree


def test_busi_class_folders_masks_spaces_and_parentheses(src, out):
    files = {}
    for c, label in enumerate(["benign", "malignant", "normal"]):
        for i in range(1, 7):
            files[f"Dataset_BUSI_with_GT/{label}/{label} ({i}).png"] = image_bytes(100 * c + i)
            files[f"Dataset_BUSI_with_GT/{label}/{label} ({i})_mask.png"] = image_bytes(999)
        files[f"Dataset_BUSI_with_GT/{label}/{label} (1)_mask_1.png"] = image_bytes(998)
    result = ingest(write_tree(src, files), out, params())
    manifest = result.manifest
    assert manifest.groupby("label").size().to_dict() == {"benign": 6, "malignant": 6, "normal": 6}
    assert not manifest["source_path"].str.contains("mask").any()
    assert "Dataset_BUSI_with_GT/benign/benign (3).png" in set(manifest["path"])
    assert manifest.groupby(["label", "split"]).size().unstack().to_dict("index") == {
        label: {"test": 1, "train": 4, "val": 1} for label in ["benign", "malignant", "normal"]
    }
    assert_grouped(manifest)
    assert (manifest["split_origin"] == "seeded").all()


def test_kaggle_presplit_classes_0_1_keep_provider_split(src, out):
    counts = {"train": 5, "valid": 2, "test": 3}
    files = {
        f"{split}/{label}/{split}_{label}_{i}.jpg": image_bytes(
            1000 * j + 100 * int(label) + i, fmt="JPEG"
        )
        for j, (split, n) in enumerate(counts.items())
        for label in ("0", "1")
        for i in range(n)
    }
    manifest = ingest(write_tree(src, files), out, params()).manifest
    assert manifest.groupby(["split", "label"]).size().to_dict() == {
        (split, label): n
        for split, n in {"train": 5, "val": 2, "test": 3}.items()
        for label in ("0", "1")
    }
    assert (manifest["split_origin"] == "provider").all()
    assert manifest.loc[manifest["source_path"] == "valid/1/valid_1_0.jpg", "split"].item() == "val"


def test_bach_rgb_tiff_four_classes(src, out):
    classes = ["Normal", "Benign", "InSitu", "Invasive"]
    files = {
        f"ICIAR2018_BACH_Challenge/Photos/{label}/{label[:2].lower()}{i:03d}.tif": image_bytes(
            10 * c + i, size=32, fmt="TIFF", mode="RGB"
        )
        for c, label in enumerate(classes)
        for i in range(1, 6)
    }
    files["ICIAR2018_BACH_Challenge/Photos/microscopy_ground_truth.csv"] = b"n001.tif,Normal\n"
    manifest = ingest(write_tree(src, files), out, params(color_mode="rgb")).manifest
    assert manifest.groupby("label").size().to_dict() == dict.fromkeys(classes, 5)
    assert (manifest["channels"] == 3).all() and (manifest["width"] == 32).all()
    first = "ICIAR2018_BACH_Challenge/Photos/Benign/be001.tif"
    png = np.asarray(Image.open(out / "images" / f"{first}.png"))
    np.testing.assert_array_equal(png, np.asarray(Image.open(src / first)))
    assert_grouped(manifest)


def test_breakhis_nested_patient_in_file_name(src, out):
    files = {}
    patients = {
        "benign": [
            ("adenosis", "A", "22549AB"),
            ("fibroadenoma", "F", "21998CD"),
            ("tubular_adenoma", "TA", "13200"),
            ("phyllodes_tumor", "PT", "21998EF"),
        ],
        "malignant": [
            ("ductal_carcinoma", "DC", "2523"),
            ("lobular_carcinoma", "LC", "15570"),
            ("mucinous_carcinoma", "MC", "13418DE"),
            ("papillary_carcinoma", "PC", "9146"),
        ],
    }
    seed = 0
    for label, rows in patients.items():
        for kind, code, pid in rows:
            b_or_m = label[0].upper()
            folder = (
                f"BreaKHis_v1/histology_slides/breast/{label}/SOB/{kind}/"
                f"SOB_{b_or_m}_{code}_14-{pid}"
            )
            for magnification in ("40X", "100X"):
                for i in range(1, 3):
                    seed += 1
                    name = f"SOB_{b_or_m}_{code}-14-{pid}-{magnification[:-1]}-{i:03d}.png"
                    files[f"{folder}/{magnification}/{name}"] = image_bytes(seed, mode="RGB")
    run_params = params(
        label_pattern=r"breast/(benign|malignant)/",
        group_pattern=r"SOB_[BM]_[A-Z]+-(\d+-[0-9A-Z]+)-",
        color_mode="rgb",
    )
    manifest = ingest(write_tree(src, files), out, run_params).manifest
    assert manifest.groupby("label").size().to_dict() == {"benign": 16, "malignant": 16}
    assert manifest.groupby("group").size().to_dict() == {
        f"14-{pid}": 4 for rows in patients.values() for _, _, pid in rows
    }
    # Four patients per class and ratios 0.6/0.2/0.2: 2 train, 1 val, 1 test, whole patients.
    assert manifest.groupby(["label", "split"])["group"].nunique().unstack().to_dict("index") == {
        label: {"test": 1, "train": 2, "val": 1} for label in patients
    }
    assert_grouped(manifest)


def _cbis_tree(src, n_patients: int = 6):
    """CBIS-DDSM-like: DICOMs in UID folders, a CSV with spaces in its column names."""
    files, rows = {}, []
    for p in range(n_patients):
        pathology = ["MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"][p % 3]
        split = "Training" if p < 4 else "Test"
        for view in ("CC", "MLO"):
            case = f"Mass-{split}_P_{p:05d}_LEFT_{view}"
            path = f"CBIS-DDSM/{case}/1.3.6.1.4.1.9590.{p}/1.3.6.1.4.1.9590.{p}.1/000000.dcm"
            files[path] = dicom_image(10 * p + len(view))
            rows.append(
                {
                    "patient_id": f"P_{p:05d}",
                    "left or right breast": "LEFT",
                    "image view": view,
                    "abnormality id": 1,
                    "pathology": pathology,
                    # CBIS-DDSM's paths end with a line break: it is stripped.
                    "image file path": path.removeprefix("CBIS-DDSM/") + "\n",
                    "cropped image file path": f"{case}_1/x/y/000000.dcm",
                    "split": split,
                }
            )
    write_tree(src, files)
    return pd.DataFrame(rows)


CBIS_CSV = {
    "path_column": "image file path",
    "label_column": "pathology",
    "group_column": "patient_id",
}


@pytest.mark.parametrize("table_format", ["csv", "parquet"])
def test_cbis_ddsm_csv_with_spaces_label_map_and_provider_split(src, out, table_format):
    table = _cbis_tree(src)
    # A second abnormality of the same image: the same path twice, one row kept.
    table = pd.concat([table, table.iloc[[0]].assign(**{"abnormality id": 2})])
    target = src / "CBIS-DDSM" / f"mass_case_description.{table_format}"
    if table_format == "csv":
        table.to_csv(target, index=False)
    else:
        table.to_parquet(target, index=False)
    run_params = params(
        csv={**CBIS_CSV, "path": f"*.{table_format}", "split_column": "split"},
        label_map={"BENIGN_WITHOUT_CALLBACK": "BENIGN"},
    )
    # The CSV's paths are relative to source_dir: the CBIS-DDSM folder.
    result = ingest(src / "CBIS-DDSM", out, run_params)
    manifest = result.manifest
    assert len(manifest) == 12
    assert manifest.groupby("label").size().to_dict() == {"BENIGN": 8, "MALIGNANT": 4}
    assert manifest.groupby("split").size().to_dict() == {"test": 4, "train": 8}
    assert (manifest["split_origin"] == "provider").all()
    assert manifest.groupby("group").size().to_dict() == {f"P_{p:05d}": 2 for p in range(6)}
    assert_grouped(manifest)
    assert manifest["path"].str.endswith("000000.dcm.png").all()


def test_cbis_ddsm_csv_without_split_column_is_split_by_patient(src, out):
    table = _cbis_tree(src, n_patients=9)
    table.to_csv(src / "CBIS-DDSM" / "calc case description train set.csv", index=False)
    run_params = params(
        csv={**CBIS_CSV, "path": "calc case description train set.csv"},
        label_map={"BENIGN_WITHOUT_CALLBACK": "BENIGN"},
    )
    manifest = ingest(src / "CBIS-DDSM", out, run_params).manifest
    assert len(manifest) == 18 and manifest["group"].nunique() == 9
    assert (manifest["split_origin"] == "seeded").all()
    assert_grouped(manifest)


def test_csv_conflicting_labels_need_label_priority(src, out):
    table = _cbis_tree(src, n_patients=3)
    table = pd.concat([table, table.iloc[[0]].assign(pathology="BENIGN")])  # P0 was MALIGNANT
    table.to_csv(src / "CBIS-DDSM" / "t.csv", index=False)
    run_params = params(csv={**CBIS_CSV, "path": "t.csv"})
    with pytest.raises(ValueError, match=r"different labels[\s\S]*label_priority"):
        ingest(src / "CBIS-DDSM", out, run_params)
    run_params["csv"]["label_priority"] = ["MALIGNANT", "BENIGN"]
    manifest = ingest(src / "CBIS-DDSM", out, run_params).manifest
    first = table.iloc[0]["image file path"].strip()
    assert manifest.set_index("source_path").loc[first, "label"] == "MALIGNANT"


def test_csv_missing_column_lists_the_columns(src, out):
    _cbis_tree(src, n_patients=1).to_csv(src / "CBIS-DDSM" / "t.csv", index=False)
    run_params = params(csv={**CBIS_CSV, "path": "t.csv", "split_column": "dataset"})
    with pytest.raises(ValueError, match=r"split_column is 'dataset'.*'image file path'"):
        ingest(src / "CBIS-DDSM", out, run_params)


def test_dmr_ir_thermal_patient_folders(src, out):
    files = {}
    for c, label in enumerate(("Healthy", "Sick")):
        for p in range(4):
            patient = f"{label[0]}{p:03d}"
            for i in range(3):
                files[f"DMR-IR/{label}/{patient}/Static/T{patient}.{i}.S.2014.jpg"] = image_bytes(
                    100 * c + 10 * p + i, fmt="JPEG", mode="RGB"
                )
            files[f"DMR-IR/{label}/{patient}/Matrix/T{patient}.txt"] = b"36.1 36.2\n36.0 35.9\n"
    run_params = params(
        label_pattern=r"DMR-IR/(Healthy|Sick)/",
        group_pattern=r"DMR-IR/[^/]+/([^/]+)/",
        split={"ratios": [0.5, 0.25, 0.25]},
    )
    manifest = ingest(write_tree(src, files), out, run_params).manifest
    assert manifest.groupby("label").size().to_dict() == {"Healthy": 12, "Sick": 12}
    assert manifest["group"].nunique() == 8 and (manifest.groupby("group").size() == 3).all()
    assert manifest.groupby(["label", "split"])["group"].nunique().unstack().to_dict("index") == {
        label: {"test": 1, "train": 2, "val": 1} for label in ("Healthy", "Sick")
    }
    assert (manifest["channels"] == 1).all()
    assert_grouped(manifest)

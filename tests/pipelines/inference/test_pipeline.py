"""The batch command through the project's catalog: its folder as a path or an fsspec URL."""

import fsspec
import numpy as np
import pandas as pd
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from breast_cancer_pipeline.pipelines.inference.pipeline import create_pipeline
from tests.params import base_params

from ._files import pillow_file
from .test_levels import LevelledModel, _catalog_dataset

#: Patients' views as the demo's patterns name them, and a file that is not an image.
FILES = {
    f"P000{p}_{side}_CC.png": pillow_file(np.full((24, 24), 40 * p + 20, np.uint8), "PNG")
    for p in range(3)
    for side in "LR"
} | {"P0009_L_CC.png": b"not an image"}


def _batch_command(folder: str) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """``kedro run --pipelines=inference --params inference.source_dir=<folder>``."""
    params = {
        "inference": base_params("inference"),
        "reporting.gradcam": base_params("reporting")["gradcam"],
        "ingestion.column_patterns": base_params("ingestion", env="demo")["column_patterns"],
        "cluster": base_params("cluster"),
    }
    catalog = DataCatalog(
        {
            "inference_images": _catalog_dataset("inference_images", path=folder),
            "serving_model": MemoryDataset(LevelledModel(), copy_mode="assign"),
            "predictions": MemoryDataset(),
            "batch_level_predictions": MemoryDataset(),
        }
        | {f"params:{name}": MemoryDataset(value) for name, value in params.items()}
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog.load("predictions"), catalog.load("batch_level_predictions")


def test_the_batch_command_scores_a_folder_url_as_the_same_local_folder(tmp_path):
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    memory, root = fsspec.filesystem("memory"), f"/{tmp_path.name}"
    for name, data in FILES.items():
        memory.pipe(f"{root}/{name}", data)
    try:
        there, there_levels = _batch_command(f"memory://{root}")
    finally:
        memory.rm(root, recursive=True)
    here, here_levels = _batch_command(str(tmp_path))

    pd.testing.assert_frame_equal(there, here)
    assert sorted(there_levels) == ["breast", "patient"]
    for level, table in here_levels.items():
        pd.testing.assert_frame_equal(there_levels[level], table)
    assert there["path"].tolist() == sorted(FILES)
    assert there["error"].tolist()[:6] == [""] * 6
    assert there["error"][6].startswith("cannot decode 'P0009_L_CC.png': not an image")
    # The fake model's p(malignant) is the mean pixel / 255: each file's own pixels.
    expected = np.repeat([20, 60, 100], 2) / 255
    np.testing.assert_allclose(there["p_malignant"][:6].astype(float), expected, atol=1e-6)

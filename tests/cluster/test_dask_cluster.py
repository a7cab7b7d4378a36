"""Per-image work on a real Dask cluster: ``dask scheduler`` and ``dask worker`` on 127.0.0.1.

The conversion of ~300 images, the model-input arrays and the batch command's decoding give,
through ``cluster.address`` (the sources given as ``file://`` URLs), what this machine gives,
byte for byte; a worker killed mid-conversion is replaced, its tasks run again elsewhere,
and the manifest stays consistent.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.pipelines.augmentation.nodes import prepare_model_input
from tests.cluster.dask_cli import dask_cluster
from tests.params import base_params
from tests.pipelines.ingestion.helpers import image_bytes, ingest, params, write_tree

#: Images per class (two classes): 16-bit TIFFs, windowed to 8 bits by the conversion.
PER_CLASS = 150
#: Conversion results back before the worker is killed.
KILL_AFTER = 40


@pytest.fixture(scope="module")
def address(tmp_path_factory) -> str:
    with dask_cluster(tmp_path_factory.mktemp("dask")) as scheduler:
        yield scheduler


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    files = {
        f"{label}/{i:03d}.tif": image_bytes(1000 * c + i, size=32, fmt="TIFF", mode="I;16")
        for c, label in enumerate("ab")
        for i in range(PER_CLASS)
    }
    return write_tree(tmp_path_factory.mktemp("source"), files)


@pytest.fixture(scope="module")
def pooled(source, tmp_path_factory):
    """The reference: the same source converted by this machine's process pool."""
    return ingest(source, tmp_path_factory.mktemp("pool"), params(workers=2))


def _cluster(address: str) -> dict:
    return base_params("cluster", address=address)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (staging areas and temporaries included), by path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.*")}


def _same_output(out: Path, ingested, pooled, pool_out: Path) -> None:
    pd.testing.assert_frame_equal(ingested.manifest, pooled.manifest)
    assert len(ingested.manifest) == 2 * PER_CLASS
    assert _files(out / "images") == _files(pool_out / "images")  # no staged or half-written
    assert (out / "conversion_index.jsonl").read_bytes() == (
        pool_out / "conversion_index.jsonl"
    ).read_bytes()


def test_conversion_on_the_cluster_is_the_process_pool_s_byte_for_byte(
    source, pooled, address, tmp_path
):
    # The source as a URL (a file:// one: the workers' memory:// would be their own).
    url = f"file://{source}"
    ingested = ingest(url, tmp_path, params(workers=2), cluster=_cluster(address))
    assert ingested.store.last_save == {"planned": 300, "skipped": 0, "failed": 0, "produced": 300}
    _same_output(tmp_path, ingested, pooled, Path(pooled.store._describe()["path"]).parent)


def test_model_input_arrays_on_the_cluster_are_the_local_ones(pooled, address):
    images, manifest = pooled.store.load(), pooled.manifest
    augmentation = base_params("augmentation", image_size=24)
    # Image arrays are made as they are written (ArrayRows): np.asarray makes them here.
    here = prepare_model_input(images, manifest, augmentation)
    there = prepare_model_input(images, manifest, augmentation, _cluster(address))
    assert sorted(there) == sorted(here)
    here = {key: np.asarray(array) for key, array in here.items()}
    assert len(here["x_train"]) > 100 and here["x_train"].std() > 10  # real pixels
    for key, array in here.items():
        np.testing.assert_array_equal(np.asarray(there[key]), array, err_msg=key)


def test_a_worker_killed_mid_conversion_is_replaced_and_the_manifest_stays_consistent(
    source, pooled, address, tmp_path
):
    from distributed import Client

    journal = tmp_path / "conversion_index.jsonl"
    with Client(address, set_as_default=False) as client:
        victim, pid = sorted(client.run(os.getpid).items())[0]
        killed, finished = threading.Event(), threading.Event()

        def kill_once_results_come_back() -> None:
            while not finished.is_set():
                if journal.is_file() and journal.read_text().count("\n") >= KILL_AFTER:
                    os.kill(pid, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.002)

        killer = threading.Thread(target=kill_once_results_come_back, daemon=True)
        killer.start()
        try:
            ingested = ingest(source, tmp_path, params(workers=2), cluster=_cluster(address))
        finally:
            finished.set()
            killer.join()
        assert killed.is_set()
        removed = [
            event
            for _, event in client.get_events("all")
            if event.get("action") == "remove-worker" and event.get("worker") == victim
        ]
    # The worker died with tasks in hand; the scheduler ran them again on the others.
    assert len(removed) == 1 and removed[0]["processing-tasks"]
    assert ingested.store.last_save["produced"] == 300 and ingested.store.last_save["failed"] == 0
    _same_output(tmp_path, ingested, pooled, Path(pooled.store._describe()["path"]).parent)


#: The batch command's images: 3 patients x 2 breasts x 2 views, 16-bit TIFFs and PNGs.
BATCH_PATIENTS = 3


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """The served fixture's tiny model, packaged with levels, saved as reporting saves it."""
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from tests.serving._served import (
        LEVEL_OPERATING_POINTS,
        SERVED_PROBABILITIES,
        tiny_serving_model,
    )

    folder = tmp_path_factory.mktemp("model") / "serving_model"
    packaged = tiny_serving_model().with_config(
        **SERVED_PROBABILITIES, levels=LEVEL_OPERATING_POINTS
    )
    ServingModelDataset(str(folder)).save(packaged)
    return folder


def _batch_folder(root: Path) -> tuple[Path, int]:
    """Views named as the demo's patterns read them, a broken file and one too large.

    Returns the folder and the ``inference.max_decoded_bytes`` that refuses the large one.
    """
    from breast_cancer_pipeline.imaging import decode_cost

    files = {}
    for p in range(BATCH_PATIENTS):
        for side in "LR":
            files[f"P{p:04d}_{side}_CC.png"] = image_bytes(10 * p + ord(side), size=40)
            tiff = image_bytes(10 * p + ord(side) + 1, size=40, fmt="TIFF", mode="I;16")
            files[f"P{p:04d}_{side}_MLO.tif"] = tiff
    limit = max(decode_cost(data).peak_bytes for data in files.values())
    files["P0007_L_CC.png"] = b"not an image"
    files["P0008_R_CC.png"] = image_bytes(99, size=400)
    assert decode_cost(files["P0008_R_CC.png"]).peak_bytes > limit
    return write_tree(root, files), limit


def _batch_command(folder: str, model: Path, out: Path, max_decoded_bytes: int, cluster: dict):
    """``kedro run --pipelines=inference`` on ``folder``, through the project's catalog entries."""
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    from breast_cancer_pipeline.pipelines.inference.pipeline import create_pipeline
    from tests.pipelines.inference.test_levels import _catalog_dataset

    params = {
        "inference": base_params("inference", max_decoded_bytes=max_decoded_bytes, batch_size=4),
        "reporting.gradcam": base_params("reporting")["gradcam"],
        "ingestion.column_patterns": base_params("ingestion", env="demo")["column_patterns"],
        "cluster": cluster,
    }
    catalog = DataCatalog(
        {
            "inference_images": _catalog_dataset("inference_images", path=folder),
            "serving_model": _catalog_dataset("serving_model", filepath=str(model)),
            "predictions": _catalog_dataset("predictions", filepath=str(out / "predictions.csv")),
            "batch_level_predictions": _catalog_dataset("batch_level_predictions", path=str(out)),
        }
        | {f"params:{name}": MemoryDataset(value) for name, value in params.items()}
    )
    SequentialRunner().run(create_pipeline(), catalog)


def test_the_batch_command_decodes_on_the_cluster_and_writes_the_local_run_s_files(
    saved_model, address, tmp_path, caplog
):
    folder, limit = _batch_folder(tmp_path / "images")
    here, there = tmp_path / "here", tmp_path / "there"
    _batch_command(str(folder), saved_model, here, limit, base_params("cluster"))
    assert "Decoding on the Dask cluster" not in caplog.text  # address null: as before
    with caplog.at_level(logging.INFO):  # the folder as a URL the workers read
        _batch_command(f"file://{folder}", saved_model, there, limit, _cluster(address))

    n_rows = 4 * BATCH_PATIENTS + 2
    assert f"Decoding on the Dask cluster: {n_rows}/{n_rows} images done" in caplog.text
    assert _files(there) == _files(here)
    assert sorted(_files(here)) == [
        "predictions.csv",
        "predictions_breast.csv",
        "predictions_patient.csv",
    ]
    predictions = pd.read_csv(there / "predictions.csv").set_index("path")
    errors = predictions["error"].dropna()
    assert errors.index.tolist() == ["P0007_L_CC.png", "P0008_R_CC.png"]
    assert errors["P0007_L_CC.png"].startswith("cannot decode 'P0007_L_CC.png': not an image")
    assert f"more than max_decoded_bytes allows ({limit:,} bytes)" in errors["P0008_R_CC.png"]
    scored = predictions[predictions["error"].isna()]
    assert len(scored) == 4 * BATCH_PATIENTS and scored["p_malignant"].between(0, 1).all()
    assert scored["p_malignant"].nunique() > BATCH_PATIENTS  # the images' own answers
    patients = pd.read_csv(there / "predictions_patient.csv")
    assert patients["n_images"].tolist() == [4] * BATCH_PATIENTS

"""Per-image work on a real Dask cluster: ``dask scheduler`` and ``dask worker`` on 127.0.0.1.

The conversion of ~300 images and the model-input arrays give, through ``cluster.address``,
what this machine's process pool gives, byte for byte; a worker killed mid-conversion is
replaced, its tasks run again elsewhere, and the manifest stays consistent.
"""

from __future__ import annotations

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
    ingested = ingest(source, tmp_path, params(workers=2), cluster=_cluster(address))
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

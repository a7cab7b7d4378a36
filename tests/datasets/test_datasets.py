import numpy as np
import pytest
from kedro.io import DatasetError

from breast_cancer_pipeline.datasets import (
    BinaryFileDataset,
    KerasModelDataset,
    NumpyArraysDataset,
)


def test_binary_file_round_trip_and_failed_save_keeps_old(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b.png"
    dataset = BinaryFileDataset(str(target))
    dataset.save(b"first")
    assert dataset.load() == b"first"

    import breast_cancer_pipeline.datasets._atomic as atomic

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save(b"second")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.png"]  # no temp left


def test_binary_file_refuses_non_bytes(tmp_path):
    with pytest.raises(DatasetError, match="saves bytes"):
        BinaryFileDataset(str(tmp_path / "x")).save("text")


def test_numpy_arrays_round_trip_memory_mapped(tmp_path):
    dataset = NumpyArraysDataset(str(tmp_path / "arrays"))
    dataset.save({"x": np.arange(6, dtype=np.uint8).reshape(2, 3), "names": np.array(["a", "b"])})
    dataset.save({"x": np.arange(4, dtype=np.uint8)})  # replaces the whole folder
    loaded = dataset.load()
    assert set(loaded) == {"x"}
    assert isinstance(loaded["x"], np.memmap)
    assert loaded["x"].tolist() == [0, 1, 2, 3]
    with pytest.raises(DatasetError, match="dtype object"):
        dataset.save({"bad": np.array([{}, 1], dtype=object)})
    assert dataset.load()["x"].tolist() == [0, 1, 2, 3]


def test_keras_model_round_trip(tmp_path):
    from breast_cancer_pipeline.modeling import build_classifier

    model = build_classifier("small_cnn", 2, 16, 1, None, {"dropout": 0.1}, {"flip": "horizontal"})
    dataset = KerasModelDataset(str(tmp_path / "m.keras"))
    dataset.save(model)
    x = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 1), dtype=np.uint8)
    np.testing.assert_allclose(
        dataset.load().predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def test_keras_model_needs_keras_suffix(tmp_path):
    with pytest.raises(DatasetError, match=".keras"):
        KerasModelDataset(str(tmp_path / "m.h5"))


def test_binary_file_reads_a_url_and_refuses_to_write_it(tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe(f"/{tmp_path.name}/x.png", b"remote bytes")
    try:
        dataset = BinaryFileDataset(f"memory:///{tmp_path.name}/x.png")
        assert dataset.exists() and dataset.load() == b"remote bytes"
        with pytest.raises(DatasetError, match="is read only"):
            dataset.save(b"new")
        assert memory.cat(f"/{tmp_path.name}/x.png") == b"remote bytes"
        with pytest.raises(DatasetError, match="cannot read 'memory:///.*/y.png'"):
            BinaryFileDataset(f"memory:///{tmp_path.name}/y.png").load()
    finally:
        memory.rm(f"/{tmp_path.name}", recursive=True)
    (tmp_path / "local.png").write_bytes(b"here")
    assert BinaryFileDataset(f"file://{tmp_path}/local.png").load() == b"here"

import numpy as np
import pytest
from kedro.io import DatasetError

from breast_cancer_pipeline.datasets import (
    ArrayRows,
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


def test_numpy_arrays_write_array_rows_one_row_at_a_time(tmp_path):
    """300 rows of 48 KiB (14 MiB) are saved while memory holds about one of them."""
    import tracemalloc

    shape = (300, 128, 128, 3)

    def rows():
        for i in range(shape[0]):
            yield np.full(shape[1:], i % 251, np.uint8)

    dataset = NumpyArraysDataset(str(tmp_path / "arrays"))
    tracemalloc.start()
    try:
        dataset.save({"x": ArrayRows(shape, np.uint8, rows), "y": np.arange(3)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20  # the whole array would be 14 MiB
    loaded = dataset.load()
    assert loaded["x"].shape == shape and isinstance(loaded["x"], np.memmap)
    assert [int(loaded["x"][i, 5, 7, 2]) for i in (0, 1, 299)] == [0, 1, 299 % 251]
    np.testing.assert_array_equal(np.asarray(ArrayRows(shape, np.uint8, rows)), loaded["x"])


def test_numpy_arrays_refuse_array_rows_of_another_count_or_shape(tmp_path):
    dataset = NumpyArraysDataset(str(tmp_path / "arrays"))
    dataset.save({"x": np.arange(4, dtype=np.uint8)})
    short = ArrayRows((3, 2), np.uint8, lambda: iter([np.zeros(2, np.uint8)] * 2))
    with pytest.raises(DatasetError, match="'x' should have 3 rows, got 2"):
        dataset.save({"x": short})
    wide = ArrayRows((1, 2), np.uint8, lambda: iter([np.zeros(5, np.uint8)]))
    with pytest.raises(DatasetError, match=r"row 0 has shape \(5,\), not \(2,\)"):
        dataset.save({"x": wide})
    assert dataset.load()["x"].tolist() == [0, 1, 2, 3]  # the previous arrays are kept


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

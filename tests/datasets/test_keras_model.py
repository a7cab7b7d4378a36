"""KerasModelDataset writes the same bytes for the same model, so DVC reruns nothing after it."""

import json
import time
import zipfile

import numpy as np
import pytest

from breast_cancer_pipeline.datasets import KerasModelDataset
from breast_cancer_pipeline.datasets import keras_model as keras_model_module


def _trained_classifier():
    """A small classifier trained one epoch from a fixed seed (so it has optimizer state).

    As in a new process: Keras's automatic names (``input_layer_1``...) start again.
    """
    import keras

    from breast_cancer_pipeline.modeling import build_classifier, set_seed

    keras.backend.clear_session()
    set_seed(0)
    classifier = build_classifier("small_cnn", 2, 16, 1, None, {"dropout": 0.1}, {})
    classifier.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 1), dtype=np.uint8)
    classifier.fit(x, np.eye(2)[[0, 1, 0, 1]], epochs=1, verbose=0)
    return classifier


@pytest.fixture(scope="module")
def model():
    return _trained_classifier()


def test_two_identical_models_save_to_identical_bytes_that_load(tmp_path, model):
    first, second = tmp_path / "a.keras", tmp_path / "b.keras"
    KerasModelDataset(str(first)).save(model)
    time.sleep(1.1)  # Keras stamps the save time in seconds
    # Another object trained the same way: its layers share other objects (other ids).
    KerasModelDataset(str(second)).save(_trained_classifier())

    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(second) as archive:
        assert {m.date_time for m in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        names = [m.filename for m in archive.infolist()]
        metadata = json.loads(archive.read("metadata.json"))
        config = archive.read("config.json").decode()
    assert names == sorted(names)
    assert "date_saved" not in metadata and metadata["keras_version"]
    assert '"shared_object_id": 0' in config
    x = np.random.default_rng(1).integers(0, 255, (3, 16, 16, 1), dtype=np.uint8)
    loaded = KerasModelDataset(str(second)).load()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.keras", "b.keras"]


def test_a_failed_save_keeps_the_previous_model_and_no_temporary_file(tmp_path, model, monkeypatch):
    target = tmp_path / "m.keras"
    dataset = KerasModelDataset(str(target))
    dataset.save(model)
    before = target.read_bytes()

    def disk_full(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(keras_model_module, "_write_reproducible_archive", disk_full)
    with pytest.raises(Exception, match="disk full"):
        dataset.save(model)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]

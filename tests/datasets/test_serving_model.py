"""The packaged model as a folder, and the TF Serving export."""

from pathlib import Path

import numpy as np
import pytest

from tests.serving._served import CONFIG, tiny_serving_model


def test_dataset_round_trip_and_compiled_forward(tmp_path):
    from breast_cancer_pipeline.datasets.serving_model import (
        ServingModelDataset,
        TFServingExportDataset,
    )

    serving = tiny_serving_model()
    dataset = ServingModelDataset(str(tmp_path / "serving_model"))
    dataset.save(serving)
    loaded = dataset.load()
    x = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 1)).astype(np.uint8)
    expected = serving.model.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict_proba(x), expected, atol=1e-5)
    np.testing.assert_allclose(loaded.predict_proba(x[:1]), expected[:1], atol=1e-5)
    assert loaded.config["threshold"] == 0.2
    np.testing.assert_array_equal(loaded.ood.val_scores, serving.ood.val_scores)
    import copy

    assert copy.deepcopy(loaded) is loaded  # kedro-mlflow deep-copies its catalog per request

    export = TFServingExportDataset(str(tmp_path / "serving"))
    export.save(serving.model)
    export.save(serving.model)
    assert [Path(p).name for p in export.load()] == ["1", "2"]
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "serving" / "2"))
    np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(), expected, atol=1e-5)


def test_models_with_python_code_are_refused(tmp_path):
    """Keras safe mode: a ``Lambda`` layer (arbitrary Python) in a model file is not loaded."""
    import keras

    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.modeling import load_model
    from breast_cancer_pipeline.serving import ServingModel

    inputs = keras.Input((32, 32, 1), dtype="uint8")
    x = keras.layers.Lambda(lambda t: keras.ops.cast(t, "float32") / 255.0)(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    dataset = ServingModelDataset(str(tmp_path / "serving_model"))
    dataset.save(ServingModel(keras.Model(inputs, outputs), CONFIG))
    with pytest.raises(ValueError, match="deserialization of a `Lambda` layer"):
        load_model(tmp_path / "serving_model" / "model.keras")
    with pytest.raises(ValueError, match="deserialization of a `Lambda` layer"):
        load_model(tmp_path / "serving_model" / "model.keras", safe_mode=False)  # not honoured
    with pytest.raises(Exception, match="Lambda") as info:
        dataset.load()
    assert "serving_model" in str(info.value)  # names the artefact refused


def test_the_exported_files_are_saved_beside_the_model_and_loaded_with_it(tmp_path):
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset

    serving = tiny_serving_model()
    dataset = ServingModelDataset(str(tmp_path / "serving_model"))
    dataset.save(serving.with_exports({"onnx": b"onnx graph", "litert": b"tflite graph"}))
    folder = tmp_path / "serving_model"
    assert (folder / "model.onnx").read_bytes() == b"onnx graph"
    assert (folder / "model.tflite").read_bytes() == b"tflite graph"
    loaded = dataset.load()
    assert dict(loaded.exports) == {"onnx": b"onnx graph", "litert": b"tflite graph"}
    assert dict(loaded.with_config(threshold=0.3).exports) == dict(loaded.exports)
    dataset.save(serving)  # packaged again without them: no stale file is left behind
    assert not (folder / "model.onnx").exists() and dict(dataset.load().exports) == {}

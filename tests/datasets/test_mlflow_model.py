"""The Keras classifier logged to MLflow by its tracking dataset."""

import mlflow
import numpy as np


def test_the_logged_keras_model_carries_a_tensor_signature_and_example(mlflow_store):
    from breast_cancer_pipeline.datasets.mlflow_model import LazyMlflowModelTrackingDataset
    from breast_cancer_pipeline.modeling import build_classifier

    model = build_classifier("small_cnn", 3, 32, 1, None, {"dropout": 0.0})
    # Requirements given: MLflow's inference of them takes ~20 s (not what is tested here).
    save_args = {"name": "classifier", "pip_requirements": ["keras"]}
    dataset = LazyMlflowModelTrackingDataset("mlflow.keras", save_args=save_args)
    with mlflow.start_run():
        dataset.save(model)
    assert dataset._save_args == save_args  # not kept for the next save

    info = mlflow.models.get_model_info(dataset.model_uri)
    (spec,) = info.signature.inputs.to_dict()
    assert spec["name"] == "image"
    assert spec["tensor-spec"] == {"dtype": "uint8", "shape": (-1, 32, 32, 1)}
    (out,) = info.signature.outputs.to_dict()
    assert out["tensor-spec"] == {"dtype": "float32", "shape": (-1, 3)}
    assert info.saved_input_example_info is not None
    loaded = mlflow.pyfunc.load_model(dataset.model_uri)
    proba = np.asarray(loaded.predict(np.zeros((2, 32, 32, 1), np.uint8)))
    assert proba.shape == (2, 3)

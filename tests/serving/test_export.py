"""The served network exported to ONNX and LiteRT: parity with Keras on a tiny trained model.

One export for the module (about 10 s): an ensemble of a small CNN trained a few steps and a
second member, at 32 px RGB, with augmentation layers (HED jitter among them) and stain
normalisation inside (Reinhard in one member, Macenko in the other), as reporting packages it.
"""

from contextlib import nullcontext

import numpy as np
import pytest

from tests.he_images import SITE_B, he_images
from tests.params import base_params
from tests.serving._served import CONFIG

EXPORT = base_params("inference")["export"]
ODD = EXPORT["parity_batch_size"]
RGB = {**CONFIG, "channels": 3, "color_mode": "rgb"}


def _classifier(seed: int, train: bool, normalize: str):
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.stain import fit_reference

    set_seed(seed)
    augmentation = {
        "flip": "horizontal",
        "rotation": 0.05,
        "contrast": 0.1,
        "hed_jitter": 0.05,
        "stain_reference": fit_reference(he_images(4, 32, 10 + seed), normalize),
    }
    model = build_classifier(
        "small_cnn", 3, 32, 3, None, {"dropout": 0.1, "dense_units": 8}, augmentation, seed
    )
    if train:  # a few steps: moving BatchNorm statistics and weights away from their start
        rng = np.random.default_rng(seed)
        x = he_images(24, 32, seed)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, rng.integers(0, 3, 24), batch_size=8, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def exported():
    """``(packaged ensemble, exported model, report, test images)``."""
    from breast_cancer_pipeline.pipelines.reporting.export import export_served_model
    from breast_cancer_pipeline.serving import ServingModel

    members = [_classifier(0, True, "reinhard"), _classifier(1, False, "macenko")]
    packaged = ServingModel(members[0], RGB, members[1:])
    images = he_images(2 * ODD - 3, 32, 2, SITE_B, scale=(0.9, 1.1))  # another site's stains
    served, report = export_served_model(packaged, {"x_test": images}, EXPORT)
    return packaged, served, report, images


def test_onnx_and_litert_match_keras_at_batch_1_and_an_odd_batch(exported):
    from breast_cancer_pipeline.serving.runtime import litert_forward, onnx_forward

    packaged, served, report, images = exported
    assert set(served.exports) == {"onnx", "litert"}
    features, _ = packaged.forward(images)  # the first member's, through TensorFlow
    keras_proba = np.mean([m.predict(images, verbose=0) for m in packaged.members], axis=0)
    for kind, forward in (
        ("onnx", onnx_forward(served.exports["onnx"])),
        ("litert", litert_forward(served.exports["litert"])),
    ):
        block = report[kind]
        assert block["shipped"] and block["images"] == len(images), block
        assert block["max_abs_diff_batch_1"] <= 1e-4 and block[f"max_abs_diff_batch_{ODD}"] <= 1e-4
        for size in (1, ODD):  # one graph, any batch size: the ensemble's mean inside
            got_features, proba = forward(images[:size])
            assert proba.dtype == np.float32 and proba.shape == (size, 3)
            np.testing.assert_allclose(proba, keras_proba[:size], atol=1e-4)
            np.testing.assert_allclose(got_features, features[:size], atol=1e-4, rtol=1e-4)
    assert report["onnx"]["opset"] == EXPORT["opset"]
    assert report["onnx"]["graph"] == "one merged graph: the mean of 2 fold models' probabilities"


def test_the_graph_has_no_augmentation_and_a_dynamic_batch(exported):
    import onnx

    _, served, _, _ = exported
    graph = onnx.load_from_string(served.exports["onnx"])
    ops = {node.op_type for node in graph.graph.node}
    assert not any("Random" in op for op in ops) and "Conv" in ops
    assert {"TopK", "Atan"} <= ops  # the stain normalisation's percentiles and angles
    assert {(o.domain, o.version) for o in graph.opset_import} >= {("", EXPORT["opset"])}
    (image,) = graph.graph.input
    assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    batch, *rest = image.type.tensor_type.shape.dim
    assert batch.dim_param == "batch" and [d.dim_value for d in rest] == [32, 32, 3]
    assert [o.name for o in graph.graph.output] == ["features", "probabilities"]
    for output, width in zip(graph.graph.output, (8, 3), strict=True):
        assert [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim] == [
            "batch",
            width,
        ]


def test_a_file_over_the_tolerance_or_failing_to_convert_is_not_shipped(exported, monkeypatch):
    from breast_cancer_pipeline.pipelines.reporting import export
    from breast_cancer_pipeline.serving.export import ExportError

    packaged, served, _, images = exported
    monkeypatch.setattr(export, "saved_model", lambda network: nullcontext("saved"))
    monkeypatch.setattr(export, "served_network", lambda model: None)
    monkeypatch.setattr(export, "to_onnx", lambda saved, opset: served.exports["onnx"])

    def no_litert(saved):
        raise ExportError("LiteRT conversion failed: 'Erfc' is not a builtin operator")

    monkeypatch.setattr(export, "to_litert", no_litert)
    strict = {**EXPORT, "tolerance": 1e-12}
    unshipped, report = export.export_served_model(packaged, {"x_test": images}, strict)
    assert dict(unshipped.exports) == {}
    assert report["onnx"]["shipped"] is False and 0 < report["onnx"]["max_abs_diff"] <= 1e-4
    assert report["litert"] == {
        **{k: report["litert"][k] for k in ("file", "operators", "quantization")},
        "converter": report["litert"]["converter"],
        "runtime": report["litert"]["runtime"],
        "shipped": False,
        "error": "LiteRT conversion failed: 'Erfc' is not a builtin operator",
        "graph": "one merged graph: the mean of 2 fold models' probabilities",
    }
    off = {**EXPORT, "onnx": False, "litert": False}
    assert export.export_served_model(packaged, {"x_test": images}, off) == (packaged, {})

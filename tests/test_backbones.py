"""The backbone registry: every entry builds, weights round-trip, bad names fail early."""

import numpy as np
import pytest

from breast_cancer_pipeline.backbones import (
    OWN_ARCHITECTURES,
    PREPROCESSING_MODES,
    REGISTRY,
    UnknownBackboneError,
    check_input_size,
    check_weights,
    get_backbone,
)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(UnknownBackboneError) as info:
        get_backbone("resnet9000", "finetune.backbone")
    message = str(info.value)
    assert "finetune.backbone" in message
    assert "resnet101v2" in message
    assert "small_cnn" in message


def test_registry_covers_the_notebooks_backbones():
    for name in ("resnet50", "resnet101v2", "inception_v3", "xception", "nasnet_large", "vgg16"):
        assert name in REGISTRY


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_entry_names_a_real_constructor_and_scaling(name):
    import keras

    spec = REGISTRY[name]
    assert spec.name == name
    assert spec.preprocessing in PREPROCESSING_MODES
    if spec.constructor is None:
        assert not spec.pretrainable
        assert spec.architecture in OWN_ARCHITECTURES and spec.filters
    else:
        assert callable(getattr(keras.applications, spec.constructor))
        assert spec.architecture is None and not spec.filters


#: The project's own networks: (name, convolutions, residual additions, parameters).
OWN_NETWORKS = [
    ("small_cnn", 4, 0, 97_872),
    ("small_cnn_narrow", 4, 0, 24_744),
    ("small_resnet", 10, 3, 303_952),
]


def test_the_table_lists_every_own_network():
    assert sorted(n for n, *_ in OWN_NETWORKS) == sorted(
        name for name, spec in REGISTRY.items() if spec.constructor is None
    )


@pytest.mark.parametrize(("name", "convolutions", "additions", "n_params"), OWN_NETWORKS)
def test_own_network_has_its_architecture(name, convolutions, additions, n_params):
    """Its widths, its depth, its shortcuts; the side halved once per entry of ``filters``."""
    import keras

    from breast_cancer_pipeline.modeling import build_backbone

    spec = get_backbone(name)
    base = build_backbone(spec, 32, 1, None)
    kinds = [type(layer) for layer in base.layers]
    assert kinds.count(keras.layers.Conv2D) == convolutions
    assert kinds.count(keras.layers.Add) == additions
    assert base.count_params() == n_params
    side = 32 // 2 ** len(spec.filters)
    assert base.output.shape[1:] == (side, side, spec.filters[-1])
    # A [height, width] input (augmentation.image_size) keeps its aspect through the network.
    tall = build_backbone(spec, (64, 32), 1, None)
    assert tall.output.shape[1:] == (2 * side, side, spec.filters[-1])


def test_check_weights_forms(tmp_path):
    spec = get_backbone("mobilenet_v2")
    check_weights(None, spec)
    check_weights("imagenet", spec)
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"x")
    check_weights(str(weights), spec)
    with pytest.raises(ValueError, match="does not exist"):
        check_weights(str(tmp_path / "missing.h5"), spec)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        check_weights("imagenet", get_backbone("small_cnn"))
    with pytest.raises(ValueError, match="must be 'imagenet'"):
        check_weights(3, spec)


def test_check_input_size():
    with pytest.raises(ValueError, match="minimum of 75"):
        check_input_size(64, get_backbone("inception_v3"), None)
    with pytest.raises(ValueError, match="needs augmentation.image_size=331"):
        check_input_size(224, get_backbone("nasnet_large"), "imagenet")
    check_input_size(224, get_backbone("nasnet_large"), None)
    with pytest.raises(ValueError, match=r"image_size=\[1024, 64\] is below the minimum of 75"):
        check_input_size((1024, 64), get_backbone("inception_v3"), None)
    with pytest.raises(ValueError, match=r"needs augmentation.image_size=331, got \[331, 200\]"):
        check_input_size((331, 200), get_backbone("nasnet_large"), "imagenet")
    check_input_size((1024, 512), get_backbone("inception_v3"), None)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_backbone_builds_and_predicts(name):
    from breast_cancer_pipeline.modeling import build_classifier

    size = max(REGISTRY[name].min_size, 32)
    model = build_classifier(name, 3, size, 1, None, {"dropout": 0.1})
    proba = np.asarray(model(np.zeros((2, size, size, 1), dtype=np.uint8)))
    assert proba.shape == (2, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["mobilenet_v2", "small_cnn", "small_resnet"])
def test_local_weights_file_round_trip(tmp_path, name):
    """The `weights: <path>` route loads a file saved from the same backbone."""
    import keras

    from breast_cancer_pipeline.modeling import build_backbone, build_feature_extractor

    spec = get_backbone(name)
    keras.utils.set_random_seed(1)
    source = build_backbone(spec, 64, 3, None)
    path = tmp_path / f"{name}_notop.weights.h5"
    source.save_weights(path)

    extractor = build_feature_extractor(name, 64, 3, str(path))
    loaded = extractor.get_layer("backbone")
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    fresh = build_feature_extractor(name, 64, 3, None).get_layer("backbone")
    assert not all(
        np.array_equal(a, b) for a, b in zip(source.get_weights(), fresh.get_weights(), strict=True)
    )


def test_imagenet_download_failure_names_both_alternatives(monkeypatch):
    import keras

    from breast_cancer_pipeline import modeling

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: None -- offline")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(modeling.WeightsUnavailableError) as info:
        modeling.build_classifier("mobilenet_v2", 2, 64, 3, "imagenet", {})
    message = str(info.value)
    assert "local weights file" in message
    assert "weights: null" in message

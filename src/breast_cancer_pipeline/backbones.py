"""The backbone registry: every network the pipeline can put under a classification head.

This module is the single place that knows, for each backbone, which ``keras.applications``
constructor builds it, how its inputs are scaled, its minimum input size and how it is
unfrozen. It does not import TensorFlow: the registry can be listed and parameters validated
in milliseconds; :mod:`breast_cancer_pipeline.modeling` builds the networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from breast_cancer_pipeline.geometry import as_size

#: Input scalings, as in ``keras.applications.imagenet_utils.preprocess_input``:
#: ``tf`` maps 0..255 to -1..1; ``torch`` scales to 0..1 and standardises with ImageNet's mean
#: and std; ``caffe`` flips RGB to BGR and subtracts ImageNet's mean; ``unit`` maps to 0..1;
#: ``none`` passes 0..255 through (the network rescales internally).
PREPROCESSING_MODES = ("tf", "torch", "caffe", "unit", "none")

#: The project's own networks, which train from random weights on a few hundred images:
#: ``plain`` stacks blocks of 3x3 conv, batch norm, ReLU and 2x2 max pooling; ``residual``
#: stacks residual blocks (two 3x3 convs and a shortcut) after a stem. ``modeling`` builds them.
OWN_ARCHITECTURES = ("plain", "residual")


@dataclass(frozen=True)
class BackboneSpec:
    """What the pipeline needs to know about one backbone.

    Attributes:
        name: Registry name used in parameters, e.g. ``resnet101v2``.
        constructor: Attribute of ``keras.applications`` that builds it, or ``None`` for one
            of the project's own networks.
        preprocessing: One of :data:`PREPROCESSING_MODES`.
        min_size: Smallest square input side the network accepts.
        imagenet_size: Input side required when ``weights: imagenet`` (``None`` = any size).
        constructor_kwargs: Extra keyword arguments for the constructor.
        architecture: For the project's own networks, one of :data:`OWN_ARCHITECTURES`.
        filters: For the project's own networks, the filters of each block; the network
            halves the image side once per block.
    """

    name: str
    constructor: str | None
    preprocessing: str
    min_size: int = 32
    imagenet_size: int | None = None
    constructor_kwargs: tuple[tuple[str, object], ...] = ()
    architecture: str | None = None
    filters: tuple[int, ...] = ()

    @property
    def pretrainable(self) -> bool:
        """Whether ImageNet weights exist for this backbone."""
        return self.constructor is not None


_SPECS = (
    BackboneSpec("small_cnn", None, "unit", 16, architecture="plain", filters=(16, 32, 64, 128)),
    BackboneSpec(
        "small_cnn_narrow", None, "unit", 16, architecture="plain", filters=(8, 16, 32, 64)
    ),
    BackboneSpec(
        "small_resnet", None, "unit", 16, architecture="residual", filters=(16, 32, 64, 128)
    ),
    BackboneSpec("resnet50", "ResNet50", "caffe"),
    BackboneSpec("resnet101v2", "ResNet101V2", "tf"),
    BackboneSpec("inception_v3", "InceptionV3", "tf", min_size=75),
    BackboneSpec("xception", "Xception", "tf", min_size=71),
    BackboneSpec("vgg16", "VGG16", "caffe"),
    BackboneSpec("nasnet_large", "NASNetLarge", "tf", imagenet_size=331),
    BackboneSpec("mobilenet_v2", "MobileNetV2", "tf"),
    BackboneSpec(
        "mobilenet_v3_small",
        "MobileNetV3Small",
        "none",
        constructor_kwargs=(("include_preprocessing", True),),
    ),
    BackboneSpec(
        "mobilenet_v3_large",
        "MobileNetV3Large",
        "none",
        constructor_kwargs=(("include_preprocessing", True),),
    ),
    BackboneSpec("efficientnet_b0", "EfficientNetB0", "none"),
    BackboneSpec("efficientnet_b1", "EfficientNetB1", "none"),
    BackboneSpec("efficientnet_b2", "EfficientNetB2", "none"),
    BackboneSpec("efficientnet_b3", "EfficientNetB3", "none"),
    BackboneSpec(
        "efficientnet_v2_b0",
        "EfficientNetV2B0",
        "none",
        constructor_kwargs=(("include_preprocessing", True),),
    ),
    BackboneSpec("densenet121", "DenseNet121", "torch"),
    BackboneSpec(
        "convnext_tiny",
        "ConvNeXtTiny",
        "none",
        constructor_kwargs=(("include_preprocessing", True),),
    ),
)

REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}


class UnknownBackboneError(ValueError):
    """A parameter names a backbone that is not in the registry."""


def get_backbone(name: str, parameter: str = "backbone") -> BackboneSpec:
    """Look a backbone up by name.

    Args:
        name: Registry name, e.g. ``mobilenet_v2``.
        parameter: The parameter that held the name, for the error message.

    Returns:
        The backbone's spec.

    Raises:
        UnknownBackboneError: ``name`` is not registered; the message lists the valid names.
    """
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownBackboneError(
            f"{parameter}: unknown backbone {name!r}. Valid names: {', '.join(sorted(REGISTRY))}"
        ) from None


def check_weights(weights: str | None, spec: BackboneSpec, parameter: str = "weights") -> None:
    """Validate a ``weights`` setting for a backbone before any work starts.

    Args:
        weights: ``"imagenet"``, a path to a local weights file, or ``None`` (random init).
        spec: The backbone the weights are for.
        parameter: The parameter that held the setting, for error messages.

    Raises:
        ValueError: The setting is not one of the three forms, the local file does not exist,
            or ImageNet weights are asked for a backbone that has none.
    """
    if weights is None:
        return
    if not isinstance(weights, str):
        raise ValueError(
            f"{parameter} must be 'imagenet', a path to a weights file or null, got {weights!r}"
        )
    if weights == "imagenet":
        if not spec.pretrainable:
            raise ValueError(
                f"{parameter}: backbone {spec.name!r} has no ImageNet weights; use null or a "
                "path to a weights file you trained"
            )
        return
    if not Path(weights).is_file():
        raise ValueError(
            f"{parameter}: weights file {weights!r} does not exist. Give 'imagenet', the path "
            "of a local weights file (e.g. a keras.applications '*_notop.h5' file you "
            "downloaded elsewhere), or null for random initialisation"
        )


def check_input_size(
    image_size: int | tuple[int, int], spec: BackboneSpec, weights: str | None
) -> None:
    """Refuse an input size the backbone cannot take.

    Args:
        image_size: One side (a square) or ``(height, width)``.
        spec: The backbone.
        weights: ``"imagenet"``, a weights file, or ``None``.

    Raises:
        ValueError: A side of ``image_size`` is below the backbone's minimum, or the size
            differs from the square its ImageNet weights require.
    """
    height, width = as_size(image_size, "augmentation.image_size")
    shown = height if height == width else [height, width]
    if min(height, width) < spec.min_size:
        raise ValueError(
            f"augmentation.image_size={shown} is below the minimum of {spec.min_size} px "
            f"for backbone {spec.name!r}"
        )
    imagenet = spec.imagenet_size
    if weights == "imagenet" and imagenet and (height, width) != (imagenet, imagenet):
        raise ValueError(
            f"backbone {spec.name!r} with ImageNet weights needs augmentation.image_size="
            f"{imagenet}, got {shown}"
        )

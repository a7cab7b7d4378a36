import io
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from breast_cancer_pipeline.pipelines.demo_data import create_pipeline
from breast_cancer_pipeline.pipelines.demo_data.nodes import (
    CLASS_NAMES,
    allocate_formats,
    generate_demo_dataset,
    generate_external_site,
    label_flip_record,
)
from tests.params import base_params

KEY_PATTERN = re.compile(r"^(normal|benign|malignant)/\1 \((\d+)\)(\.png|\.jpg|\.tif|_mask\.png)$")


@pytest.fixture
def small_params() -> dict:
    return base_params("demo_data", images_per_class=20, image_size=64)


@pytest.fixture(scope="module")
def default_dataset() -> dict[str, bytes]:
    """The dataset exactly as `kedro run --pipeline=demo_data` writes it with conf/base."""
    return generate_demo_dataset(base_params("demo_data"))


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _to_uint8(image: Image.Image) -> np.ndarray:
    """8-bit grayscale; a 16-bit image is mapped linearly from its min..max to 0..255."""
    pixels = np.asarray(image).astype(float)
    if image.mode in {"I;16", "I"}:
        low, high = pixels.min(), pixels.max()
        pixels = (pixels - low) / max(high - low, 1.0) * 255.0
    return np.round(pixels).astype(np.uint8)


def _images(files: dict[str, bytes]) -> dict[str, bytes]:
    return {key: data for key, data in files.items() if not key.endswith("_mask.png")}


def _stem(key: str) -> str:
    return key.rsplit(".", 1)[0]


def test_pipeline_wires_params_to_the_raw_partitions():
    nodes = {node.name: node for node in create_pipeline().nodes}
    assert {name: node.outputs for name, node in nodes.items()} == {
        "generate_demo_dataset": ["demo_raw_images"],
        "record_label_flips": ["demo_label_flips"],
        "generate_external_site": ["demo_external_images"],
    }
    assert all(node.inputs == ["params:demo_data"] for node in nodes.values())


def test_same_params_give_byte_identical_files(small_params):
    first = generate_demo_dataset(small_params)
    second = generate_demo_dataset(dict(small_params))
    assert list(first) == list(second)
    assert first == second


def test_another_seed_gives_other_images(small_params):
    first = generate_demo_dataset(small_params)
    other = generate_demo_dataset({**small_params, "seed": small_params["seed"] + 1})
    shared = set(first) & set(other)
    assert shared
    assert all(first[key] != other[key] for key in shared if "benign" in key)


def test_an_image_does_not_depend_on_how_many_are_generated(small_params):
    few = generate_demo_dataset({**small_params, "images_per_class": 3})
    many = generate_demo_dataset({**small_params, "images_per_class": 7})
    masks = [key for key in few if key.endswith("_mask.png")]
    assert len(masks) == 9
    assert all(few[key] == many[key] for key in masks)
    same_format = [key for key in _images(few) if key in many]
    assert same_format
    assert all(few[key] == many[key] for key in same_format)


def test_keys_follow_busi_naming_with_one_mask_per_image(small_params):
    files = generate_demo_dataset(small_params)
    parsed = [KEY_PATTERN.match(key) for key in files]
    assert all(parsed), [key for key, match in zip(files, parsed, strict=True) if not match]
    for label in CLASS_NAMES:
        images = [key for key in _images(files) if key.startswith(f"{label}/")]
        numbers = sorted(int(KEY_PATTERN.match(key).group(2)) for key in images)
        assert numbers == list(range(1, 21))
        assert all(f"{_stem(key)}_mask.png" in files for key in images)
    assert len(files) == 2 * 3 * 20


def test_normal_masks_can_be_left_out(small_params):
    files = generate_demo_dataset({**small_params, "normal_masks": False})
    masks = [key for key in files if key.endswith("_mask.png")]
    assert len(masks) == 40
    assert not [key for key in masks if key.startswith("normal/")]
    assert len(_images(files)) == 60


def test_every_format_is_present_decodes_and_is_shared_equally_by_the_classes(small_params):
    files = generate_demo_dataset(small_params)
    per_class = {
        label: Counter(Path(key).suffix for key in _images(files) if key.startswith(f"{label}/"))
        for label in CLASS_NAMES
    }
    assert per_class["normal"] == per_class["benign"] == per_class["malignant"]
    assert per_class["normal"] == {".png": 12, ".jpg": 5, ".tif": 3}
    for key, data in files.items():
        image = _decode(data)
        assert image.size == (64, 64), key
        if key.endswith(".jpg"):
            assert (image.format, image.mode) == ("JPEG", "L"), key
        elif key.endswith(".tif"):
            assert image.format == "TIFF", key
            assert image.mode in {"I;16", "I"}, key
            pixels = np.asarray(image).astype(int)
            # Genuinely 16-bit and needs windowing: not an 8-bit image stored in 16 bits.
            assert pixels.max() - pixels.min() > 10_000, key
            assert pixels.max() <= 65_535, key
        else:
            assert (image.format, image.mode) == ("PNG", "L"), key


def test_masks_are_binary_and_only_lesion_images_have_lesions(small_params):
    files = generate_demo_dataset(small_params)
    for key, data in files.items():
        if not key.endswith("_mask.png"):
            continue
        mask = np.asarray(_decode(data))
        assert set(np.unique(mask)) <= {0, 255}, key
        if key.startswith("normal/"):
            assert not mask.any(), key
        else:
            radius = np.sqrt((mask > 0).mean() / np.pi)  # equivalent radius / image side
            assert 0.05 <= radius <= 0.35, key


def test_masks_cover_a_hypoechoic_mass(small_params):
    """Inside the mask the image is darker than in a ring around it: the mask is on the mass."""
    files = generate_demo_dataset(small_params)
    for key, data in _images(files).items():
        if key.startswith("normal/"):
            continue
        pixels = _to_uint8(_decode(data)).astype(float)
        mask_image = _decode(files[f"{_stem(key)}_mask.png"])
        inside = np.asarray(mask_image) > 0
        dilated = np.asarray(mask_image.filter(ImageFilter.MaxFilter(9))) > 0
        ring = dilated & ~inside
        assert pixels[inside].mean() < pixels[ring].mean() - 10, key
        # A mask shifted away from the mass does not show the same contrast.
        shifted = np.roll(inside, 32, axis=1)
        assert pixels[inside].mean() < pixels[shifted & ~inside].mean(), key


def test_benign_margins_are_smoother_than_malignant_ones(small_params):
    """Benign masks are ovals; malignant ones are irregular (a larger perimeter for their area)."""

    def irregularity(mask: np.ndarray) -> float:
        inside = mask > 0
        eroded = np.asarray(Image.fromarray(mask).filter(ImageFilter.MinFilter(3))) > 0
        edge = inside & ~eroded
        return edge.sum() / np.sqrt(inside.sum())

    files = generate_demo_dataset({**small_params, "image_size": 128})
    scores = {
        label: [
            irregularity(np.asarray(_decode(data)))
            for key, data in files.items()
            if key.startswith(f"{label}/") and key.endswith("_mask.png")
        ]
        for label in ("benign", "malignant")
    }
    assert max(scores["benign"]) < min(scores["malignant"])


def test_default_dataset_has_the_configured_size_and_format_mix(default_dataset):
    """Generates the full conf/base dataset, so a slow generator makes this suite slow."""
    params = base_params("demo_data")
    n = params["images_per_class"]
    size = params["image_size"]
    images = _images(default_dataset)
    assert len(images) == 3 * n
    assert len(default_dataset) == 6 * n  # normal_masks: true in conf/base
    suffixes = Counter(Path(key).suffix for key in images)
    fractions = {".png": "png", ".jpg": "jpeg", ".tif": "tiff16"}
    for suffix, name in fractions.items():
        assert abs(suffixes[suffix] - 3 * n * params["format_mix"][name]) <= 3
    first = _decode(default_dataset["malignant/malignant (1)_mask.png"])
    assert first.size == (size, size)


def test_global_intensity_does_not_separate_the_classes():
    """Mean, std and a 16-bin histogram must not tell normal, benign and malignant apart."""
    files = generate_demo_dataset(base_params("demo_data", images_per_class=60, image_size=96))
    features, labels = [], []
    for key, data in _images(files).items():
        pixels = _to_uint8(_decode(data)).astype(float)
        histogram = np.histogram(pixels, bins=16, range=(0, 256))[0] / pixels.size
        features.append([pixels.mean(), pixels.std(), *histogram])
        labels.append(CLASS_NAMES.index(key.split("/")[0]))
    x_train, x_test, y_train, y_test = train_test_split(
        np.array(features), np.array(labels), test_size=0.3, stratify=labels, random_state=0
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x_train, y_train)
    auroc = roc_auc_score(y_test, model.predict_proba(x_test), multi_class="ovr")
    assert auroc <= 0.75


def test_allocate_formats_follows_the_mix_with_largest_remainders():
    formats = allocate_formats(
        10, {"png": 0.57, "jpeg": 0.28, "tiff16": 0.15}, np.random.default_rng(0)
    )
    assert Counter(formats) == {"png": 6, "jpeg": 3, "tiff16": 1}
    assert allocate_formats(3, {"png": 1.0}, np.random.default_rng(0)) == ["png"] * 3


def test_the_node_refuses_invalid_parameters_naming_them():
    """Called directly (a run checks first), the node still says what is wrong."""
    with pytest.raises(ValueError, match=r"demo_data\.images_per_class = 0"):
        generate_demo_dataset(base_params("demo_data", images_per_class=0))


# ------------------------------------------------------------------ presets, label noise, site


def _noisy(small_params, noise):
    presets = {**small_params["presets"]}
    presets["standard"] = {**presets["standard"], "label_noise": noise}
    return {**small_params, "images_per_class": 12, "image_size": 48, "presets": presets}


def test_label_noise_moves_images_between_folders_keeping_their_pixels(small_params):
    clean = generate_demo_dataset(_noisy(small_params, 0.0))
    noisy_params = _noisy(small_params, 0.3)
    noisy = generate_demo_dataset(noisy_params)
    flips = label_flip_record(noisy_params)

    assert 0 < len(flips) < 36 and list(flips.columns) == ["path", "drawn_as", "filed_as"]
    assert (flips["drawn_as"] != flips["filed_as"]).all()
    assert len(_images(noisy)) == len(_images(clean)) == 36
    moved = set(flips["path"])
    # every flipped file is filed under its new class and holds the drawn image's bytes
    clean_by_bytes = {data: key for key, data in _images(clean).items()}
    for row in flips.itertuples():
        assert row.path.startswith(f"{row.filed_as}/{row.filed_as} (")
        assert clean_by_bytes[noisy[row.path]].startswith(f"{row.drawn_as}/")
    # the others are untouched, under their own names
    for key, data in _images(noisy).items():
        if key not in moved:
            assert clean[key] == data
    assert label_flip_record(_noisy(small_params, 0.0)).empty


def test_standard_preset_is_the_default_and_hard_draws_other_images(small_params):
    assert small_params["preset"] == "standard"
    hard = generate_demo_dataset({**small_params, "images_per_class": 3, "preset": "hard"})
    standard = generate_demo_dataset({**small_params, "images_per_class": 3})
    assert set(hard) - set(standard) or any(hard[k] != standard[k] for k in standard)


def _grey(data: bytes) -> np.ndarray:
    return _to_uint8(_decode(data)).astype(float)


def test_external_site_is_another_scanner_with_the_same_classes(small_params):
    params = {**small_params, "images_per_class": 6, "format_mix": {"png": 1.0}}
    params["external_site"] = {**params["external_site"], "images_per_class": 6}
    internal = _images(generate_demo_dataset(params))
    external = _images(generate_external_site(params))

    assert sorted(external) == sorted(internal)  # same names and classes, own folder
    assert not set(internal.values()) & set(external.values())
    site = {**params["presets"]["standard"], "site_shift": 0.0}
    same_scanner = _images(
        generate_external_site({**params, "presets": {**params["presets"], "standard": site}})
    )

    def detail(images):  # mean absolute horizontal gradient: resolution and speckle
        return np.mean([np.abs(np.diff(_grey(d), axis=1)).mean() for d in images.values()])

    def brightness(images):
        return np.mean([_grey(d).mean() for d in images.values()])

    assert detail(external) < 0.8 * detail(same_scanner)
    assert brightness(external) < brightness(same_scanner) - 5  # a higher display level
    assert (
        generate_external_site(
            {**params, "external_site": {**params["external_site"], "images_per_class": 0}}
        )
        == {}
    )

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
from breast_cancer_pipeline.pipelines.demo_data.patients import Cohort, plan_cohort
from tests.params import base_params

KEY_PATTERN = re.compile(
    r"^(normal|benign|malignant)/(P\d{4})_([LR])_(CC|MLO)(\.png|\.jpg|\.tif|_mask\.png)$"
)


@pytest.fixture
def small_params() -> dict:
    """5 benign and 5 malignant patients, 2 normal ones: 48 images of 64 px."""
    return base_params("demo_data", lesion_patients_per_class=5, normal_patients=2, image_size=64)


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


def _lesion_masks(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    """The masks that hold a lesion (a view where it shows), by image stem."""
    masks = {
        key.removesuffix("_mask.png"): np.asarray(_decode(data))
        for key, data in files.items()
        if key.endswith("_mask.png")
    }
    return {stem: mask for stem, mask in masks.items() if mask.any()}


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
    first = _images(generate_demo_dataset(small_params))
    other = _images(generate_demo_dataset({**small_params, "seed": small_params["seed"] + 1}))
    assert len(first) == len(other) and not set(first.values()) & set(other.values())


def _cohort(**changes) -> Cohort:
    settings = {
        "seed": 7,
        "lesion_patients": 3,
        "normal_patients": 1,
        "lesion_both_views": 0.5,
        "label_noise": 0.0,
        "format_mix": {"png": 1.0},
    }
    return Cohort(**{**settings, **changes})


def test_an_image_does_not_depend_on_how_many_are_generated(small_params):
    few = {image.seed: image for image in plan_cohort(_cohort())}
    many = {image.seed: image for image in plan_cohort(_cohort(lesion_patients=7))}
    assert len(few) == 4 * 7 and len(many) == 4 * 15 and set(few) <= set(many)
    for seed, image in few.items():  # same breast, same lesion views; only the id may change
        assert (image.drawn_as, image.shows_lesion) == (
            many[seed].drawn_as,
            many[seed].shows_lesion,
        )
    small = _lesion_masks(generate_demo_dataset({**small_params, "lesion_patients_per_class": 2}))
    large = _lesion_masks(generate_demo_dataset(small_params))
    assert small and {m.tobytes() for m in small.values()} <= {m.tobytes() for m in large.values()}


def test_keys_name_patient_side_and_view_with_one_mask_per_image(small_params):
    files = generate_demo_dataset(small_params)
    parsed = [KEY_PATTERN.match(key) for key in files]
    assert all(parsed), [key for key, match in zip(files, parsed, strict=True) if not match]
    images = _images(files)
    assert len(images) == 4 * (2 * 5 + 2) and len(files) == 2 * len(images)
    assert all(f"{_stem(key)}_mask.png" in files for key in images)
    views = Counter(KEY_PATTERN.match(key).group(2, 3, 4) for key in images)
    assert set(views.values()) == {1}  # one image per patient, side and view
    patients = Counter(patient for patient, _, _ in views)
    assert len(patients) == 12 and set(patients.values()) == {4}


def test_an_affected_breast_is_filed_under_its_class_with_the_lesion_in_one_or_both_views(
    small_params,
):
    files = generate_demo_dataset(
        {**small_params, "lesion_patients_per_class": 20, "image_size": 32}
    )
    shown = _lesion_masks(files)
    breasts: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key in _images(files):
        label, patient, side, view, _ = KEY_PATTERN.match(key).groups()
        breasts.setdefault((patient, side), []).append((label, view))
    labels_per_patient = Counter()
    seen_in = Counter()
    for (patient, side), images in breasts.items():
        (label,) = {label for label, _ in images}  # both views carry the breast's label
        labels_per_patient[patient] += label != "normal"
        seen = sum(f"{label}/{patient}_{side}_{view}" in shown for _, view in images)
        if label == "normal":
            assert seen == 0
        else:
            seen_in[seen] += 1
    assert set(labels_per_patient.values()) == {0, 1}  # at most one affected breast
    assert sum(v == 0 for v in labels_per_patient.values()) == 2  # the normal patients
    # 40 affected breasts, lesion_both_views 0.5: both views for about half, never none
    assert seen_in[0] == 0 and 10 <= seen_in[2] <= 30 and seen_in[1] + seen_in[2] == 40
    one = _cohort(lesion_both_views=0.0)
    assert sum(image.shows_lesion for image in plan_cohort(one)) == 6  # one view per breast


def test_normal_masks_can_be_left_out(small_params):
    files = generate_demo_dataset({**small_params, "normal_masks": False})
    masks = [key for key in files if key.endswith("_mask.png")]
    assert len(masks) == 2 * 2 * 5  # the two views of each affected breast
    assert not [key for key in masks if key.startswith("normal/")]
    assert len(_images(files)) == 48


def test_every_format_is_present_decodes_and_is_shared_alike_by_the_classes(small_params):
    files = generate_demo_dataset(small_params)
    mix = {".png": 0.6, ".jpg": 0.25, ".tif": 0.15}
    for label in CLASS_NAMES:
        keys = [key for key in _images(files) if key.startswith(f"{label}/")]
        counts = Counter(Path(key).suffix for key in keys)
        assert all(abs(counts[s] - share * len(keys)) < 1 for s, share in mix.items()), label
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
        elif mask.any():
            radius = np.sqrt((mask > 0).mean() / np.pi)  # equivalent radius / image side
            assert 0.05 <= radius <= 0.35, key


def test_masks_cover_a_hypoechoic_mass(small_params):
    """Inside the mask the image is darker than in a ring around it: the mask is on the mass."""
    files = generate_demo_dataset(small_params)
    shown = _lesion_masks(files)
    assert len(shown) >= 10
    for key, data in _images(files).items():
        if _stem(key) not in shown:
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
    shown = _lesion_masks(files)
    scores = {
        label: [irregularity(mask) for stem, mask in shown.items() if stem.startswith(f"{label}/")]
        for label in ("benign", "malignant")
    }
    assert len(scores["benign"]) >= 5 and len(scores["malignant"]) >= 5
    assert max(scores["benign"]) < min(scores["malignant"])


def test_default_dataset_has_the_configured_size_and_format_mix(default_dataset):
    """Generates the full conf/base dataset, so a slow generator makes this suite slow."""
    params = base_params("demo_data")
    lesion, normal = params["lesion_patients_per_class"], params["normal_patients"]
    images = _images(default_dataset)
    n = 4 * (2 * lesion + normal)
    assert len(images) == n
    assert len(default_dataset) == 2 * n  # normal_masks: true in conf/base
    labels = Counter(key.split("/")[0] for key in images)
    assert labels == {"benign": 2 * lesion, "malignant": 2 * lesion, "normal": n - 4 * lesion}
    suffixes = Counter(Path(key).suffix for key in images)
    fractions = {".png": "png", ".jpg": "jpeg", ".tif": "tiff16"}
    for suffix, name in fractions.items():
        assert abs(suffixes[suffix] - n * params["format_mix"][name]) <= 3
    first = _decode(default_dataset[next(k for k in default_dataset if k.startswith("malignant/"))])
    assert first.size == (params["image_size"], params["image_size"])


def test_global_intensity_does_not_separate_the_classes():
    """Mean, std and a 16-bin histogram must not tell normal, benign and malignant apart."""
    files = generate_demo_dataset(
        base_params("demo_data", lesion_patients_per_class=20, normal_patients=5, image_size=96)
    )
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
    with pytest.raises(ValueError, match=r"demo_data\.lesion_patients_per_class = 0"):
        generate_demo_dataset(base_params("demo_data", lesion_patients_per_class=0))


# ------------------------------------------------------------------ presets, label noise, site


def _noisy(small_params, noise):
    presets = {**small_params["presets"]}
    presets["standard"] = {**presets["standard"], "label_noise": noise}
    return {**small_params, "lesion_patients_per_class": 4, "image_size": 48, "presets": presets}


def test_label_noise_moves_whole_breasts_between_folders_keeping_their_pixels(small_params):
    clean = generate_demo_dataset(_noisy(small_params, 0.0))
    noisy_params = _noisy(small_params, 0.3)
    noisy = generate_demo_dataset(noisy_params)
    flips = label_flip_record(noisy_params)

    assert 0 < len(flips) < 40 and list(flips.columns) == ["path", "drawn_as", "filed_as"]
    assert (flips["drawn_as"] != flips["filed_as"]).all()
    assert len(_images(noisy)) == len(_images(clean)) == 40
    # both views of a breast move together
    breasts = flips["path"].str.extract(r"/(P\d+_[LR])_")[0]
    assert breasts.value_counts().eq(2).all()
    moved = set(flips["path"])
    # every flipped file is filed under its new class and holds the drawn image's bytes
    for row in flips.itertuples():
        name = row.path.split("/", 1)[1]
        assert row.path.startswith(f"{row.filed_as}/")
        assert noisy[row.path] == clean[f"{row.drawn_as}/{name}"]
    # the others are untouched, under their own names
    for key, data in _images(noisy).items():
        if key not in moved:
            assert clean[key] == data
    assert label_flip_record(_noisy(small_params, 0.0)).empty


def test_standard_preset_is_the_default_and_hard_draws_other_images(small_params):
    assert small_params["preset"] == "standard"
    few = {**small_params, "lesion_patients_per_class": 2, "normal_patients": 0}
    hard = generate_demo_dataset({**few, "preset": "hard"})
    standard = generate_demo_dataset(few)
    assert set(hard) - set(standard) or any(hard[k] != standard[k] for k in standard)


def _grey(data: bytes) -> np.ndarray:
    return _to_uint8(_decode(data)).astype(float)


def test_external_site_is_another_scanner_with_the_same_classes(small_params):
    params = {**small_params, "lesion_patients_per_class": 2, "format_mix": {"png": 1.0}}
    site = {"lesion_patients_per_class": 2, "normal_patients": 2}
    params["external_site"] = {**params["external_site"], **site}
    internal = _images(generate_demo_dataset(params))
    external = _images(generate_external_site(params))

    assert all(KEY_PATTERN.match(key) for key in external)  # the same layout and naming
    labels = Counter(key.split("/")[0] for key in external)
    assert labels == Counter(key.split("/")[0] for key in internal)  # the same classes
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
            {
                **params,
                "external_site": {
                    **params["external_site"],
                    "lesion_patients_per_class": 0,
                    "normal_patients": 0,
                },
            }
        )
        == {}
    )

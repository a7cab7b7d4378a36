"""The microcalc preset: large grayscale images whose malignant specks vanish in a resize."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from breast_cancer_pipeline.imaging import resize_image
from breast_cancer_pipeline.param_schema import validate_block
from breast_cancer_pipeline.pipelines.demo_data.microcalc import render_microcalc
from breast_cancer_pipeline.pipelines.demo_data.nodes import (
    generate_demo_dataset,
    generate_external_site,
)
from tests.params import base_params

SIZE = [192, 144]  # height, width: a quarter of the preset's side, same shape


def _params(**preset) -> dict:
    """A few patients of the microcalc preset at a reduced size."""
    params = base_params(
        "demo_data",
        preset="microcalc",
        lesion_patients_per_class=2,
        normal_patients=1,
        lesion_both_views=1.0,
    )
    params["format_mix"] = {"png": 1.0}  # replaced, not merged
    params["presets"]["microcalc"].update(image_size=SIZE, **preset)
    params["external_site"].update(lesion_patients_per_class=1, normal_patients=0)
    return params


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return generate_demo_dataset(_params())


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _pairs(files: dict[str, bytes]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{image key: (pixels, mask > 0)}``."""
    return {
        key: (_decode(data), _decode(files[key.removesuffix(".png") + "_mask.png"]) > 0)
        for key, data in files.items()
        if not key.endswith("_mask.png")
    }


def test_images_are_grayscale_at_the_preset_size_with_a_mask_each(files):
    pairs = _pairs(files)
    assert len(pairs) == 4 * (2 * 2 + 1)
    for key, (pixels, mask) in pairs.items():
        image = Image.open(io.BytesIO(files[key]))
        assert (image.mode, image.size) == ("L", (SIZE[1], SIZE[0])), key
        assert mask.shape == pixels.shape, key
        assert mask.any() == (not key.startswith("normal/")), key


def _specks(pixels: np.ndarray) -> np.ndarray:
    """Bright structures narrower than 7 px (a white top-hat): the specks, not a blob."""
    image = Image.fromarray(pixels)
    opened = image.filter(ImageFilter.MinFilter(7)).filter(ImageFilter.MaxFilter(7))
    return pixels.astype(int) - np.asarray(opened).astype(int) > 40


def test_the_malignant_masks_cover_every_speck_and_benign_images_have_none(files):
    for key, (pixels, mask) in _pairs(files).items():
        specks = _specks(pixels)
        if key.startswith("malignant/"):
            assert specks.sum() >= 4, key  # a cluster of 2-4 px specks
            assert not (specks & ~mask).any(), key
        else:
            assert not specks.any(), key  # a diffuse blob, or nothing


def test_resized_to_the_demo_size_benign_and_malignant_are_the_same_blob():
    """Same generator: the same tissue and draw, specks in one, their spread in the other."""
    cfg = validate_block("demo_data", _params()).difficulty
    benign, mask = render_microcalc(np.random.default_rng(3), "benign", cfg, 0.0)
    malignant, _ = render_microcalc(np.random.default_rng(3), "malignant", cfg, 0.0)
    difference = malignant - benign
    rows, cols = np.nonzero(mask)
    radius = np.sqrt(mask.sum() / np.pi)
    grid_rows, grid_cols = np.ogrid[: SIZE[0], : SIZE[1]]
    distance = np.hypot(grid_rows - rows.mean(), grid_cols - cols.mean())
    assert np.abs(difference).max() > 50  # only the finding differs, not the tissue around
    assert np.abs(difference[distance > 3 * radius]).max() < 0.5
    assert abs(difference.sum()) < 0.1 * np.abs(difference).sum()  # the same total brightness

    def small(image):  # the 1024 x 768 -> 128 x 128 resize of the demo, at this size
        pixels = np.round(image).astype(np.uint8)[..., None]
        return resize_image(pixels, (SIZE[0] // 8, SIZE[1] // 6)).astype(int)

    assert np.abs(small(malignant) - small(benign)).max() <= 0.25 * np.abs(difference).max()


def test_the_external_site_has_another_display():
    params = _params()
    external = _pairs(generate_external_site(params))
    same = _params(site_shift=0.0)
    same_site = _pairs(generate_external_site(same))
    assert external.keys() == same_site.keys()
    brightness = [np.mean([p.mean() for p, _ in pairs.values()]) for pairs in (external, same_site)]
    assert brightness[0] < brightness[1] - 5  # a gamma above 1 darkens the mid-tones

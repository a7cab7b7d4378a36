"""The histology preset: RGB H&E-like fields, nuclei clusters, a stain shift between sites."""

import io

import numpy as np
import pytest
from PIL import Image

from breast_cancer_pipeline.param_schema import validate_block
from breast_cancer_pipeline.pipelines.demo_data.histology import render_histology, stain_vectors
from breast_cancer_pipeline.pipelines.demo_data.nodes import (
    generate_demo_dataset,
    generate_external_site,
)
from tests.params import base_params

SIZE = [96, 128]  # height, width: an eighth of the preset's side, same shape
SMALL = {  # nuclei and clusters scaled with it
    "image_size": SIZE,
    "nucleus_radius_px": [1.5, 2.0],
    "malignant_nucleus_radius_px": [3.0, 4.0],
    "nuclei_per_10k_px": 30.0,
    "cluster_radius_px": [12.0, 14.0],
    "cluster_nuclei": [15, 20],
}


def _params(**preset) -> dict:
    params = base_params(
        "demo_data",
        preset="histology",
        lesion_patients_per_class=2,
        normal_patients=1,
        lesion_both_views=1.0,
    )
    params["format_mix"] = {"png": 0.5, "tiff16": 0.5}  # replaced, not merged
    params["presets"]["histology"].update(**SMALL, **preset)
    params["external_site"].update(lesion_patients_per_class=2, normal_patients=1)
    return params


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return generate_demo_dataset(_params())


def _images(files: dict[str, bytes]) -> dict[str, Image.Image]:
    return {
        key: Image.open(io.BytesIO(data))
        for key, data in files.items()
        if not key.endswith("_mask.png")
    }


def test_fields_are_rgb_at_the_preset_size_in_png_and_8_bit_tiff(files):
    images = _images(files)
    assert len(images) == 4 * (2 * 2 + 1)
    assert {key.rsplit(".", 1)[1] for key in images} == {"png", "tif"}
    for key, image in images.items():
        assert (image.mode, image.size) == ("RGB", (SIZE[1], SIZE[0])), key
        mask = np.asarray(Image.open(io.BytesIO(files[key.rsplit(".", 1)[0] + "_mask.png"])))
        assert mask.shape == tuple(SIZE) and set(np.unique(mask)) <= {0, 255}, key
        assert mask.any() == (not key.startswith("normal/")), key


def test_tissue_is_pink_with_purple_nuclei_on_white():
    cfg = validate_block("demo_data", _params()).difficulty
    rgb, _ = render_histology(np.random.default_rng(0), "normal", cfg, 0.0)
    red, green, blue = np.moveaxis(rgb, -1, 0)
    white = rgb.min(axis=-1) > 235
    tissue = ~white & (green < 200)
    assert 0.02 < white.mean() < 0.5 and tissue.mean() > 0.4
    assert red[tissue].mean() > blue[tissue].mean() > green[tissue].mean()  # pink: eosin
    nuclei = (red < 200) & (blue > red)  # haematoxylin: purple-blue, darker in red
    assert 0.001 < nuclei.mean() < 0.1


def test_the_mask_holds_the_cluster_of_nuclei_and_malignant_nuclei_are_larger():
    cfg = validate_block("demo_data", _params()).difficulty
    sizes = {}
    for label in ("benign", "malignant"):
        rgb, mask = render_histology(np.random.default_rng(1), label, cfg, 0.0)
        dark = rgb[..., 0] < 200
        assert dark[mask].mean() > 3 * dark[~mask].mean(), label  # the cluster is in the mask
        sizes[label] = dark[mask].sum()
    # About the same stain in the cluster, in a few large nuclei or many small ones.
    assert 0.4 < sizes["malignant"] / sizes["benign"] < 2.5


def test_the_external_site_shifts_the_stain_colour():
    internal = np.mean(
        [
            np.asarray(i, float).mean((0, 1))
            for i in _images(generate_external_site(_params(site_shift=0.0))).values()
        ],
        axis=0,
    )
    external = np.mean(
        [
            np.asarray(i, float).mean((0, 1))
            for i in _images(generate_external_site(_params())).values()
        ],
        axis=0,
    )
    assert external[2] < internal[2] - 10  # salmon eosin: less blue
    assert np.abs(external - internal).max() > 10
    cfg = validate_block("demo_data", _params()).difficulty
    assert np.allclose(stain_vectors(cfg, 1.0)[1], cfg.external_eosin)
    assert np.allclose(stain_vectors(cfg, 0.0)[0], cfg.hematoxylin)

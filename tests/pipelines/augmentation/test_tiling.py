"""The tile stage: the layout, then the tile arrays of the contract, written row by row."""

import io
import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.datasets import NumpyArraysDataset
from breast_cancer_pipeline.pipelines.augmentation.nodes import (
    prepare_external_input,
    prepare_model_input,
)
from breast_cancer_pipeline.pipelines.augmentation.tiling import (
    ImageTiles,
    _tile_labels,
    tile_images,
)
from breast_cancer_pipeline.tiles import TileSpec
from tests.params import base_params

TILES = {"size": 16, "stride": 16}


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _ramp(shape: tuple[int, int], offset: int) -> np.ndarray:
    """Distinct values everywhere, so that a tile's pixels say where it was cut."""
    return ((np.arange(shape[0] * shape[1]).reshape(shape) + offset) % 251).astype(np.uint8)


@pytest.fixture(scope="module")
def source():
    """Four images: 32 x 48 (6 tiles), 20 x 40 (4: the last row and column at the edge),
    10 x 12 (smaller than a tile: padded), and an external one."""
    pixels = {
        "b/1.png": _ramp((32, 48), 0),
        "m/2.png": _ramp((20, 40), 7),
        "m/3.png": _ramp((10, 12), 90),
        "b/4.png": _ramp((16, 16), 3),
        "ext/m/5.png": _ramp((16, 32), 5),
    }
    manifest = pd.DataFrame(
        [
            ("b/1.png", "benign", "train", 1),
            ("m/2.png", "malignant", "train", 1),
            ("m/3.png", "malignant", "val", 1),
            ("b/4.png", "benign", "test", 1),
            ("ext/m/5.png", "malignant", "external", 1),
        ],
        columns=["path", "label", "split", "channels"],
    )
    loaders = {path: (lambda p=p: _png(p)) for path, p in pixels.items()}
    return pixels, manifest, loaders


def test_layout_lists_every_tile_and_names_the_padded_image(source, caplog):
    _, manifest, loaders = source
    params = base_params("augmentation", tiles=TILES)
    with caplog.at_level(logging.WARNING):
        layout = tile_images(loaders, manifest, params)
    assert layout.groupby("path", sort=False).size().to_dict() == {
        "b/1.png": 6,
        "m/2.png": 6,  # 20 px rows: 0 and 4; 40 px columns: 0, 16, 24
        "m/3.png": 1,
        "b/4.png": 1,
        "ext/m/5.png": 2,
    }
    assert layout.loc[layout["path"] == "m/2.png", ["top", "left"]].values.tolist() == [
        [0, 0], [0, 16], [0, 24], [4, 0], [4, 16], [4, 24],
    ]  # fmt: skip
    assert layout["padded"].tolist().count(True) == 1
    assert "m/3.png" in caplog.text and "padded" in caplog.text
    labels = manifest.set_index("path")["label"]
    assert (layout["label"] == layout["path"].map(labels)).all()
    # Tiling off: an empty layout, and no image is read.
    assert tile_images({}, manifest, base_params("augmentation")).empty


def test_tile_arrays_follow_the_contract(source, tmp_path):
    pixels, manifest, loaders = source
    params = base_params("augmentation", tiles=TILES)
    layout = tile_images(loaders, manifest, params)
    dataset = NumpyArraysDataset(str(tmp_path / "arrays"))
    dataset.save(prepare_model_input(loaders, manifest, params, None, layout))
    arrays = dataset.load()
    assert arrays["x_train"].shape == (12, 16, 16, 1)
    assert arrays["tile_image_train"].tolist() == [0] * 6 + [1] * 6
    assert arrays["paths_train"].tolist() == ["b/1.png", "m/2.png"]
    assert arrays["image_y_train"].tolist() == [0, 1]
    assert arrays["y_train"].tolist() == [0] * 6 + [1] * 6
    for tile, (top, left, height, width), row in zip(
        arrays["x_train"], arrays["tile_boxes_train"], arrays["tile_image_train"], strict=True
    ):
        image = pixels[arrays["paths_train"][row]]
        np.testing.assert_array_equal(tile[..., 0], image[top : top + height, left : left + width])
    padded = arrays["x_val"][0, ..., 0]  # 10 x 12 in the corner, black around
    np.testing.assert_array_equal(padded[:10, :12], pixels["m/3.png"])
    assert padded[10:].max() == 0 and padded[:, 12:].max() == 0
    assert json.loads(str(arrays["tiles"]))["size"] == 16
    assert list(arrays["class_names"]) == ["benign", "malignant"]
    # The network's input is the tile: the geometry keys travel as without tiles.
    assert str(arrays["resize"]) == "stretch"
    external = prepare_external_input(loaders, manifest, params, None, layout)
    assert np.asarray(external["x_external"]).shape == (2, 16, 16, 1)
    assert external["tile_image_external"].tolist() == [0, 0]
    assert external["image_y_external"].tolist() == [1]


def test_foreground_keeps_fewer_tiles_than_the_grid_and_the_arrays_follow(tmp_path):
    """A dark field with one bright quarter: the layout's count sizes the arrays."""
    image = np.full((32, 64), 10, dtype=np.uint8)
    image[:16, :16] = 220
    manifest = pd.DataFrame(
        [(f"b/{i}.png", "benign", split, 1) for i, split in enumerate(("train", "val", "test"))],
        columns=["path", "label", "split", "channels"],
    )
    loaders = {p: (lambda: _png(image)) for p in manifest["path"]}
    params = base_params("augmentation", tiles={**TILES, "min_foreground": 0.5})
    layout = tile_images(loaders, manifest, params)
    arrays = prepare_model_input(loaders, manifest, params, None, layout)
    x = np.asarray(arrays["x_train"])
    assert x.shape == (1, 16, 16, 1)  # 8 in the grid, one kept
    assert (x == 220).all()
    stale = layout.assign(top=0).iloc[:0]  # a layout of other images
    with pytest.raises(ValueError, match="rerun the augmentation pipeline"):
        prepare_model_input(loaders, manifest, params, None, stale)


@pytest.mark.parametrize(
    ("background", "expected"),
    [(None, ["malignant", "background", "malignant"]), ("benign", ["malignant", "benign"])],
)
def test_mask_labels_give_the_background_outside_lesions(background, expected):
    spec = TileSpec(16, 16, labels="mask", min_lesion=0.25, background_label=background)
    lesion = np.array([0.5, 0.1, 0.25])[: len(expected)]
    tiles = ImageTiles(np.zeros((len(lesion), 4), np.int64), np.ones(len(lesion)), lesion, False)
    assert _tile_labels("malignant", tiles, spec) == expected
    no_lesion = ImageTiles(tiles.boxes, tiles.foreground, None, False)
    assert _tile_labels("normal", no_lesion, spec) == ["normal"] * len(expected)


def test_mask_labels_through_the_stage_add_the_internal_background_class():
    """A lesion in the top-left tile of a malignant image; a benign image with an empty mask."""
    from breast_cancer_pipeline.masks import encode_mask

    mask = np.zeros((32, 32), dtype=bool)
    mask[2:14, 2:14] = True
    files = {
        "m/1.png": _png(_ramp((32, 32), 0)),
        "m/1_mask.png": encode_mask(mask),
        "b/2.png": _png(_ramp((32, 32), 1)),
        "b/2_mask.png": encode_mask(np.zeros((32, 32), dtype=bool)),
        "b/3.png": _png(_ramp((16, 16), 2)),
        "b/4.png": _png(_ramp((16, 16), 3)),
    }
    manifest = pd.DataFrame(
        [
            ("m/1.png", "malignant", "train", 1, "m/1_mask.png"),
            ("b/2.png", "benign", "train", 1, "b/2_mask.png"),
            ("b/3.png", "benign", "val", 1, ""),
            ("b/4.png", "benign", "test", 1, ""),
        ],
        columns=["path", "label", "split", "channels", "mask_path"],
    )
    loaders = {path: (lambda data=data: data) for path, data in files.items()}
    params = base_params("augmentation", tiles={**TILES, "labels": "mask", "min_lesion": 0.5})
    layout = tile_images(loaders, manifest, params)
    lesion = layout.loc[layout["path"] == "m/1.png", "lesion"].to_numpy()
    np.testing.assert_allclose(lesion, [144 / 256, 0, 0, 0])
    arrays = prepare_model_input(loaders, manifest, params, None, layout)
    assert list(arrays["class_names"]) == ["benign", "malignant", "background"]
    # The lesion tile takes its image's label, the others the background; the empty mask
    # and the image without a mask give every tile their image's label.
    assert arrays["y_train"].tolist() == [1, 2, 2, 2, 0, 0, 0, 0]
    assert arrays["image_y_train"].tolist() == [1, 0]
    assert arrays["y_val"].tolist() == [0]

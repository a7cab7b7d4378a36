"""Helpers for the ingestion tests: write a source tree in tmp_path, run the nodes on it."""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from breast_cancer_pipeline.datasets import ImageFolderDataset, ImageStoreDataset
from breast_cancer_pipeline.pipelines.ingestion.nodes import (
    collapse_duplicates,
    collect_conversion,
    index_source,
    plan_conversion,
    split_manifest,
)

PARAMS = {
    "layout": "auto",
    "label_pattern": None,
    "group_pattern": None,
    "label_map": {},
    "exclude": ["*_mask*", "*_Mask*"],
    "include": None,
    "csv": {
        "path": None,
        "path_column": None,
        "label_column": None,
        "group_column": None,
        "split_column": None,
        "label_priority": None,
    },
    "color_mode": "grayscale",
    "max_pixels": 10_000_000,
    "on_bad_file": "fail",
    "workers": 1,
    "png_compress_level": 1,
    "split": {"ratios": [0.6, 0.2, 0.2], "val_from_train": 0.25, "seed": 0},
}


def params(**overrides) -> dict:
    """The test parameters with top-level (and ``csv``/``split`` sub-key) overrides."""
    result = copy.deepcopy(PARAMS)
    for key, value in overrides.items():
        if key in ("csv", "split"):
            result[key].update(value)
        else:
            result[key] = value
    return result


def image_bytes(seed: int, size: int = 24, fmt: str = "PNG", mode: str = "L") -> bytes:
    """A small random image, distinct per seed, encoded as ``fmt`` in Pillow ``mode``."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    if mode == "I;16":
        pixels = rng.integers(0, 4096, (size, size), dtype=np.uint16)
        Image.fromarray(pixels).save(buffer, format=fmt)
    elif mode == "RGB":
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format=fmt)
    else:
        pixels = rng.integers(0, 255, (size, size), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``{relative path: bytes}`` under ``root``."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@dataclass
class Ingested:
    """What one ingestion run produced."""

    inventory: pd.DataFrame
    manifest: pd.DataFrame
    rejected: pd.DataFrame
    duplicates: pd.DataFrame
    store: ImageStoreDataset


def store_for(out: Path) -> ImageStoreDataset:
    """The image store of an output folder."""
    return ImageStoreDataset(path=str(out / "images"), journal=str(out / "conversion_index.jsonl"))


def ingest(source: Path, out: Path, run_params: dict) -> Ingested:
    """Run the ingestion nodes and datasets, in order, as ``kedro run`` does."""
    raw = ImageFolderDataset(str(source)).load()
    inventory = index_source(raw, run_params)
    store = store_for(out)
    store.save(plan_conversion(raw, inventory, run_params))
    info, rejected = collect_conversion(store.load(), inventory, run_params)
    unique, duplicates = collapse_duplicates(info)
    manifest = split_manifest(unique, run_params)
    return Ingested(inventory, manifest, rejected, duplicates, store)


def assert_grouped(manifest: pd.DataFrame) -> None:
    """No group (patient) in two splits; every split is a known one."""
    assert set(manifest["split"]) <= {"train", "val", "test"}
    assert manifest.groupby("group")["split"].nunique().max() == 1

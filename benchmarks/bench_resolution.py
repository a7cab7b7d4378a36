"""What tiles, lesion masks, tile aggregation and stain normalisation change on large images.

Each seed generates the two large-image demo presets (``demo_data.preset``) at half their
side (:data:`AREA_PRESETS`): ``microcalc`` (512 x 384 grayscale, the malignant signal a
cluster of 2-4 px specks that a resize to 128 px turns into the faint blob a benign image has)
and ``histology`` (384 x 512 RGB H&E-like fields, the signal in the nuclei, the external site
stained otherwise). In a throw-away copy of the project, per preset and seed: ``demo_data``,
then ingestion and validation once, then each variant of :data:`VARIANTS` (``augmentation``,
``backbone_selection``, ``finetune``, ``reporting`` with the variant's settings), its test and
external-site AUROC read off ``metrics.json``. ``microcalc`` runs on every seed of
:data:`SEEDS`, ``histology`` (whose stain variants retrain once per option) on the first
(:data:`PRESET_SEEDS`). Figures are medians over the seeds (min, max and every seed beside
them); every gain is also given on the external site (``<gain>_external``):

* ``resolution.tile_auroc_gain``: on microcalc, test AUROC with 64 px tiles at full
  resolution (labelled by the lesion masks, the patch stage of Shen et al. 2019, combined by
  ``top_k_mean``) minus with the whole image resized to 128 px, at the same training budget
  (goal >= 0.15); ``resolution.attention_tile_auroc_gain`` the same tiles read by the
  attention head; ``resolution.image_label_tile_auroc_gain`` the same with every tile
  labelled by its image; ``resolution.histology_tile_auroc_gain`` tiles (image labels) minus
  resized on histology.
* ``resolution.mask_label_auroc_gain``: tiles labelled by the lesion masks
  (``augmentation.tiles.labels: mask``) minus labelled by their image.
* ``resolution.microcalc.<variant>.auroc`` (and ``.external_auroc``, ``.seconds``) for every
  variant, among them each aggregation of the mask-labelled tile model (``agg_mean``,
  ``agg_max``, ``tiles_mask`` = top_k_mean, ``agg_noisy_or``, ``agg_attention``); the mean, max
  and noisy-or variants reuse the model trained for ``tiles_mask`` (:data:`REUSE`);
* ``resolution.histology.stain_<option>.external_auroc``: the stain options
  (``augmentation.stain``) on the other site's staining.

**The same training budget.** Every run sees about as many pixels: the resized runs
:data:`EPOCHS` epochs of one 128 px image per image, the tile runs at most
``max_per_image`` tiles of 64 px per image, their epochs divided by the ratio
(:func:`budget_epochs`); ``.seconds`` says what each took.

A variant whose parameters this checkout refuses (a feature not yet built: tiles, masks,
stain, the attention head) is skipped, and ``resolution.skipped`` names the missing
parameter or module. ``BENCH_QUICK=1`` runs one seed on tiny images (figures meaningless).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks._project import copy_project, kedro_run

QUICK = harness.quick()
SEEDS = (1,) if QUICK else (1, 2, 3)
#: The seeds each preset runs: the stain variants of ``histology`` retrain once per option
#: (about 18 minutes a seed), so they run on the first seed only, to keep the area near an hour.
PRESET_SEEDS = {"microcalc": SEEDS, "histology": SEEDS[:1]}
GOALS: dict[str, harness.Goal] = {"resolution.tile_auroc_gain": (">=", 0.15)}

#: The resized runs' input (the demo's) and its phase-2 epochs: the training budget.
RESIZED = 32 if QUICK else 128
EPOCHS = 2 if QUICK else 30
#: Tiles of the tile runs: 64 px at full resolution (the specks keep their 2-4 px), those
#: at least 30 % foreground (23-31 of the 48 of a 512 x 384 mammogram: a cap of 32 keeps the
#: lesion's tile), the two highest-scoring averaged per image.
TILE_SIZE = 32 if QUICK else 64
TILES = {
    "size": TILE_SIZE,
    "stride": TILE_SIZE,
    "scale": 1.0,
    "min_foreground": 0.0,
    "max_per_image": 32,
    "aggregation": "top_k_mean",
    "top_k": 2,
    "labels": "image",
}
#: Per preset: a mammogram's tiles of empty film are dropped; a microscopy field is all
#: tissue but its lumina (which Otsu would call foreground there).
PRESET_TILES = {"microcalc": {"min_foreground": 0.3}, "histology": {}}
#: Images of each preset: 4 per patient, both views of an affected breast show its lesion.
DATA = {
    "lesion_patients_per_class": 3 if QUICK else 24,
    "normal_patients": 1 if QUICK else 8,
    "lesion_both_views": 1.0,
    "external_site": {
        "lesion_patients_per_class": 1 if QUICK else 8,
        "normal_patients": 1 if QUICK else 2,
    },
}
#: The presets at the area's size: half the side of conf/base's (512 x 384 and 384 x 512),
#: the signal's pixels kept (microcalc's specks) or halved no further than the tiles resolve
#: (histology's nuclei). A resize to 128 px still shrinks the images 3-4 times.
AREA_PRESETS = {
    "microcalc": {"image_size": [512, 384]},
    "histology": {
        "image_size": [384, 512],
        "nucleus_radius_px": [1.5, 2.0],
        "malignant_nucleus_radius_px": [3.0, 4.5],
        "cluster_radius_px": [20.0, 40.0],
    },
}
#: The presets at a smoke run's size (a quarter of the side).
QUICK_PRESETS = {
    "microcalc": {"image_size": [256, 192], "cluster_radius_px": [4.0, 6.0]},
    "histology": {
        "image_size": [192, 256],
        "nucleus_radius_px": [1.0, 1.5],
        "malignant_nucleus_radius_px": [2.0, 3.0],
        "cluster_radius_px": [12.0, 16.0],
        "cluster_nuclei": [20, 30],
    },
}
PRESETS = QUICK_PRESETS if QUICK else AREA_PRESETS
#: Ingestion per preset: the histology fields keep their colour.
PRESET_INGESTION = {"microcalc": {}, "histology": {"color_mode": "rgb"}}
#: Every preset's mask files, as demo_data writes them.
MASKS = {"mask_pattern": "{stem}_mask.png"}


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, nested dicts key by key (a None replaces a dict)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _tiles(preset: str, **changes: Any) -> dict[str, Any]:
    return {"augmentation": {"tiles": {**TILES, **PRESET_TILES[preset], **changes}}}


def _stain(normalize: str, jitter: float | None = None) -> dict[str, Any]:
    tiles = _tiles("histology")
    return merge(tiles, {"augmentation": {"stain": {"normalize": normalize, "jitter": jitter}}})


#: Tiles labelled by the lesion masks (the patch stage of Shen et al. 2019): a cluster's disc
#: (8-14 px radius) is 5-15 % of a 64 x 64 px tile it lies in.
MASK_LABELS = {"labels": "mask", "min_lesion": 0.02, "background_label": "normal"}
#: ``{preset: {variant: parameters set over the demo environment}}``. ``resize`` is the
#: whole image at the demo's 128 px (``augmentation.tiles: null``, the default).
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "microcalc": {
        "resize": {},
        "tiles": _tiles("microcalc"),
        "tiles_mask": _tiles("microcalc", **MASK_LABELS),
        # Each aggregation of the mask-labelled tile model's answers (the model that learns).
        "agg_mean": _tiles("microcalc", **MASK_LABELS, aggregation="mean"),
        "agg_max": _tiles("microcalc", **MASK_LABELS, aggregation="max"),
        "agg_noisy_or": _tiles("microcalc", **MASK_LABELS, aggregation="noisy_or"),
        "agg_attention": _tiles("microcalc", **MASK_LABELS, aggregation="attention"),
    },
    "histology": {
        "resize": {},
        "stain_none": _tiles("histology"),
        "stain_reinhard": _stain("reinhard"),
        "stain_macenko": _stain("macenko"),
        "stain_macenko_jitter": _stain("macenko", 0.05),
    },
}
#: Variants that only combine another variant's tile answers otherwise: the model trained for
#: that variant (run just before) is kept, and only the tiles (``augmentation``, which records
#: the aggregation) and ``reporting`` run again.
REUSE = {"agg_mean": "tiles_mask", "agg_max": "tiles_mask", "agg_noisy_or": "tiles_mask"}
#: What a variant needs beyond parameters: ``(variant prefix, module, what it is)``.
MODULES = (("agg_attention", "breast_cancer_pipeline.training.attention", "the attention head"),)
#: The pairs whose difference is a headline figure: ``name: (preset, variant, baseline)``.
GAINS = {
    "tile_auroc_gain": ("microcalc", "tiles_mask", "resize"),
    "attention_tile_auroc_gain": ("microcalc", "agg_attention", "resize"),
    "image_label_tile_auroc_gain": ("microcalc", "tiles", "resize"),
    "histology_tile_auroc_gain": ("histology", "stain_none", "resize"),
    "mask_label_auroc_gain": ("microcalc", "tiles_mask", "tiles"),
}


def tiles_per_image(preset: str) -> int:
    """The most tiles a :data:`TILES` run cuts from one image of ``preset`` (its budget)."""
    from breast_cancer_pipeline.tiles import TileSpec, tile_count  # noqa: PLC0415

    shape = PRESETS[preset]["image_size"]
    return tile_count(tuple(shape), TileSpec.from_params({**TILES, **PRESET_TILES[preset]}))


def budget_epochs(preset: str, tiled: bool) -> int:
    """Phase-2 epochs: :data:`EPOCHS` resized; with tiles, as many pixels seen in all.

    A resized image is ``RESIZED**2`` pixels, an image's tiles at most ``tiles_per_image *
    TILE_SIZE**2``: the tile runs' epochs are :data:`EPOCHS` times their ratio (at least 1).
    """
    if not tiled:
        return EPOCHS
    pixels = tiles_per_image(preset) * TILE_SIZE**2
    return max(1, round(EPOCHS * RESIZED**2 / pixels))


def common_settings(preset: str, seed: int, masks: bool) -> dict[str, Any]:
    """What every run of ``preset`` sets over the demo environment (its data, a small run).

    Args:
        preset: A key of :data:`VARIANTS`.
        seed: The data's, the split's and the training's seed.
        masks: Whether ingestion pairs the masks (``ingestion.mask_pattern``).
    """
    data = merge(DATA, {"seed": seed, "preset": preset, "presets": {preset: PRESETS[preset]}})
    return {
        "demo_data": data,
        "ingestion": {
            "split": {"seed": seed},
            **PRESET_INGESTION[preset],
            **(MASKS if masks else {}),
        },
        "validation": {"min_per_class": 1},
        "augmentation": {"image_size": RESIZED},
        "backbone_selection": {
            "candidates": {"small_cnn_narrow": None, "small_resnet": None},
            "epochs": 2 if QUICK else 5,
            "repeats": 1,
            "head_search": {"n_trials": 0},
        },
        "finetune": {"seed": seed, "phase1": {"epochs": 1}, "phase2": {"epochs": EPOCHS}},
        "reporting": {
            "bootstrap": {"n_resamples": 50 if QUICK else 200},
            "gradcam": {"per_class": 1},
            "champion": {"min_ci_low": 0.0},
        },
    }


def variant_settings(preset: str, variant: str, common: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`common_settings` with the variant's, its epochs at the training budget."""
    settings = merge(common, VARIANTS[preset][variant])
    tiled = settings["augmentation"].get("tiles") is not None
    epochs = {"phase2": {"epochs": budget_epochs(preset, tiled)}}
    return merge(settings, {"finetune": epochs})


def configure(project: Path, settings: Mapping[str, Any], demo: Mapping[str, Any]) -> None:
    """Write ``settings`` over the demo environment's blocks ``demo`` into the copy."""
    import yaml  # noqa: PLC0415

    blocks = {name: merge(demo.get(name) or {}, settings.get(name) or {}) for name in demo}
    path = project / "conf" / "demo" / "parameters.yml"
    path.write_text(yaml.safe_dump(blocks, sort_keys=False))


def missing_feature(project: Path, variant: str) -> str | None:
    """Why this checkout cannot run the copy's configuration, or None when it can.

    A parameter the checkout's schemas refuse (``augmentation.stain: unknown key``) names a
    feature not built yet; so does a module of :data:`MODULES`.
    """
    for prefix, module, what in MODULES:
        if variant.startswith(prefix) and importlib.util.find_spec(module) is None:
            return f"{what} is not in this checkout (no module {module})"
    from breast_cancer_pipeline.param_schema import (  # noqa: PLC0415
        ParameterError,
        check_parameters,
    )
    from tests.params import load_parameters  # noqa: PLC0415

    parameters = load_parameters(project, "demo")
    try:
        check_parameters(parameters, parameters)
    except ParameterError as exc:
        problems = str(exc).split("\n- ")[1:]
        return "this checkout refuses its parameters: " + "; ".join(problems)
    return None


def _masks_available() -> bool:
    """Whether this checkout's ingestion pairs masks (``ingestion.mask_pattern``)."""
    from breast_cancer_pipeline.param_schema import ParameterError, validate_block  # noqa: PLC0415
    from tests.params import base_params  # noqa: PLC0415

    try:
        validate_block("ingestion", base_params("ingestion", **MASKS))
    except ParameterError:
        return False
    return True


TRAINING = "--pipelines=augmentation,backbone_selection,finetune,reporting"
REPORTING = "--pipelines=augmentation,reporting"


def one_preset(workdir: Path, preset: str, seed: int) -> dict[str, dict[str, Any]]:
    """Every variant of ``preset`` on its data of ``seed``: figures, or ``{"skipped": why}``."""
    from tests.params import load_parameters  # noqa: PLC0415

    project = copy_project(workdir / f"{preset}_{seed}")
    demo = load_parameters(project, "demo")
    common = common_settings(preset, seed, masks=_masks_available())
    configure(project, common, demo)
    kedro_run(project, "--pipelines=demo_data")
    kedro_run(project, "--pipelines=ingestion,validation")
    results: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS[preset]:
        configure(project, variant_settings(preset, variant, common), demo)
        reason = missing_feature(project, variant)
        if reason is not None:
            print(f"   {preset} {variant}: skipped: {reason}", flush=True)
            results[variant] = {"skipped": reason}
            continue
        reused = REUSE.get(variant)
        if reused is not None and "auroc" not in results.get(reused, {}):
            results[variant] = {"skipped": f"its model, {reused}'s, was not trained"}
            continue
        seconds = kedro_run(project, REPORTING if reused else TRAINING)
        metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
        results[variant] = {
            "auroc": metrics["auroc"],
            "external_auroc": (metrics.get("external") or {}).get("auroc", math.nan),
            "seconds": seconds,
        }
        print(f"   {preset} seed {seed} {variant}: {results[variant]}", flush=True)
    shutil.rmtree(project / "data")
    return results


def _over_seeds(values: list[float]) -> dict[str, Any] | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return harness.summary(finite) if finite else None


def figures_of(per_seed: list[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """The area's figures from each seed's ``{preset: {variant: result}}``.

    Every measured variant's AUROC, external AUROC and seconds, and the :data:`GAINS` over the
    seeds where both sides ran; the skipped variants with the first reason given.
    """
    figures: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for preset, variants in VARIANTS.items():
        for variant in variants:
            runs = [seed[preset][variant] for seed in per_seed if variant in seed.get(preset, {})]
            for run in runs:
                if "skipped" in run:
                    skipped.setdefault(f"{preset}.{variant}", run["skipped"])
            for key in ("auroc", "external_auroc", "seconds"):
                value = _over_seeds([run[key] for run in runs if key in run])
                if value is not None:
                    figures[f"resolution.{preset}.{variant}.{key}"] = value
    for name, (preset, variant, baseline) in GAINS.items():
        pairs = [seed.get(preset, {}) for seed in per_seed]
        for key, suffix in (("auroc", ""), ("external_auroc", "_external")):
            gains = [
                runs[variant][key] - runs[baseline][key]
                for runs in pairs
                if key in runs.get(variant, {}) and key in runs.get(baseline, {})
            ]
            gains = [gain for gain in gains if math.isfinite(gain)]
            if gains:
                figures[f"resolution.{name}{suffix}"] = harness.summary(gains)
    return {**figures, "resolution.skipped": skipped}


def run(workdir: Path) -> dict[str, Any]:
    """Every preset and seed, then the figures over the seeds."""
    per_seed = [
        {
            preset: one_preset(workdir, preset, seed)
            for preset in VARIANTS
            if seed in PRESET_SEEDS[preset]
        }
        for seed in SEEDS
    ]
    for seed in per_seed:
        for variants in seed.values():
            for result in variants.values():
                assert "skipped" in result or 0.0 <= result["auroc"] <= 1.0, result
    return {
        **figures_of(per_seed),
        "resolution.seeds": {preset: list(seeds) for preset, seeds in PRESET_SEEDS.items()},
        "resolution.settings": {
            "data": DATA,
            "resized": RESIZED,
            "tiles": TILES,
            "epochs": {p: {"resized": EPOCHS, "tiles": budget_epochs(p, True)} for p in VARIANTS},
            **({"quick": QUICK_PRESETS} if QUICK else {}),
        },
    }

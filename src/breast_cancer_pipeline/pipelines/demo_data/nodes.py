"""Nodes that synthesise a small, deterministic, BUSI-like breast-ultrasound dataset.

The images look like BUSI's (Al-Dhabyani et al., 2020), in its class folders ``normal/``,
``benign/`` and ``malignant/``, each image with its lesion mask ``<name>_mask.png``. Unlike
BUSI, every patient has both breasts imaged in two views, named
``<class>/<patient>_<side>_<view>``: ``benign/P0042_L_CC.png``, ``benign/P0042_L_MLO.png``,
``normal/P0042_R_CC.png``, ... (who has which lesion, and in which views it shows:
:mod:`.patients`). It exists so that every stage of the pipeline, decisions per patient and per
breast included, can run end to end on a laptop without downloading real data.

How an image is drawn (all in numpy, one seeded generator per image):

1. Tissue: wavy horizontal layers (skin line, subcutaneous fat, fibroglandular tissue, pectoral
   muscle with striations), multi-scale smooth texture, bright Cooper's ligaments and depth
   attenuation.
2. Structures, multiplied into the echo map:

   * ``normal``: no mass; elongated anechoic ducts whose total area is drawn from the same
     distribution as a mass's, so that "dark pixels" alone do not reveal a mass;
   * ``benign``: an oval, wider-than-tall, well-circumscribed hypoechoic mass with a sharp edge,
     sometimes a thin echogenic capsule and posterior acoustic enhancement;
   * ``malignant``: an irregular hypoechoic mass with lobulated, angular, spiculated and blurred
     margins, a heterogeneous interior, sometimes an echogenic halo, microcalcifications and
     posterior acoustic shadowing.

   Benign and malignant masses share the same size, depth and contrast distributions.
3. Correlated multiplicative (Rayleigh) speckle, log compression with a random dynamic range,
   gain and gamma, so that global brightness and contrast vary strongly from image to image.

Difficulty is a named preset (``demo_data.preset`` picks an entry of ``demo_data.presets``):
lesion size and contrast ranges, a label-noise fraction (a breast drawn as one class filed under
another, pixels unchanged; :func:`label_flip_record` lists its images) and the strength of the
second site's shift. :func:`generate_external_site` draws that second site (another scanner, for the
external test) from its own seeds.

A preset is of a ``kind``: ``ultrasound`` draws the images above; ``microcalc`` (large grayscale
mammogram-like images, :mod:`.microcalc`) and ``histology`` (large RGB H&E-like fields,
:mod:`.histology`) draw their own, at their own size, for the same patients, names and masks;
their signal is a few pixels wide, so that it survives tiling and not a resize.

Each image is written as 8-bit PNG, JPEG or 16-bit TIFF (``I;16``, with a random gain and offset
so that consumers have to window it); an RGB (histology) image is 8-bit in every format, its
TIFF too. Masks are always binary (0/255) 8-bit PNG, all-zero where no lesion is drawn. Images
of normal breasts get one, as in BUSI, unless ``normal_masks`` is false.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from breast_cancer_pipeline.param_schema import validate_block
from breast_cancer_pipeline.pipelines.demo_data.parameters import (
    DemoDataParams,
    HistologyParams,
    ImageFormat,
    MicrocalcParams,
)

from .histology import render_histology
from .microcalc import render_microcalc
from .noise import blur, smooth_noise
from .patients import CLASS_NAMES, Cohort, PlannedImage, allocate_formats, plan_cohort

__all__ = [
    "CLASS_NAMES",
    "FLIP_COLUMNS",
    "FORMAT_EXTENSIONS",
    "allocate_formats",
    "generate_demo_dataset",
    "generate_external_site",
    "label_flip_record",
]

FORMAT_EXTENSIONS: dict[ImageFormat, str] = {"png": ".png", "jpeg": ".jpg", "tiff16": ".tif"}
"""File extension written for each entry of ``format_mix``."""

_EXTERNAL_SEED_TAG = 0x455854  # the external site's image streams

#: Columns of the label-flip record (``data/01_raw/demo_label_flips.csv``).
FLIP_COLUMNS = ("path", "drawn_as", "filed_as")
_SPECKLE_LOOKS = 3  # independent speckle fields averaged per image (spatial compounding)
_ANGLES = np.linspace(-np.pi, np.pi, 2048, endpoint=False)  # where mass outlines are sampled


@dataclass(frozen=True)
class _Site:
    """What differs between the sites (and presets): the ranges one image is drawn from."""

    lesion_radius: tuple[float, float]
    lesion_contrast: tuple[float, float]
    gain_db: tuple[float, float]
    speckle_px: float
    resolution: float


def _internal_site(cfg: DemoDataParams) -> _Site:
    look = cfg.difficulty
    return _Site(look.lesion_radius, look.lesion_contrast, cfg.gain_db, cfg.speckle_px, 1.0)


def _external_site(cfg: DemoDataParams) -> _Site:
    """The second scanner: every shift of ``external_site`` scaled by the preset's site_shift."""
    look, ext, k = cfg.difficulty, cfg.external_site, cfg.difficulty.site_shift
    low, high = (
        min(max(c + k * ext.lesion_contrast_shift, 0.0), 1.0) for c in look.lesion_contrast
    )
    return _Site(
        lesion_radius=look.lesion_radius,
        lesion_contrast=(low, high),
        gain_db=(cfg.gain_db[0] + k * ext.gain_db, cfg.gain_db[1] + k * ext.gain_db),
        speckle_px=cfg.speckle_px * ext.speckle_scale**k,
        resolution=ext.resolution**k,
    )


# --------------------------------------------------------------------------------------------
# Small numpy helpers
# --------------------------------------------------------------------------------------------


def _resample(image: np.ndarray, resolution: float) -> np.ndarray:
    """Down- then up-sample (bilinear) to mimic a scanner of lower resolution; 1 is a no-op."""
    if resolution >= 1.0:
        return image
    size = image.shape[0]
    low = max(8, round(size * resolution))
    pixels = Image.fromarray(image.astype(np.float32), mode="F")
    coarse = pixels.resize((low, low), Image.Resampling.BILINEAR)
    return np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR), dtype=float)


def _smooth_curve(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """A 1-D smooth random curve in roughly [-1, 1] (used for wavy layer boundaries)."""
    return np.clip(smooth_noise(rng, (1, n), 0.0, sigma)[0] / 2.0, -1.0, 1.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


# --------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------


def _tissue(rng: np.random.Generator, size: int) -> np.ndarray:
    """Echogenicity of tissue without any mass: layers, texture, ligaments, attenuation."""
    depth = (np.arange(size)[:, None] + 0.5) / size  # 0 at the probe, 1 at the bottom
    shape = (size, size)
    warp = 0.02 * smooth_noise(rng, shape, size / 8, size / 4)
    depth_w = depth + warp

    skin = rng.uniform(0.02, 0.06)
    fat_end = rng.uniform(0.12, 0.35) + 0.05 * _smooth_curve(rng, size, size / 6)[None, :]
    gland_end = rng.uniform(0.7, 0.95) + 0.05 * _smooth_curve(rng, size, size / 6)[None, :]
    edge = 0.012
    into_gland = _sigmoid((depth_w - fat_end) / edge)
    into_muscle = _sigmoid((depth_w - gland_end) / edge)

    fat = rng.uniform(0.45, 0.8) * np.exp(0.25 * smooth_noise(rng, shape, size / 20, size / 12))
    gland = rng.uniform(0.8, 1.3) * np.exp(0.22 * smooth_noise(rng, shape, size / 40, size / 20))
    stripes = 1.0 + 0.35 * np.sin(
        2 * np.pi * rng.uniform(10, 18) * depth_w + rng.uniform(0, 2 * np.pi)
    )
    muscle = rng.uniform(0.5, 0.85) * stripes

    echo = fat * (1 - into_gland) + gland * into_gland * (1 - into_muscle) + muscle * into_muscle
    # Faint horizontal banding seen in most scans.
    bands = 1.0 + rng.uniform(0.05, 0.2) * np.sin(
        2 * np.pi * rng.uniform(3, 8) * depth_w + rng.uniform(0, 2 * np.pi)
    )
    echo = echo * bands
    # Bright skin line and Cooper's ligaments (thin bright curves in the fat layer).
    echo = echo + rng.uniform(1.0, 2.5) * np.exp(-(((depth_w - skin) / 0.008) ** 2))
    for _ in range(int(rng.integers(1, 4))):
        curve = rng.uniform(0.3, 0.9) * fat_end + 0.04 * _smooth_curve(rng, size, size / 5)
        ligament = np.exp(-(((depth_w - curve) / 0.007) ** 2))
        echo = echo + rng.uniform(0.4, 1.2) * ligament * (1 - into_gland)
    attenuation = np.exp(-rng.uniform(0.2, 1.4) * depth)
    return echo * attenuation


def _radial_profile(
    rng: np.random.Generator, malignant: bool, spicule_range: tuple[int, int]
) -> np.ndarray:
    """Boundary radius (relative to the mean radius), sampled at the polar angles ``_ANGLES``."""
    phi = _ANGLES
    radius = np.ones_like(phi)
    if not malignant:
        # At most a gentle macrolobulation: a well-circumscribed outline.
        for k in (2, 3):
            radius += rng.uniform(0.0, 0.04) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
        return radius
    # Lobulated and angular: many harmonics with sizeable amplitudes.
    for k in range(2, 9):
        radius += (
            rng.uniform(0.03, 0.16) / math.sqrt(k - 1) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
        )
    # Spicules: narrow triangular spikes radiating from the margin.
    n_spicules = int(rng.integers(spicule_range[0], spicule_range[1] + 1))
    for angle in rng.uniform(-np.pi, np.pi, size=n_spicules):
        delta = np.abs((phi - angle + np.pi) % (2 * np.pi) - np.pi)
        width = rng.uniform(0.06, 0.14)
        radius += rng.uniform(0.4, 1.0) * np.clip(1.0 - delta / width, 0.0, None)
    return np.maximum(radius, 0.35)


def _mass(
    rng: np.random.Generator, size: int, malignant: bool, cfg: DemoDataParams, site: _Site
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one mass.

    Returns:
        Signed radial distance to the boundary in pixels (negative inside), the soft occupancy
        in [0, 1] and the binary mask.
    """
    rows, cols = np.mgrid[0:size, 0:size].astype(float) + 0.5
    cy = rng.uniform(0.3, 0.65) * size
    cx = rng.uniform(0.28, 0.72) * size
    r_eq = _uniform(rng, site.lesion_radius) * size
    if malignant:
        aspect = rng.uniform(0.65, 1.25)  # width / height; "taller than wide" happens
        angle = rng.uniform(-np.pi / 2, np.pi / 2)
    else:
        aspect = rng.uniform(1.3, 2.1)  # oval, parallel to the skin
        angle = rng.uniform(-0.35, 0.35)
    dy, dx = rows - cy, cols - cx
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    un, vn = u / (r_eq * math.sqrt(aspect)), v / (r_eq / math.sqrt(aspect))
    rho = np.hypot(un, vn)
    phi = np.arctan2(vn, un)
    profile = _radial_profile(rng, malignant, cfg.spicules)
    boundary = np.interp(phi, _ANGLES, profile, period=2 * np.pi)
    distance = (rho - boundary) * r_eq
    edge = _uniform(rng, cfg.malignant_edge_px if malignant else cfg.benign_edge_px)
    occupancy = _sigmoid(-distance / (edge / 2.0))
    return distance, occupancy, distance < 0


def _ducts(rng: np.random.Generator, size: int, target_area: float) -> np.ndarray:
    """Occupancy of elongated anechoic ducts covering roughly ``target_area`` pixels."""
    rows, cols = np.mgrid[0:size, 0:size].astype(float) + 0.5
    occupancy = np.zeros((size, size))
    area = 0.0
    for _ in range(6):
        if area >= target_area:
            break
        length = rng.uniform(0.25, 0.7) * size
        half_width = rng.uniform(0.012, 0.04) * size
        cy, cx = rng.uniform(0.25, 0.8) * size, rng.uniform(0.2, 0.8) * size
        angle = rng.uniform(-0.45, 0.45)
        bend = rng.uniform(-0.15, 0.15) * length
        dy, dx = rows - cy, cols - cx
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        v = v - bend * (2 * u / length) ** 2
        distance = np.hypot(np.maximum(np.abs(u) - length / 2, 0.0), v) - half_width
        occupancy = np.maximum(occupancy, _sigmoid(-distance / 0.5))
        area += 2 * half_width * length + math.pi * half_width**2
    return occupancy


def _posterior(occupancy: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Region behind (below) a structure, fading with depth, for shadowing or enhancement."""
    passed = np.maximum.accumulate(occupancy, axis=0)
    behind = np.clip(passed - occupancy, 0.0, 1.0)
    rows = np.arange(size)[:, None]
    first = np.argmax(passed > 0.5, axis=0)[None, :]
    fade = np.exp(-np.maximum(rows - first, 0) / (rng.uniform(0.3, 1.0) * size))
    return blur(behind * fade, 1.0, 2.0)


def _render(
    rng: np.random.Generator, label: str, cfg: DemoDataParams, site: _Site
) -> tuple[np.ndarray, np.ndarray]:
    """Render one image.

    Returns:
        The image as floats in [0, 255] and its binary lesion mask.
    """
    size = cfg.image_size
    echo = _tissue(rng, size)
    mask = np.zeros((size, size), dtype=bool)
    target_area = math.pi * (_uniform(rng, site.lesion_radius) * size) ** 2

    if label == "normal":
        ducts = _ducts(rng, size, target_area)
        echo = echo * (1 - ducts * (1 - _uniform(rng, site.lesion_contrast)))
        if rng.random() < 0.4:
            echo = echo * (1 - rng.uniform(0.3, 0.7) * _posterior(ducts, size, rng))
    else:
        malignant = label == "malignant"
        if rng.random() < 0.35:  # a few incidental ducts in lesion images too
            ducts = _ducts(rng, size, 0.3 * target_area)
            echo = echo * (1 - ducts * (1 - _uniform(rng, site.lesion_contrast)))
        distance, occupancy, mask = _mass(rng, size, malignant, cfg, site)
        contrast = _uniform(rng, site.lesion_contrast)
        if malignant:
            texture = np.exp(0.35 * smooth_noise(rng, (size, size), 2.0, 2.0))
            rim = np.exp(-(((distance - 3.0) / 3.0) ** 2)) * (distance > 0)
            rim_gain = rng.uniform(0.3, 0.8) if rng.random() < 0.7 else 0.0
            posterior = -rng.uniform(0.3, 0.7) if rng.random() < 0.7 else 0.0
        else:
            texture = np.exp(0.12 * smooth_noise(rng, (size, size), 3.0, 3.0))
            rim = np.exp(-((distance / 0.8) ** 2))
            rim_gain = rng.uniform(0.5, 1.2) if rng.random() < 0.8 else 0.0
            posterior = rng.uniform(0.3, 0.8) if rng.random() < 0.7 else 0.0
        inside = contrast * texture
        echo = echo * (1 - occupancy + occupancy * inside) * (1 + rim_gain * rim)
        if posterior:
            echo = echo * (1 + posterior * _posterior(occupancy, size, rng))
        if malignant and rng.random() < 0.5:  # microcalcifications: bright specks
            candidates = np.flatnonzero(distance.ravel() < -1.5)
            if candidates.size:
                specks = np.zeros(size * size)
                specks[rng.choice(candidates, size=int(rng.integers(3, 10)))] = 1.0
                echo = echo + 3.0 * blur(specks.reshape(size, size), 0.6)
    # Correlated speckle, laterally elongated as in real scans; averaging the intensity of a few
    # independent Rayleigh fields mimics spatial compounding, which tames the grain.
    sy, sx = site.speckle_px, 1.6 * site.speckle_px
    fields = smooth_noise(rng, (size, size), sy, sx, count=2 * _SPECKLE_LOOKS)
    speckle = np.sqrt(np.mean(fields**2, axis=0))
    # Log compression with random dynamic range, gain and gamma.
    decibels = 20.0 * np.log10(np.maximum(echo * speckle, 1e-6))
    dynamic_range = _uniform(rng, cfg.dynamic_range_db)
    top = 6.0 + _uniform(rng, site.gain_db)
    display = np.clip((decibels - (top - dynamic_range)) / dynamic_range, 0.0, 1.0)
    display = display ** _uniform(rng, cfg.gamma)
    return _resample(255.0 * display, site.resolution), mask


# --------------------------------------------------------------------------------------------
# Encoding and the node
# --------------------------------------------------------------------------------------------


def _encode(image: np.ndarray, fmt: str, rng: np.random.Generator, cfg: DemoDataParams) -> bytes:
    """Grayscale as the format says (``tiff16``: 16-bit, windowing needed); RGB in 8 bits."""
    buffer = io.BytesIO()
    if fmt == "tiff16" and image.ndim == 2:
        span = rng.uniform(0.2, 0.85) * 65535.0
        offset = rng.uniform(0.0, 65535.0 - span)
        values = np.round(offset + image / 255.0 * span).astype("<u2")
        Image.fromarray(values).save(buffer, format="TIFF")
    else:
        pixels = Image.fromarray(np.round(image).astype(np.uint8))
        if fmt == "jpeg":
            pixels.save(buffer, format="JPEG", quality=cfg.jpeg_quality)
        else:
            pixels.save(buffer, format="TIFF" if fmt == "tiff16" else "PNG")
    return buffer.getvalue()


def _encode_mask(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _cohort(cfg: DemoDataParams) -> Cohort:
    """The demo site's patients, with the preset's label noise."""
    return Cohort(
        seed=cfg.seed,
        lesion_patients=cfg.lesion_patients_per_class,
        normal_patients=cfg.normal_patients,
        lesion_both_views=cfg.lesion_both_views,
        label_noise=cfg.difficulty.label_noise,
        format_mix=dict(cfg.format_mix),
    )


#: Draws one image: ``(rng, label) -> (pixels, mask)``.
Renderer = Callable[[np.random.Generator, str], tuple[np.ndarray, np.ndarray]]


def _renderer(cfg: DemoDataParams, external: bool) -> Renderer:
    """The drawing function of the preset's kind, for the first site or the external one."""
    preset = cfg.difficulty
    shift = preset.site_shift if external else 0.0
    if isinstance(preset, MicrocalcParams):
        return partial(render_microcalc, cfg=preset, shift=shift)
    if isinstance(preset, HistologyParams):
        return partial(render_histology, cfg=preset, shift=shift)
    site = _external_site(cfg) if external else _internal_site(cfg)
    return partial(_render, cfg=cfg, site=site)


def _draw(cfg: DemoDataParams, render: Renderer, plan: list[PlannedImage]) -> dict[str, bytes]:
    """``{relative path: bytes}`` of the planned images and their masks."""
    files: dict[str, bytes] = {}
    for image in plan:
        rng = np.random.default_rng(image.seed)
        drawn = image.drawn_as if image.shows_lesion else "normal"
        pixels, mask = render(rng, drawn)
        files[image.stem + FORMAT_EXTENSIONS[image.image_format]] = _encode(
            pixels, image.image_format, rng, cfg
        )
        if image.drawn_as != "normal" or cfg.normal_masks:
            files[image.stem + "_mask.png"] = _encode_mask(mask)
    return dict(sorted(files.items()))


def generate_demo_dataset(params: dict[str, Any]) -> dict[str, bytes]:
    """Generate a deterministic synthetic BUSI-like breast-ultrasound dataset.

    Every patient has both breasts imaged in two views (:mod:`.patients`); every image has its
    own generator, seeded with the patient's class and number, the side and the view, so an
    image does not depend on how many others are generated. The same parameters always give
    byte-identical files. The preset (``demo_data.preset``) sets lesion size and contrast and
    the label noise: a breast drawn as one class and filed under another keeps its pixels and
    masks (:func:`label_flip_record` lists its images).

    Args:
        params: The ``demo_data`` parameters: ``seed``, ``lesion_patients_per_class``,
            ``normal_patients``, ``lesion_both_views``, ``image_size``, ``format_mix``,
            ``jpeg_quality``, ``normal_masks``, ``preset``/``presets`` and the appearance
            ranges documented in ``conf/base/parameters_demo_data.yml``.

    Returns:
        A mapping from relative file path to encoded file bytes, e.g.
        ``"benign/P0042_L_CC.png"`` and its mask ``"benign/P0042_L_CC_mask.png"``, ready to
        be saved by a ``PartitionedDataset``.

    Raises:
        ParameterError: A parameter is invalid (the message names it); a run checks them
            before this node starts.
    """
    cfg = validate_block("demo_data", params)
    return _draw(cfg, _renderer(cfg, external=False), plan_cohort(_cohort(cfg)))


def label_flip_record(params: dict[str, Any]) -> pd.DataFrame:
    """The images that label noise filed under another class than they were drawn as.

    Args:
        params: The ``demo_data`` parameters.

    Returns:
        One row per image of a flipped breast: ``path`` (its image file under the demo
        folder, as :func:`generate_demo_dataset` names it), ``drawn_as`` and ``filed_as``; no
        rows without label noise.
    """
    cfg = validate_block("demo_data", params)
    rows = [
        (image.stem + FORMAT_EXTENSIONS[image.image_format], image.drawn_as, image.filed_as)
        for image in plan_cohort(_cohort(cfg))
        if image.drawn_as != image.filed_as
    ]
    return pd.DataFrame(rows, columns=list(FLIP_COLUMNS)).sort_values("path", ignore_index=True)


def generate_external_site(params: dict[str, Any]) -> dict[str, bytes]:
    """A second synthetic site for the external test: another scanner, its own patients.

    Same classes, layout and naming as :func:`generate_demo_dataset`, drawn from their own
    seeds (no image is shared with the first site) with the shifts of
    ``demo_data.external_site`` scaled by the preset's ``site_shift``: another display level
    (gain), coarser speckle, lower resolution and fainter masses. No label noise: the external
    labels are the drawn ones.

    Args:
        params: The ``demo_data`` parameters.

    Returns:
        ``{relative path: bytes}`` like :func:`generate_demo_dataset`; empty when
        ``external_site`` has no patients.
    """
    cfg = validate_block("demo_data", params)
    external = cfg.external_site
    cohort = Cohort(
        seed=cfg.seed,
        lesion_patients=external.lesion_patients_per_class,
        normal_patients=external.normal_patients,
        lesion_both_views=cfg.lesion_both_views,
        label_noise=0.0,
        format_mix=dict(cfg.format_mix),
        seed_tail=(_EXTERNAL_SEED_TAG,),
    )
    return _draw(cfg, _renderer(cfg, external=True), plan_cohort(cohort))

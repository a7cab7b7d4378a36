"""The demo's patients: which breast is imaged how, and under which label each image is filed.

Every patient has both breasts imaged in two views (CC and MLO): four images, named
``<label>/<patient>_<side>_<view>`` (``benign/P0042_L_CC``), so that the patient, the breast
(patient and laterality) and the view can be read from the file name
(``ingestion.column_patterns`` in ``conf/demo``).

- A *normal* patient has two normal breasts.
- A *benign* or *malignant* patient has one affected breast (left or right, drawn) with a
  lesion of that class, and a normal other breast. The lesion shows in both views of the
  affected breast for a share ``lesion_both_views`` of them, else in one view (drawn); the view
  where it does not show is drawn without a lesion.
- An image carries its breast's label: a view where the lesion is not seen is still filed
  under the breast's class. This is what makes per-breast and per-patient decisions differ
  from per-image ones.
- Label noise (the preset's ``label_noise``) files a whole breast (both views) under another
  class, drawn at random, its pixels unchanged.

Patient ids are a seeded permutation, so that an id says nothing about the class. Each image
is drawn from its own generator, seeded with the patient's class and number, the side and the
view, so an image does not depend on how many others are generated; each class's images share
the file formats of ``format_mix`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("normal", "benign", "malignant")
"""Folder names, in the order used to derive per-image seeds."""

#: The breasts, as the file names spell their laterality.
SIDES: tuple[str, ...] = ("L", "R")
#: The views of each breast.
VIEWS: tuple[str, ...] = ("CC", "MLO")

_FORMAT_SEED_TAG = 0x464D54  # keeps the format-allocation stream apart from image streams
_NOISE_SEED_TAG = 0x4E4F4953  # the label-noise streams
_PATIENT_SEED_TAG = 0x504154  # which breast is affected, which views show the lesion
_ID_SEED_TAG = 0x4944  # the permutation of patient ids


@dataclass(frozen=True)
class Cohort:
    """Who a site images and how its labels are filed.

    Attributes:
        seed: ``demo_data.seed``.
        lesion_patients: Patients with an affected breast, per lesion class.
        normal_patients: Patients with two normal breasts.
        lesion_both_views: Share of affected breasts whose lesion both views show.
        label_noise: Share of breasts filed under another class.
        format_mix: Fraction of images per file format.
        seed_tail: Appended to every seed (keeps a second site's streams apart).
    """

    seed: int
    lesion_patients: int
    normal_patients: int
    lesion_both_views: float
    label_noise: float
    format_mix: dict[str, float]
    seed_tail: tuple[int, ...] = ()


@dataclass(frozen=True)
class PlannedImage:
    """One image of the cohort.

    Attributes:
        stem: Its path without extension, ``<filed_as>/<patient>_<side>_<view>``.
        drawn_as: Its breast's class as drawn.
        filed_as: The class it is filed under (``drawn_as`` unless label noise moved it).
        shows_lesion: Whether the lesion is drawn in this view (never for a normal breast).
        seed: The seed of its generator.
        image_format: A key of ``format_mix``.
    """

    stem: str
    drawn_as: str
    filed_as: str
    shows_lesion: bool
    seed: tuple[int, ...]
    image_format: str


def plan_cohort(cohort: Cohort) -> list[PlannedImage]:
    """Every image of the cohort, sorted by path.

    Args:
        cohort: The site's patients and settings.

    Returns:
        Four images per patient (both breasts, CC and MLO).
    """
    patients = [(0, n) for n in range(1, cohort.normal_patients + 1)]
    patients += [(c, n) for c in (1, 2) for n in range(1, cohort.lesion_patients + 1)]
    ids = np.random.default_rng([cohort.seed, _ID_SEED_TAG, *cohort.seed_tail])
    numbers = ids.permutation(len(patients)) + 1
    width = max(4, len(str(len(patients))))
    drafts = []
    for (class_index, number), patient_number in zip(patients, numbers, strict=True):
        patient = f"P{patient_number:0{width}d}"
        drafts.extend(_patient_images(cohort, class_index, number, patient))
    formats = _formats(cohort, drafts)
    images = [
        PlannedImage(stem, drawn, filed, shows, seed, formats[seed])
        for stem, drawn, filed, shows, seed in drafts
    ]
    return sorted(images, key=lambda image: image.stem)


def _patient_images(
    cohort: Cohort, class_index: int, number: int, patient: str
) -> list[tuple[str, str, str, bool, tuple[int, ...]]]:
    """``(stem, drawn_as, filed_as, shows_lesion, seed)`` of one patient's four images."""
    tail = cohort.seed_tail
    rng = np.random.default_rng([cohort.seed, class_index, number, _PATIENT_SEED_TAG, *tail])
    affected = int(rng.integers(len(SIDES))) if class_index else -1
    both = rng.random() < cohort.lesion_both_views
    seen_in = VIEWS if both else (VIEWS[int(rng.integers(len(VIEWS)))],)
    drafts = []
    for side_index, side in enumerate(SIDES):
        drawn = class_index if side_index == affected else 0
        filed = _filed(cohort, drawn, (class_index, number, side_index))
        for view_index, view in enumerate(VIEWS):
            seed = (cohort.seed, class_index, number, side_index, view_index, *tail)
            stem = f"{CLASS_NAMES[filed]}/{patient}_{side}_{view}"
            drafts.append(
                (stem, CLASS_NAMES[drawn], CLASS_NAMES[filed], drawn > 0 and view in seen_in, seed)
            )
    return drafts


def _filed(cohort: Cohort, drawn: int, breast: tuple[int, int, int]) -> int:
    """The class a breast is filed under: another one, at random, for a share label_noise."""
    if cohort.label_noise <= 0:
        return drawn
    rng = np.random.default_rng([cohort.seed, *breast, _NOISE_SEED_TAG, *cohort.seed_tail])
    if rng.random() >= cohort.label_noise:
        return drawn
    return (drawn + int(rng.integers(1, len(CLASS_NAMES)))) % len(CLASS_NAMES)


def _formats(cohort: Cohort, drafts: list[tuple]) -> dict[tuple[int, ...], str]:
    """``{image seed: format}``: each drawn class's images share ``format_mix`` alike."""
    formats: dict[tuple[int, ...], str] = {}
    for class_index, label in enumerate(CLASS_NAMES):
        seeds = [seed for _, drawn, _, _, seed in drafts if drawn == label]
        rng = np.random.default_rng([cohort.seed, class_index, _FORMAT_SEED_TAG, *cohort.seed_tail])
        formats.update(
            zip(seeds, allocate_formats(len(seeds), cohort.format_mix, rng), strict=True)
        )
    return formats


def allocate_formats(n: int, format_mix: dict[str, float], rng: np.random.Generator) -> list[str]:
    """Assign a file format to each of ``n`` images, matching ``format_mix`` as closely as possible.

    Counts are rounded with the largest-remainder method and then shuffled, so every class gets
    the same format shares and the format carries no information about the class.

    Args:
        n: Number of images.
        format_mix: Fraction of images per format, summing to 1.
        rng: Generator used for the shuffle.

    Returns:
        One format name per image.
    """
    names = sorted(format_mix)
    exact = np.array([format_mix[name] * n for name in names])
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    formats = np.repeat(names, counts)
    return [str(fmt) for fmt in rng.permutation(formats)]

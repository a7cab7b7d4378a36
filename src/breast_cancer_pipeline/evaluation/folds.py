"""Patient-grouped, stratified k-fold assignment of the development images.

The *development* images are those of the manifest's ``train`` and ``val`` splits; the
``test`` split (and any other split, such as an external site) is never folded, so no fold
model sees it in training. :func:`assign_folds` puts each patient (the manifest's ``group``)
in one of ``k`` folds, stratified by label (scikit-learn's ``StratifiedGroupKFold``, seeded);
:func:`fold_roles` gives, for one fold, the role of every development image: ``holdout`` (the
fold, predicted out of fold), ``val`` (patients carved from the other folds, stratified, for
early stopping) or ``train``.

Parameters: ``evaluation.folds`` (k), ``evaluation.fold_seed`` and
``evaluation.fold_val_share`` (share of the training folds' patients used for validation).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The manifest splits that are folded; every other split is left out.
DEVELOPMENT_SPLITS = ("train", "val")
#: Roles of a development image in one fold's run.
ROLES = ("train", "val", "holdout")


def fold_name(fold: int) -> str:
    """The namespace of fold ``fold`` (1-based): ``fold_1``, ``fold_2``..."""
    return f"fold_{fold}"


def development_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest rows of the development splits (train and val), in manifest order."""
    return manifest[manifest["split"].isin(DEVELOPMENT_SPLITS)].reset_index(drop=True)


def _check_patients(rows: pd.DataFrame, n_splits: int, parameter: str, where: str) -> None:
    """Every class needs ``n_splits`` patients, or some part lacks it (its AUROC undefined).

    Raises:
        ValueError: A class has fewer patients than ``n_splits``.
    """
    patients = rows.groupby("label")["group"].nunique()
    short = patients[patients < n_splits]
    if len(short):
        found = ", ".join(f"{label!r} ({n})" for label, n in short.items())
        raise ValueError(
            f"{parameter} needs at least {n_splits} patients (manifest `group`) of every class "
            f"in {where}, but these classes have fewer: {found}. Lower {parameter}, or add "
            "patients of those classes"
        )


def _stratified_groups(rows: pd.DataFrame, n_splits: int, seed: int) -> np.ndarray:
    """The part (0..n_splits-1) of every row: grouped by patient, stratified by label."""
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    part = np.full(len(rows), -1, dtype=int)
    for i, (_, held_out) in enumerate(
        splitter.split(np.zeros(len(rows)), rows["label"], rows["group"])
    ):
        part[held_out] = i
    return part


def assign_folds(manifest: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """Put every development image in one of ``n_folds`` folds, by patient, stratified.

    Args:
        manifest: The (validated) manifest: ``path``, ``label``, ``group``, ``split``.
        n_folds: ``evaluation.folds`` (at least 2).
        seed: ``evaluation.fold_seed``.

    Returns:
        One row per development image, in manifest order: ``path``, ``label``, ``group``,
        ``split`` (its split in the manifest) and ``fold`` (1..``n_folds``).

    Raises:
        ValueError: ``n_folds`` is below 2, or a class has fewer than ``n_folds`` patients.
    """
    if n_folds < 2:
        raise ValueError(f"evaluation.folds = {n_folds}: cross-validation needs 2 or more folds")
    rows = development_rows(manifest)[["path", "label", "group", "split"]].copy()
    _check_patients(rows, n_folds, "evaluation.folds", "the train and val splits")
    rows["fold"] = _stratified_groups(rows, n_folds, seed) + 1
    return rows


def fold_roles(folds: pd.DataFrame, fold: int, val_share: float, seed: int) -> pd.DataFrame:
    """The role of every development image in the run of fold ``fold``.

    The fold's images are held out; from the other folds a share ``val_share`` of the
    patients (stratified by label, about ``round(1 / val_share)`` parts of which one is kept)
    becomes the validation set, the rest trains.

    Args:
        folds: :func:`assign_folds`'s table.
        fold: The fold held out (1-based).
        val_share: ``evaluation.fold_val_share``, in (0, 1).
        seed: ``evaluation.fold_seed`` (offset by the fold, so each fold carves its own).

    Returns:
        ``path`` and ``role`` (``train`` | ``val`` | ``holdout``), in the order of ``folds``.

    Raises:
        ValueError: ``val_share`` is outside (0, 0.5], or the training folds have fewer
            patients of a class than the carving needs.
    """
    if not 0 < val_share <= 0.5:
        raise ValueError(f"evaluation.fold_val_share = {val_share}: must be in (0, 0.5]")
    roles = pd.Series("holdout", index=folds.index, dtype=object)
    rest = folds[folds["fold"] != fold]
    n_parts = max(2, round(1 / val_share))
    _check_patients(
        rest, n_parts, "evaluation.fold_val_share", f"the training folds of {fold_name(fold)}"
    )
    part = _stratified_groups(rest, n_parts, seed + fold)
    roles[rest.index] = np.where(part == 0, "val", "train")
    return pd.DataFrame({"path": folds["path"].to_numpy(), "role": roles.to_numpy()})

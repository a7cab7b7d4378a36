"""Fold assignment: by patient, stratified, every development image in exactly one fold."""

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.evaluation.folds import assign_folds, fold_roles


def manifest(patients: dict[str, int], images: tuple[int, int], seed: int = 0) -> pd.DataFrame:
    """``patients[label]`` patients per class, each with 1..n images, in train/val/test/external.

    Every tenth patient is in test and every tenth (offset) in an external split: neither
    may reach a fold.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for label, n in patients.items():
        for p in range(n):
            group = f"{label}-{p:03d}"
            split = (
                "test"
                if p % 10 == 3
                else "external"
                if p % 10 == 7
                else ("val" if p % 5 else "train")
            )
            for i in range(int(rng.integers(images[0], images[1] + 1))):
                rows.append(
                    {"path": f"{group}/{i}.png", "label": label, "group": group, "split": split}
                )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


CASES = [
    # (patients per class, images per patient, folds)
    ({"benign": 30, "malignant": 30}, (1, 1), 3),
    ({"benign": 40, "malignant": 12}, (1, 4), 3),
    ({"benign": 25, "malignant": 25, "normal": 20}, (2, 3), 5),
    ({"benign": 60, "malignant": 20}, (1, 6), 2),
]


@pytest.mark.parametrize(("patients", "images", "k"), CASES)
def test_folds_group_patients_and_cover_every_development_image_once(patients, images, k):
    table = manifest(patients, images)
    folds = assign_folds(table, k, seed=7)

    development = table[table["split"].isin(["train", "val"])]
    assert sorted(folds["path"]) == sorted(development["path"])  # once each, nothing else
    assert not folds["path"].duplicated().any()
    assert set(folds["fold"]) == set(range(1, k + 1))
    assert folds.groupby("group")["fold"].nunique().max() == 1  # no patient in two folds


@pytest.mark.parametrize(("patients", "images", "k"), CASES)
def test_folds_keep_the_class_balance(patients, images, k):
    folds = assign_folds(manifest(patients, images), k, seed=7)
    overall = folds["label"].value_counts(normalize=True)
    per_fold = folds.groupby("fold")["label"].value_counts(normalize=True).unstack(fill_value=0)
    assert (per_fold > 0).all().all()  # every class in every fold
    # Patients carry up to 6 images each, so shares move by a few points at most.
    assert (per_fold - overall).abs().max().max() < 0.12


def test_folds_are_seeded():
    table = manifest({"benign": 30, "malignant": 30}, (1, 3))
    first = assign_folds(table, 3, seed=1)
    assert first.equals(assign_folds(table, 3, seed=1))
    assert not first["fold"].equals(assign_folds(table, 3, seed=2)["fold"])


@pytest.mark.parametrize(("patients", "images", "k"), CASES)
def test_each_fold_carves_its_validation_from_the_other_folds_by_patient(patients, images, k):
    folds = assign_folds(manifest(patients, images), k, seed=7)
    for fold in range(1, k + 1):
        roles = fold_roles(folds, fold, val_share=0.2, seed=7)
        assert roles["path"].tolist() == folds["path"].tolist()
        role = roles["role"].to_numpy()
        assert ((role == "holdout") == (folds["fold"] == fold).to_numpy()).all()
        by_patient = pd.DataFrame({"group": folds["group"], "role": role})
        assert by_patient.groupby("group")["role"].nunique().max() == 1
        val_labels = set(folds["label"][role == "val"])
        assert val_labels == set(patients)  # every class in validation
        val_patients = by_patient[role == "val"]["group"].nunique()
        rest_patients = by_patient[role != "holdout"]["group"].nunique()
        assert 0.1 < val_patients / rest_patients < 0.3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: assign_folds(t, 1, seed=0), ["evaluation.folds = 1"]),
        (
            lambda t: assign_folds(t, 5, seed=0),
            ["evaluation.folds needs at least 5 patients", "'malignant' (2)"],
        ),
        (
            lambda t: fold_roles(assign_folds(t, 2, seed=0), 1, val_share=0.5, seed=0),
            ["evaluation.fold_val_share needs at least 2 patients", "'malignant' (1)"],
        ),
        (
            lambda t: fold_roles(assign_folds(t, 2, seed=0), 1, val_share=0.7, seed=0),
            ["evaluation.fold_val_share = 0.7"],
        ),
    ],
)
def test_impossible_folds_are_refused_by_parameter(call, message):
    table = manifest({"benign": 20, "malignant": 2}, (1, 2))
    # 2 malignant patients: one per fold with 2 folds, none left to carve a validation from.
    with pytest.raises(ValueError) as error:
        call(table)
    assert all(part in str(error.value) for part in message)

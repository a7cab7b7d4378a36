"""k-fold cross-validation: the namespaced fold pipelines and the out-of-fold table."""

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory
from breast_cancer_pipeline.pipelines.finetune.cross_validation import (
    collect_out_of_fold,
    fold_model_input,
)
from breast_cancer_pipeline.pipelines.finetune.pipeline import cross_validation_pipeline
from tests.params import base_params
from tests.pipelines.finetune.helpers import AUGMENTATION, BEST_HEAD, SELECTED, finetune_params

CLASSES = ("benign", "malignant")
SIZE = 16


def tiny_split(patients: int = 10, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A manifest (train/val/test/external, 1-2 images per patient) and its model input.

    A bright square marks malignant images, so one epoch learns something.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for label in CLASSES:
        for p in range(patients + 4):
            split = "test" if p >= patients + 2 else "external" if p >= patients else "trainval"
            for i in range(1 + p % 2):
                rows.append(
                    {
                        "path": f"{label}/{p:02d}_{i}.png",
                        "label": label,
                        "group": f"{label}-{p:02d}",
                        "split": ("val" if p % 4 == 0 else "train")
                        if split == "trainval"
                        else split,
                    }
                )
    manifest = pd.DataFrame(rows).sort_values("path", ignore_index=True)
    arrays = {"class_names": np.array(CLASSES)}
    for split in ("train", "val", "test", "external"):
        part = manifest[manifest["split"] == split]
        y = (part["label"] == "malignant").to_numpy(dtype=np.int32)
        x = rng.integers(0, 60, (len(part), SIZE, SIZE, 1)).astype(np.uint8)
        x[y == 1, 4:12, 4:12] = 220
        arrays |= {f"x_{split}": x, f"y_{split}": y, f"paths_{split}": part["path"].to_numpy()}
    return manifest, arrays


def test_fold_model_input_draws_each_role_from_train_and_val():
    manifest, arrays = tiny_split()
    development = manifest[manifest["split"].isin(["train", "val"])]
    roles = pd.DataFrame(
        {
            "path": development["path"],
            "role": np.resize(["train", "val", "holdout"], len(development)),
        }
    )
    geometry = {"resize": np.array("letterbox"), "crop_margin": np.array(0.02)}
    fold = fold_model_input({**arrays, **geometry}, roles)
    every = {
        str(p): (x, y)
        for s in ("train", "val")
        for p, x, y in zip(arrays[f"paths_{s}"], arrays[f"x_{s}"], arrays[f"y_{s}"], strict=True)
    }
    for role in ("train", "val", "holdout"):
        expected = roles.loc[roles["role"] == role, "path"].tolist()
        assert fold[f"paths_{role}"].tolist() == expected
        for path, x, y in zip(expected, fold[f"x_{role}"], fold[f"y_{role}"], strict=True):
            assert np.array_equal(x, every[path][0]) and y == every[path][1]
    assert fold["paths_test"].tolist() == arrays["paths_test"].tolist()
    assert not any("external" in key for key in fold)
    # How the images were made reaches each fold model's metadata.
    assert (str(fold["resize"]), float(fold["crop_margin"])) == ("letterbox", 0.02)


def test_an_image_predicted_twice_or_never_is_refused():
    folds = pd.DataFrame({"path": ["a", "b", "c"], "fold": [1, 1, 2]})
    first = pd.DataFrame({"path": ["a", "b"], "label": "x"})
    with pytest.raises(ValueError, match="lack exactly one out-of-fold prediction"):
        collect_out_of_fold(folds, first, pd.DataFrame({"path": ["b"], "label": "x"}))
    table = collect_out_of_fold(folds, first, pd.DataFrame({"path": ["c"], "label": "x"}))
    assert table["path"].tolist() == ["a", "b", "c"] and table["fold"].tolist() == [1, 1, 2]


class Kept(MemoryDataset):
    """A memory dataset the runner does not empty once its consumers ran (read after the run)."""

    def _release(self) -> None:
        pass


def _catalog(tmp_path, manifest, arrays, k):
    evaluation = base_params("evaluation", folds=k)
    finetune = finetune_params(phase1={"epochs": 1}, phase2={"epochs": 1})
    datasets = {
        "validated_manifest": manifest,
        "model_input": arrays,
        "selected_backbone": SELECTED,
        "best_head": BEST_HEAD,
        "augmentation_spec": AUGMENTATION,
        "params:evaluation": evaluation,
        "params:finetune": finetune,
        "params:reporting": base_params("reporting"),
        **{
            f"fold_{i}.finetune_checkpoints": CheckpointDirectory(tmp_path / f"fold_{i}")
            for i in range(1, k + 1)
        },
    }
    return DataCatalog(
        {name: MemoryDataset(value, copy_mode="assign") for name, value in datasets.items()}
    )


@pytest.mark.slow
def test_three_folds_predict_every_development_image_once_and_keep_patients_apart(tmp_path):
    """The acceptance run: 3 namespaced fold pipelines on 16-px images, 1 epoch per phase."""
    manifest, arrays = tiny_split()
    pipeline = cross_validation_pipeline(3)
    assert {n.namespace for n in pipeline.nodes} == {None, "fold_1", "fold_2", "fold_3"}
    # The same finetune node in every fold, on that fold's arrays only.
    finetunes = [n for n in pipeline.nodes if n.name.endswith("finetune_classifier")]
    assert len(finetunes) == 3 and len({n.func for n in finetunes}) == 1
    assert all(n.inputs[0] == f"{n.namespace}.model_input" for n in finetunes)
    # No training node reads the manifest or the full model input (test or external images).
    training_inputs = {i for n in finetunes for i in n.inputs}
    assert not training_inputs & {"model_input", "validated_manifest"}

    catalog = _catalog(tmp_path, manifest, arrays, 3)
    for name in pipeline.all_outputs():
        catalog[name] = Kept(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)

    oof = catalog.load("oof_predictions")
    folds = catalog.load("cv_folds")
    development = manifest[manifest["split"].isin(["train", "val"])]
    assert sorted(oof["path"]) == sorted(development["path"])  # every one, once
    assert not oof["path"].duplicated().any()
    assert set(oof["fold"]) == {1, 2, 3}
    assert folds.groupby("group")["fold"].nunique().max() == 1  # no patient in two folds
    patient = manifest.set_index("path")["group"]
    for i in (1, 2, 3):
        trained = catalog.load(f"fold_{i}.model_input")
        seen = {patient[str(p)] for role in ("train", "val") for p in trained[f"paths_{role}"]}
        held_out = {patient[str(p)] for p in trained["paths_holdout"]}
        assert not seen & held_out
        assert set(map(str, trained["paths_holdout"])) == set(oof.loc[oof["fold"] == i, "path"])
        test = catalog.load(f"fold_{i}.test_predictions")
        assert test["path"].tolist() == arrays["paths_test"].tolist()
    external = set(manifest.loc[manifest["split"] == "external", "path"])
    assert not external & set(oof["path"])
    assert np.allclose(oof[["p_benign", "p_malignant"]].sum(axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_the_served_ensemble_averages_its_members_and_keeps_a_classifier_to_explain(tmp_path):
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset
    from breast_cancer_pipeline.explain import grad_cam
    from breast_cancer_pipeline.modeling import build_classifier, set_seed
    from breast_cancer_pipeline.pipelines.reporting.nodes import package_model

    members = []
    for seed in (0, 1):
        set_seed(seed)
        members.append(build_classifier("small_cnn", 2, SIZE, 1, None, {"dropout": 0.0}))
    metadata = {
        "class_names": list(CLASSES),
        "image_size": SIZE,
        "channels": 1,
        "color_mode": "grayscale",
        "backbone": "small_cnn",
    }
    point = {"positive_class": "malignant", "threshold": 0.5, "rule": "youden"}
    served, exported = package_model(members[0], metadata, point, None, None, members[1])
    assert exported is members[0] and served.model is members[0]
    assert served.config["ensemble_members"] == 2

    x = np.random.default_rng(0).integers(0, 255, (4, SIZE, SIZE, 1)).astype(np.uint8)
    each = [m.predict(x, verbose=0) for m in members]
    assert not np.allclose(each[0], each[1], atol=1e-3)  # two different models
    np.testing.assert_allclose(served.predict_proba(x), np.mean(each, axis=0), atol=1e-5)

    dataset = ServingModelDataset(str(tmp_path / "serving_model"))
    dataset.save(served)
    loaded = dataset.load()
    assert len(loaded.members) == 2
    np.testing.assert_allclose(loaded.predict_proba(x), np.mean(each, axis=0), atol=1e-5)
    heat = grad_cam(loaded.model, x, 1)  # a member, with its nested backbone
    assert heat.shape == (4, SIZE, SIZE)
    # A single model round-trips without members.
    single, _ = package_model(members[0], metadata, point)
    dataset.save(single)
    assert len(dataset.load().members) == 1 and "ensemble_members" not in single.config


def test_each_fold_is_a_group_of_the_finetune_stage_and_one_split_is_unchanged(monkeypatch):
    """What kedro-viz groups by (node namespaces), as a session with ``--params`` builds it."""
    from breast_cancer_pipeline import context as project_context
    from tests.test_environments import PROJECT, _pipelines

    monkeypatch.setattr(project_context, "_active_loader", project_context._active_loader)
    monkeypatch.setattr(project_context, "_built_from", project_context._built_from)
    single = _pipelines(PROJECT, "demo")
    assert [n.name for n in single["finetune"].nodes] == ["finetune.finetune_classifier"]
    reporting = {n.name for n in single["reporting"].nodes}
    assert not any("cv" in name or "ensemble" in name for name in reporting)

    folded = _pipelines(PROJECT, "demo", {"evaluation": {"folds": 3, "ensemble": True}})
    namespaces = {n.namespace for n in folded["finetune"].nodes}
    assert namespaces == {"finetune", "finetune.fold_1", "finetune.fold_2", "finetune.fold_3"}
    assert "oof_predictions" in folded["finetune"].all_outputs()
    added = {n.name for n in folded["reporting"].nodes} - reporting
    assert added == {
        "reporting.cross_validation_summary",
        "reporting.plot_cv_folds",
        "reporting.predict_single_model_test",
    }
    # The ensemble's temperature and threshold are fitted on the out-of-fold predictions.
    assert reporting - {n.name for n in folded["reporting"].nodes} == {
        "reporting.predict_val_split"
    }
    fit = next(n for n in folded["reporting"].nodes if n.name == "reporting.fit_calibration")
    assert fit.inputs[0] == "oof_predictions"
    package = next(n for n in folded["reporting"].nodes if n.name == "reporting.package_model")
    assert package.inputs[0] == "fold_1.classifier" and "fold_3.classifier" in package.inputs


def tiled(arrays: dict[str, np.ndarray], per_image: int = 3) -> dict[str, np.ndarray]:
    """``arrays`` as tiles: each image cut into ``per_image`` tiles, each tile marked by its
    image's row and its own number (pixel [0, 0] and [0, 1])."""
    from breast_cancer_pipeline.tiles import TileSpec, spec_arrays

    out = {"class_names": arrays["class_names"], **spec_arrays(TileSpec(SIZE, SIZE))}
    for split in ("train", "val", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        tiles = np.repeat(x, per_image, axis=0)
        tiles[:, 0, 0, 0] = np.repeat(np.arange(len(x)), per_image)
        tiles[:, 0, 1, 0] = np.tile(np.arange(per_image), len(x))
        out |= {
            f"x_{split}": tiles,
            f"y_{split}": np.repeat(y, per_image),
            f"tile_image_{split}": np.repeat(np.arange(len(x)), per_image),
            f"tile_boxes_{split}": np.tile([[0, 0, SIZE, SIZE]], (len(tiles), 1)),
            f"paths_{split}": arrays[f"paths_{split}"],
            f"image_y_{split}": y,
        }
    return out


def test_a_fold_takes_whole_images_with_all_their_tiles():
    manifest, arrays = tiny_split()
    tiles = tiled(arrays)
    development = manifest[manifest["split"].isin(["train", "val"])]
    roles = pd.DataFrame(
        {"path": development["path"], "role": np.resize(["holdout", "train"], len(development))}
    )
    fold = fold_model_input(tiles, roles)
    source = {str(p): (s, i) for s in ("train", "val") for i, p in enumerate(arrays[f"paths_{s}"])}
    for role in ("train", "holdout"):
        paths = roles.loc[roles["role"] == role, "path"].tolist()
        assert fold[f"paths_{role}"].tolist() == paths
        assert fold[f"tile_image_{role}"].tolist() == np.repeat(np.arange(len(paths)), 3).tolist()
        origin = [source[p] for p in paths]
        marks = fold[f"x_{role}"][:, 0, :2, 0].tolist()
        assert marks == [[i, k] for _, i in origin for k in range(3)]
        labels = [int(tiles[f"image_y_{s}"][i]) for s, i in origin]
        assert fold[f"image_y_{role}"].tolist() == labels
        assert fold[f"y_{role}"].tolist() == np.repeat(labels, 3).tolist()
    assert len(fold["x_val"]) == 0 and fold["paths_val"].tolist() == []
    assert fold["tile_image_test"].tolist() == tiles["tile_image_test"].tolist()
    assert str(fold["tiles"]) == str(tiles["tiles"])

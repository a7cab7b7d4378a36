"""The external test site (``ingestion.external_dir``): ingested as split ``external``."""

import pytest
from kedro.io import DatasetError

from breast_cancer_pipeline.datasets import ImageFolderDataset

from .helpers import assert_grouped, image_bytes, ingest, params, two_classes, write_tree


def test_external_site_is_its_own_split_and_leaves_the_internal_split_unchanged(tmp_path):
    src = write_tree(tmp_path / "source", two_classes(10))
    # Same relative paths as the source, other pixels, a provider split that is not kept.
    site = {
        f"{label}/{i}.png": image_bytes(500 + 10 * c + i)
        for c, label in enumerate("ab")
        for i in range(3)
    }
    site["train/a/x.png"] = image_bytes(999)
    external = write_tree(tmp_path / "site", {k: v for k, v in site.items() if "train" not in k})
    alone = ingest(src, tmp_path / "out_alone", params())
    both = ingest(src, tmp_path / "out_both", params(), external=external)

    ext = both.manifest[both.manifest["split"] == "external"]
    assert sorted(ext["path"]) == sorted(f"external/{k}" for k in site if "train" not in k)
    assert (ext["source_path"] == ext["path"]).all()
    assert ext["group"].str.startswith("external/").all()
    assert set(ext["split_origin"]) == {"external"}
    assert ext.groupby("label").size().to_dict() == {"a": 3, "b": 3}
    internal = both.manifest[both.manifest["split"] != "external"].reset_index(drop=True)
    assert internal.equals(alone.manifest)  # the training source is split as before
    stored = both.store.load()
    assert all(path in stored for path in ext["path"])
    assert_grouped(internal)


def test_external_site_without_two_classes_names_external_dir(tmp_path):
    src = write_tree(tmp_path / "source", two_classes(4))
    site = write_tree(tmp_path / "site", {"a/1.png": image_bytes(77)})
    with pytest.raises(ValueError, match="ingestion.external_dir hold 1 class"):
        ingest(src, tmp_path / "out", params(), external=site)


def test_no_external_dir_is_an_empty_listing_and_a_missing_one_is_named(tmp_path):
    assert ImageFolderDataset(None).load() == {}
    missing = ImageFolderDataset(str(tmp_path / "nope"), setting="ingestion.external_dir")
    with pytest.raises(DatasetError, match=r"set ingestion.external_dir \(e.g. kedro run"):
        missing.load()

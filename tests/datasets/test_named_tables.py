import pandas as pd
import pytest
from kedro.io import DatasetError

from breast_cancer_pipeline.datasets import NamedTablesDataset


def test_one_file_per_name_beside_other_files_and_the_last_saves_tables_only(tmp_path):
    (tmp_path / "predictions.csv").write_text("other\n")
    dataset = NamedTablesDataset(str(tmp_path), pattern="predictions_{name}.csv")
    assert not dataset.exists()
    patient = pd.DataFrame({"group": ["007", "p2"], "p_malignant": [0.4, 1.0]})
    dataset.save({"patient": patient, "breast": patient.assign(laterality="L")})
    loaded = dataset.load()
    assert sorted(loaded) == ["breast", "patient"]
    assert loaded["patient"]["group"].tolist() == ["007", "p2"]  # keys read as written

    dataset.save({"patient": patient})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "predictions.csv",
        "predictions_patient.csv",
    ]


def test_a_failed_save_keeps_the_old_table_and_bad_names_are_refused(tmp_path, monkeypatch):
    import breast_cancer_pipeline.datasets._atomic as atomic

    dataset = NamedTablesDataset(str(tmp_path), pattern="predictions_{name}.csv")
    dataset.save({"patient": pd.DataFrame({"group": ["a"]})})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save({"patient": pd.DataFrame({"group": ["b"]})})
    assert dataset.load()["patient"]["group"].tolist() == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions_patient.csv"]
    with pytest.raises(DatasetError, match="cannot be a file name"):
        dataset.save({"../x": pd.DataFrame()})
    with pytest.raises(DatasetError, match="must hold"):
        NamedTablesDataset(str(tmp_path), pattern="predictions.csv")


def test_the_catalog_entry_writes_into_its_folder_once_kedro_made_its_paths_absolute(tmp_path):
    """Kedro turns a catalog's ``path``, ``filepath`` and ``filename`` into project paths."""
    import yaml
    from kedro.framework.context.context import _convert_paths_to_absolute_posix
    from kedro.io import AbstractDataset

    from tests.params import PROJECT

    config = yaml.safe_load((PROJECT / "conf" / "base" / "catalog.yml").read_text())
    entry = _convert_paths_to_absolute_posix(tmp_path, config["batch_level_predictions"])
    dataset = AbstractDataset.from_config("batch_level_predictions", entry)
    dataset.save({"patient": pd.DataFrame({"group": ["p1"]})})
    assert [p.name for p in (tmp_path / "data" / "07_model_output").iterdir()] == [
        "predictions_patient.csv"
    ]

"""ImageFolderDataset (source listing) and ImageStoreDataset (incremental, atomic store)."""

import json
import pickle
from dataclasses import dataclass

import pytest
from kedro.io import DatasetError

from breast_cancer_pipeline.datasets import (
    FileTask,
    ImageFolderDataset,
    ImageStoreDataset,
    SourceFile,
    StorePlan,
)


@dataclass(frozen=True)
class Echo:
    """A picklable task: the file holds ``text``; ``None`` fails."""

    text: str | None

    def __call__(self):
        if self.text is None:
            return None, {"error": "bad"}
        return self.text.encode(), {"length": len(self.text)}


def _store(tmp_path, prune=True):
    return ImageStoreDataset(
        path=str(tmp_path / "store"), journal=str(tmp_path / "journal.jsonl"), prune=prune
    )


def test_folder_lists_files_with_size_and_mtime_and_is_read_only(tmp_path):
    (tmp_path / "a b" / "c").mkdir(parents=True)
    (tmp_path / "a b" / "c" / "x (1).png").write_bytes(b"12345")
    (tmp_path / "y.txt").write_bytes(b"")
    files = ImageFolderDataset(str(tmp_path)).load()
    assert list(files) == ["a b/c/x (1).png", "y.txt"]
    source = files["a b/c/x (1).png"]
    assert source() == b"12345" and source.size == 5 and source.mtime_ns > 0
    assert pickle.loads(pickle.dumps(source)) == source
    with pytest.raises(DatasetError, match="read-only"):
        ImageFolderDataset(str(tmp_path)).save({})
    with pytest.raises(DatasetError, match="ingestion.source_dir"):
        ImageFolderDataset(str(tmp_path / "missing")).load()
    assert isinstance(source, SourceFile)


def test_store_writes_reuses_by_key_and_records(tmp_path):
    store = _store(tmp_path)
    plan = {"a/x.txt": FileTask("k1", Echo("hello")), "b/y.txt": FileTask("k2", Echo(None))}
    store.save(StorePlan(plan))
    assert store.last_save == {"planned": 2, "skipped": 0, "failed": 1, "produced": 1}
    loaded = store.load()
    assert list(loaded) == ["a/x.txt"] and loaded["a/x.txt"]() == b"hello"
    records = loaded.records.set_index("path")
    assert records.loc["a/x.txt", "length"] == 5 and records.loc["b/y.txt", "error"] == "bad"
    assert not records.loc["b/y.txt", "ok"]

    store.save(StorePlan({"a/x.txt": FileTask("k1", Echo("changed?"))}))
    assert store.last_save["skipped"] == 1 and store.load()["a/x.txt"]() == b"hello"
    store.save(StorePlan({"a/x.txt": FileTask("k1b", Echo("changed"))}))
    assert store.last_save["produced"] == 1 and store.load()["a/x.txt"]() == b"changed"
    # A file damaged on disk (size differs from the journal) is produced again.
    (tmp_path / "store/a/x.txt").write_bytes(b"x")
    store.save(StorePlan({"a/x.txt": FileTask("k1b", Echo("changed"))}))
    assert store.last_save["produced"] == 1
    # A key of None is never reused.
    store.save(StorePlan({"a/x.txt": FileTask(None, Echo("changed"))}))
    assert store.last_save["produced"] == 1


def test_store_prunes_unplanned_files_and_compacts_the_journal(tmp_path):
    store = _store(tmp_path)
    store.save(StorePlan({"a/x": FileTask("1", Echo("x")), "b/y": FileTask("2", Echo("y"))}))
    store.save(StorePlan({"a/x": FileTask("1", Echo("x"))}))
    assert list(store.load()) == ["a/x"] and not (tmp_path / "store/b").exists()
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["a/x"]


def test_store_refuses_paths_outside_and_other_data(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(DatasetError, match="must be relative"):
        store.save(StorePlan({"../evil": FileTask("1", Echo("x"))}))
    with pytest.raises(DatasetError, match="saves a StorePlan"):
        store.save({"a": b"x"})
    with pytest.raises(DatasetError, match="run the ingestion pipeline"):
        store.load()


def test_store_removes_leftover_temporary_files(tmp_path):
    store = _store(tmp_path)
    (tmp_path / "store/a").mkdir(parents=True)
    (tmp_path / "store/a/.x.abc.part").write_bytes(b"half")
    store.save(StorePlan({"a/x": FileTask("1", Echo("x"))}, workers=2))
    assert sorted(p.name for p in (tmp_path / "store/a").iterdir()) == ["x"]


def test_store_uses_a_fork_server_when_other_threads_run(tmp_path):
    """Forking while another thread runs can deadlock the child: a fork server is used."""
    import threading

    from breast_cancer_pipeline.datasets import image_store

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        plan = {f"f{i}": FileTask(str(i), Echo(f"text {i}")) for i in range(3)}
        assert image_store._pool_context(plan).get_start_method() == "forkserver"
        store = _store(tmp_path)
        store.save(StorePlan(plan, workers=2))
    finally:
        stop.set()
        thread.join()
    assert {path: store.load()[path]() for path in store.load()} == {
        f"f{i}": f"text {i}".encode() for i in range(3)
    }
    assert image_store._pool_context(plan).get_start_method() == "fork"

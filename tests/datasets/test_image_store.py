"""ImageFolderDataset (source listing) and ImageStoreDataset (incremental, two-phase store)."""

import json
import logging
import os
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from kedro.io import DatasetError

from breast_cancer_pipeline.datasets import (
    FileTask,
    ImageFolderDataset,
    ImageStoreDataset,
    SourceFile,
    StoreCommit,
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


@dataclass(frozen=True)
class Pages:
    """A picklable task producing several files ``<stem>.page<k>``."""

    stem: str
    n: int

    def __call__(self):
        return {f"{self.stem}.page{k}": f"page {k}".encode() for k in range(self.n)}, {}


def _store(tmp_path):
    return ImageStoreDataset(path=str(tmp_path / "store"), journal=str(tmp_path / "journal.jsonl"))


def _plan(files, workers=1, progress_seconds=10.0):
    return StorePlan(files, workers=workers, tasks_per_worker=4, progress_seconds=progress_seconds)


def _save_and_commit(store, files, **kwargs):
    store.save(_plan(files, **kwargs))
    store.save(StoreCommit(referenced=()))


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
    store.save(_plan(plan))
    assert store.last_save == {"planned": 2, "skipped": 0, "failed": 1, "produced": 1}
    loaded = store.load()
    assert list(loaded) == ["a/x.txt"] and loaded["a/x.txt"]() == b"hello"
    records = loaded.records.set_index("path")
    assert records.loc["a/x.txt", "length"] == 5 and records.loc["b/y.txt", "error"] == "bad"
    assert not records.loc["b/y.txt", "ok"]

    store.save(_plan({"a/x.txt": FileTask("k1", Echo("changed?"))}))
    assert store.last_save["skipped"] == 1 and store.load()["a/x.txt"]() == b"hello"
    _save_and_commit(store, {"a/x.txt": FileTask("k1b", Echo("changed"))})
    assert store.last_save["produced"] == 1 and store.load()["a/x.txt"]() == b"changed"
    # A committed file damaged on disk (size differs from the journal) is produced again.
    (tmp_path / "store/a/x.txt").write_bytes(b"x")
    store.save(_plan({"a/x.txt": FileTask("k1b", Echo("changed"))}))
    assert store.last_save["produced"] == 1
    # A key of None is never reused.
    store.save(_plan({"a/x.txt": FileTask(None, Echo("changed"))}))
    assert store.last_save["produced"] == 1


def test_save_stages_and_the_commit_swaps_in_and_removes_superseded_files(tmp_path):
    store = _store(tmp_path)
    _save_and_commit(store, {"a/x": FileTask("1", Echo("x")), "b/y": FileTask("2", Echo("y"))})
    assert (tmp_path / "store/b/y").read_bytes() == b"y"

    store.save(_plan({"a/x": FileTask("1b", Echo("new x"))}))
    # Phase 1 changed nothing the previous manifest points at...
    assert (tmp_path / "store/a/x").read_bytes() == b"x"
    assert (tmp_path / "store/b/y").read_bytes() == b"y"
    # ...while loading gives the newest version of every path.
    assert store.load()["a/x"]() == b"new x"
    with pytest.raises(DatasetError, match="did not produce"):
        store.save(StoreCommit(referenced=("b/y",)))
    store.save(StoreCommit(referenced=("a/x",)))
    assert list(store.load()) == ["a/x"] and not (tmp_path / "store/b").exists()
    assert (tmp_path / "store/a/x").read_bytes() == b"new x"
    assert not (tmp_path / "store/.staging").exists()
    lines = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [line.get("path") for line in lines] == ["a/x", None]  # compacted, marked complete
    assert lines[0]["staged"] is False


def test_a_journal_of_the_first_format_is_read_and_its_files_reused(tmp_path):
    (tmp_path / "store/a").mkdir(parents=True)
    (tmp_path / "store/a/x").write_bytes(b"hello")
    line = {"path": "a/x", "key": "1", "ok": True, "bytes": 5, "record": {"n": 1}, "staged": False}
    (tmp_path / "journal.jsonl").write_text(json.dumps(line) + "\n")
    store = _store(tmp_path)
    assert store.load()["a/x"]() == b"hello" and store.load().records["n"].tolist() == [1]
    store.save(_plan({"a/x": FileTask("1", Echo("hello"))}))
    assert store.last_save["skipped"] == 1


def test_a_corrupted_staged_file_of_the_same_size_is_produced_again(tmp_path):
    store = _store(tmp_path)
    store.save(_plan({"a/x": FileTask("1", Echo("hello")), "a/y": FileTask("2", Echo("world"))}))
    staged = tmp_path / "store/.staging/a/x"
    staged.write_bytes(b"jello")  # same size, other bytes
    store.save(_plan({"a/x": FileTask("1", Echo("hello")), "a/y": FileTask("2", Echo("world"))}))
    assert store.last_save == {"planned": 2, "skipped": 1, "failed": 0, "produced": 1}
    assert store.load()["a/x"]() == b"hello"


def test_a_task_may_produce_several_files_and_two_entries_may_not_share_one(tmp_path):
    store = _store(tmp_path)
    _save_and_commit(store, {"scan": FileTask("1", Pages("scan", 3))})
    assert list(store.load()) == ["scan.page0", "scan.page1", "scan.page2"]
    assert store.load()["scan.page2"]() == b"page 2"
    clash = {"scan": FileTask("1", Pages("scan", 2)), "scan.page1": FileTask("2", Echo("x"))}
    with pytest.raises(DatasetError, match="both produce 'scan.page1'"):
        store.save(_plan(clash))


def test_store_logs_progress_with_count_rate_and_eta(tmp_path, caplog):
    plan = {f"f{i:03d}": FileTask(str(i), Echo(f"text {i}")) for i in range(40)}
    with caplog.at_level(logging.INFO, logger="breast_cancer_pipeline.datasets.image_store"):
        _store(tmp_path).save(_plan(plan, progress_seconds=0.0))
    lines = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert len(lines) == 39  # one per result but the last (then the final line)
    assert "1/40 files" in lines[0] and "39/40 files" in lines[-1] and "files/s" in lines[0]


def test_store_refuses_paths_outside_and_other_data(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(DatasetError, match="must be relative"):
        store.save(_plan({"../evil": FileTask("1", Echo("x"))}))
    with pytest.raises(DatasetError, match="saves a StorePlan"):
        store.save({"a": b"x"})
    with pytest.raises(DatasetError, match="run the ingestion pipeline"):
        store.load()


def test_store_removes_leftover_temporary_files(tmp_path):
    store = _store(tmp_path)
    (tmp_path / "store/a").mkdir(parents=True)
    (tmp_path / "store/a/.x.abc.part").write_bytes(b"half")
    _save_and_commit(store, {"a/x": FileTask("1", Echo("x"))}, workers=2)
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
        store.save(_plan(plan, workers=2))
    finally:
        stop.set()
        thread.join()
    assert {path: store.load()[path]() for path in store.load()} == {
        f"f{i}": f"text {i}".encode() for i in range(3)
    }
    # Back to fork once the thread is gone, unless the process has threads of its own (an
    # xdist worker's execnet threads under `make test`).
    alone = threading.active_count() == 1
    assert image_store._pool_context(plan).get_start_method() == ("fork" if alone else "forkserver")


# -- the folder walk: loops and links that leave the folder -----------------------------------


def test_two_symlink_loops_are_listed_once_with_one_warning(tmp_path, caplog):
    (tmp_path / "benign").mkdir()
    (tmp_path / "benign/x.png").write_bytes(b"x")
    os.symlink(".", tmp_path / "a")
    os.symlink(".", tmp_path / "b")
    os.symlink("..", tmp_path / "benign/up")
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        files = ImageFolderDataset(str(tmp_path)).load()
    assert time.perf_counter() - started < 5
    assert list(files) == ["benign/x.png"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert all(f"{link!r} -> " in warnings[0] for link in ("a", "b", "benign/up"))


def test_links_outside_the_folder_are_refused_unless_allowed(tmp_path):
    outside = tmp_path / "outside"
    (outside / "more").mkdir(parents=True)
    (outside / "secret.png").write_bytes(b"secret")
    (outside / "more/y.png").write_bytes(b"y")
    source = tmp_path / "source"
    (source / "benign").mkdir(parents=True)
    (source / "benign/x.png").write_bytes(b"x")
    os.symlink(outside / "secret.png", source / "benign/link.png")
    os.symlink(outside / "more", source / "malignant")
    os.symlink(source / "benign/x.png", source / "benign/inside.png")

    files = ImageFolderDataset(str(source)).load()
    assert list(files) == ["benign/inside.png", "benign/x.png"]
    assert files.refused_links == {
        "benign/link.png": str(outside / "secret.png"),
        "malignant": str(outside / "more"),
    }
    assert files.folder_links == {"malignant"}

    allowed = ImageFolderDataset(str(source), follow_external_links=True).load()
    assert list(allowed) == [
        "benign/inside.png",
        "benign/link.png",
        "benign/x.png",
        "malignant/y.png",
    ]
    assert allowed["benign/link.png"]() == b"secret" and not allowed.refused_links


def test_importing_the_datasets_package_imports_neither_mlflow_nor_tensorflow():
    code = (
        "import sys, breast_cancer_pipeline.datasets as d; d.ImageStoreDataset; "
        "d.ImageFolderDataset; d.BinaryFileDataset; d.NumpyArraysDataset; "
        "print(sorted(m for m in ('mlflow', 'kedro_mlflow', 'tensorflow', 'keras') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- workers end with the run that made them (issue 26, item 8) -------------------------------

_ORPHAN_SCRIPT = """
import multiprocessing, os, sys, time
from breast_cancer_pipeline.datasets.image_store import worker_pool

pool = worker_pool(2, multiprocessing.get_context(sys.argv[1]))
for _ in range(4):
    pool.submit(time.sleep, 0.3)
print(" ".join(str(p) for p in pool._processes), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_workers_die_when_the_run_is_killed(tmp_path, method):
    """`kill -9` of a conversion run leaves no idle worker behind (PR_SET_PDEATHSIG)."""
    import signal
    import subprocess
    import sys
    import time

    run = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, method], stdout=subprocess.PIPE, text=True
    )
    workers = [int(p) for p in run.stdout.readline().split()]
    assert len(workers) == 2 and all(_running(p) for p in workers)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    deadline = time.monotonic() + 30  # the kernel signals them at once; 30 s for a busy machine
    while any(_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(p) for p in workers)

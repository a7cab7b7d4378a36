"""An incremental, atomic folder of derived files, produced in parallel when saved.

Ingestion turns thousands of source images into PNGs. Holding every PNG in memory until a
``PartitionedDataset`` writes them does not scale (10,000 mammograms are about 25 GB of PNG),
and redoing the whole conversion after a crash or for one new file wastes hours. So the node
returns a *plan*, ``{file path: FileTask}``, where each task is a small picklable callable
(Kedro's "lazy saving", made parallel and incremental), and :class:`ImageStoreDataset` makes
the folder match it:

* a task whose ``key`` (e.g. source size + mtime + settings) equals the one recorded for an
  existing file of the right size is skipped: a rerun converts only new or changed sources;
* the other tasks run in a process pool; each worker writes its file under ``.staging/``
  (to a temporary name, then renamed: atomic), so only small result records travel back and
  no file is ever half-written under a real name;
* every finished task is appended to a journal (JSON lines, flushed each time), so a run that
  is killed keeps the work already done: the rerun reuses the staged files and completes the
  rest;
* only when every task has run are the staged files moved into place (renames), files that
  are no longer planned removed and the journal compacted (written atomically). Until then a
  killed run has changed no file that the previous run's manifest points at.

Loading returns :class:`StoredFiles`: ``{file path: loader}`` for the files on disk (what the
training stages read) with the journal's records as a DataFrame in ``.records``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from breast_cancer_pipeline.datasets._atomic import atomic_path

logger = logging.getLogger(__name__)

_TMP_SUFFIX = ".part"
_STAGING = ".staging"


@dataclass(frozen=True)
class FileTask:
    """How to produce one file of the store.

    Attributes:
        key: Fingerprint of everything the file depends on. A file whose recorded key is equal
            is reused; ``None`` means "always produce".
        produce: Picklable callable returning ``(content, record)``: the file's bytes, or
            ``None`` when it cannot be produced (no file is kept), and a JSON-serialisable dict
            stored in the journal (statistics, or the reason of a failure).
    """

    key: str | None
    produce: Callable[[], tuple[bytes | None, dict[str, Any]]]


@dataclass(frozen=True)
class StorePlan:
    """What the store must hold after a save.

    Attributes:
        files: ``{path relative to the store: task}``.
        workers: Worker processes for the tasks to run (1: in this process).
    """

    files: Mapping[str, FileTask]
    workers: int = 1


class StoredFiles(Mapping[str, Callable[[], bytes]]):
    """``{path: loader}`` of the store's files, plus the journal records in ``.records``.

    Attributes:
        records: One row per journaled path: ``path``, ``key``, ``ok``, ``bytes`` and the
            fields of the task's record.
    """

    def __init__(self, root: Path, paths: list[str], records: pd.DataFrame) -> None:
        """Create the view (done by :meth:`ImageStoreDataset.load`)."""
        self._root = root
        self._paths = paths
        self._set = set(paths)
        self.records = records

    def __getitem__(self, path: str) -> Callable[[], bytes]:
        if path not in self._set:
            raise KeyError(path)
        return _FileLoader(str(self._root / path))

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


@dataclass(frozen=True)
class _FileLoader:
    path: str

    def __call__(self) -> bytes:
        return Path(self.path).read_bytes()


class ImageStoreDataset(AbstractDataset[StorePlan, StoredFiles]):
    """A folder of files produced from a :class:`StorePlan`: incremental, parallel, atomic.

    Example (``catalog.yml``)::

        intermediate_images:
          type: breast_cancer_pipeline.datasets.ImageStoreDataset
          path: data/02_intermediate/images
          journal: data/02_intermediate/conversion_index.jsonl
    """

    def __init__(
        self,
        path: str,
        journal: str,
        prune: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            path: The folder of produced files.
            journal: The JSON-lines journal of produced files (keep it outside ``path``).
            prune: Remove files that the saved plan does not list.
            metadata: Free-form metadata, ignored by the dataset.
        """
        self._root = Path(PurePosixPath(str(path)))
        self._journal = Path(PurePosixPath(str(journal)))
        self._prune = prune
        self.metadata = metadata
        self.last_save: dict[str, int] = {}

    # ------------------------------------------------------------------ load

    def load(self) -> StoredFiles:
        """The files on disk and the journal's records.

        Raises:
            DatasetError: The folder does not exist (nothing was saved yet).
        """
        if not self._root.is_dir():
            raise DatasetError(f"no files at '{self._root}': run the ingestion pipeline first")
        entries = self._read_journal()
        records = pd.DataFrame(
            [
                {"path": p, "key": e["key"], "ok": e["ok"], "bytes": e["bytes"], **e["record"]}
                for p, e in sorted(entries.items())
            ]
        )
        if records.empty:
            records = pd.DataFrame(columns=["path", "key", "ok", "bytes"])
        return StoredFiles(self._root, sorted(self._walk_files()), records)

    # ------------------------------------------------------------------ save

    def save(self, data: StorePlan) -> None:
        """Make the folder hold exactly the plan's files, producing only what changed.

        Raises:
            DatasetError: ``data`` is not a :class:`StorePlan`, or a path leaves the folder.
        """
        if not isinstance(data, StorePlan):
            raise DatasetError(
                f"ImageStoreDataset '{self._root}' saves a StorePlan, got {type(data).__name__}"
            )
        for path in data.files:
            parts = PurePosixPath(path).parts
            if PurePosixPath(path).is_absolute() or ".." in parts or not parts:
                raise DatasetError(f"store path {path!r} must be relative, inside '{self._root}'")
        started = time.perf_counter()
        self._root.mkdir(parents=True, exist_ok=True)
        self._remove_partial_files()
        entries = self._read_journal()
        pending = {p: t for p, t in data.files.items() if not self._reusable(p, t, entries.get(p))}
        reused = len(data.files) - len(pending)
        logger.info(
            "Image store %s: %d file(s) planned, %d unchanged (skipped), %d to produce",
            self._root,
            len(data.files),
            reused,
            len(pending),
        )
        self._journal.parent.mkdir(parents=True, exist_ok=True)
        failed = 0
        with open(self._journal, "a", encoding="utf-8") as journal:
            for path, key, content_bytes, record in self._run(pending, data.workers):
                ok = content_bytes is not None
                failed += not ok
                entry = {"key": key, "ok": ok, "bytes": content_bytes or 0, "record": record}
                entries[path] = {**entry, "staged": ok}
                journal.write(json.dumps({"path": path, **entries[path]}) + "\n")
                journal.flush()
        self._commit(entries, set(data.files))
        if self._prune:
            self._remove_unplanned(set(data.files))
            entries = {p: e for p, e in entries.items() if p in data.files}
        self._write_journal(entries)
        self.last_save = {"planned": len(data.files), "skipped": reused, "failed": failed}
        self.last_save["produced"] = len(pending) - failed
        logger.info(
            "Image store %s: produced %d, skipped %d unchanged, %d failed, in %.1f s",
            self._root,
            len(pending) - failed,
            reused,
            failed,
            time.perf_counter() - started,
        )

    def _commit(self, entries: dict[str, dict[str, Any]], planned: set[str]) -> None:
        """Move the staged files into place; remove the files of sources that failed.

        Until this point a killed run has changed nothing that the previous run's outputs
        point at: new files wait under ``.staging/`` (and are reused by the next run).
        """
        staging = self._root / _STAGING
        for path, entry in entries.items():
            if path not in planned:
                continue
            if entry.get("staged"):
                target = self._root / path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / path, target)
                entry["staged"] = False
            elif not entry["ok"]:
                _unlink(self._root / path)  # the file of an earlier, good version
        shutil.rmtree(staging, ignore_errors=True)

    def _run(
        self, pending: Mapping[str, FileTask], workers: int
    ) -> Iterator[tuple[str, str | None, int | None, dict[str, Any]]]:
        """Run the tasks; yield ``(path, key, bytes written or None, record)`` as each ends."""
        root = str(self._root / _STAGING)
        if workers <= 1 or len(pending) <= 1:
            for path, task in pending.items():
                yield _materialise(root, path, task)
            return
        context = _pool_context(pending)
        tasks = iter(pending.items())
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            # At most a few tasks in flight per worker: memory stays flat for any dataset size.
            running: set[Future] = set()
            try:
                while True:
                    for path, task in tasks:
                        running.add(pool.submit(_materialise, root, path, task))
                        if len(running) >= 4 * workers:
                            break
                    if not running:
                        return
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            except BaseException:
                for future in running:
                    future.cancel()
                raise

    # ------------------------------------------------------------------ helpers

    def _reusable(self, path: str, task: FileTask, entry: dict[str, Any] | None) -> bool:
        if task.key is None or entry is None or not entry["ok"] or entry["key"] != task.key:
            return False
        where = self._root / _STAGING if entry.get("staged") else self._root
        try:
            return (where / path).stat().st_size == entry["bytes"]
        except OSError:
            return False

    def _read_journal(self) -> dict[str, dict[str, Any]]:
        """The last entry per path; a line cut by a crash is ignored."""
        entries: dict[str, dict[str, Any]] = {}
        if not self._journal.is_file():
            return entries
        with open(self._journal, encoding="utf-8") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                    path = item.pop("path")
                    entries[path] = {k: item[k] for k in ("key", "ok", "bytes", "record")}
                    entries[path]["staged"] = bool(item.get("staged", False))
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
        return entries

    def _write_journal(self, entries: dict[str, dict[str, Any]]) -> None:
        with atomic_path(self._journal) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            for path, entry in sorted(entries.items()):
                handle.write(json.dumps({"path": path, **entry}) + "\n")

    def _walk_files(self) -> Iterator[str]:
        """The store's files: hidden files and folders (``.staging``, temporaries) excluded."""
        for folder, dirs, names in os.walk(self._root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in names:
                if not name.startswith("."):
                    yield Path(folder, name).relative_to(self._root).as_posix()

    def _remove_partial_files(self) -> None:
        """Delete temporary files left by a killed run (never visible under a real name)."""
        for folder, _, names in os.walk(self._root):
            for name in names:
                if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                    _unlink(Path(folder, name))

    def _remove_unplanned(self, planned: set[str]) -> None:
        removed = 0
        for path in list(self._walk_files()):
            if path not in planned:
                _unlink(self._root / path)
                removed += 1
        for folder, _, _ in sorted(os.walk(self._root), key=lambda w: -len(w[0])):
            if Path(folder) != self._root and not os.listdir(folder):
                os.rmdir(folder)
        if removed:
            logger.info("Image store %s: removed %d file(s) no longer planned", self._root, removed)

    def _exists(self) -> bool:
        return self._root.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._root), "journal": str(self._journal), "prune": self._prune}


def _pool_context(pending: Mapping[str, FileTask]) -> multiprocessing.context.BaseContext:
    """``fork`` while this process has one thread (fast, safe), else ``forkserver``.

    Forking a process in which other threads run (a tracking client, a progress bar) can
    deadlock the child on a lock such a thread held; a fork server avoids that, at the price of
    importing the task's modules once (a few seconds) in the server.
    """
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    modules = {type(t.produce).__module__ for t in pending.values()} | {__name__}
    modules = sorted(modules - {"__main__"})
    context.set_forkserver_preload(modules)
    return context


def _materialise(
    root: str, path: str, task: FileTask
) -> tuple[str, str | None, int | None, dict[str, Any]]:
    """Produce one file and rename it into place (runs in a worker process)."""
    content, record = task.produce()
    if content is None:
        return path, task.key, None, record
    target = Path(root, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, target)
    except BaseException:
        _unlink(Path(tmp))
        raise
    return path, task.key, len(content), record


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

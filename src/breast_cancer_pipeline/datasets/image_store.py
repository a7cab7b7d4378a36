"""An incremental, atomic folder of derived files, produced in parallel, swapped in in two phases.

Ingestion turns thousands of source images into PNGs. Holding every PNG in memory until a
``PartitionedDataset`` writes them does not scale (10,000 mammograms are about 25 GB of PNG),
and redoing the whole conversion after a crash or for one new file wastes hours. So the node
returns a *plan*, ``{entry path: FileTask}``, where each task is a small picklable callable
(Kedro's "lazy saving", made parallel and incremental), and :class:`ImageStoreDataset` carries
it out in two phases.

**Saving a** :class:`~breast_cancer_pipeline.file_records.StorePlan` produces, and changes
nothing that the previous manifest points at:

* a task whose ``key`` (e.g. source size + mtime + settings) equals the one recorded for an
  entry whose files are intact is skipped: a rerun converts only new or changed sources.
  A committed file is checked by its size; a staged one (not yet swapped in, maybe left by a
  killed run) by the SHA-256 of its bytes recorded in the journal;
* the other tasks run in a process pool, or on a Dask cluster when the plan names one
  (:mod:`breast_cancer_pipeline.cluster`; a task of a worker that dies runs again on
  another); each worker writes its file(s) under ``.staging/``
  (to a temporary name, fsynced, then renamed: atomic), so only small result records travel
  back, and no file is ever half-written under a real name;
* every finished task is appended to a journal (JSON lines, flushed each time), so a run that
  is killed keeps the work already done; progress (count, rate, ETA) is logged as results
  arrive; at the end the journal is compacted and marked complete (written atomically).

**Saving a** :class:`~breast_cancer_pipeline.file_records.StoreCommit` (once the new manifest
is written) swaps the staged files in (renames), removes the files the last plan no longer
produces and compacts the journal. A run killed before the commit leaves the previous
manifest's files untouched; one killed during it leaves every staged file reachable (loaders
look in ``.staging/`` first), and the next commit finishes the swap.

Loading returns :class:`~breast_cancer_pipeline.file_records.StoredFiles`: ``{file path:
loader}`` for the committed files and those staged by the last completed save (the newest
version of a path wins), with the journal's records as a DataFrame in ``.records``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from breast_cancer_pipeline import cluster
from breast_cancer_pipeline.datasets._atomic import atomic_path
from breast_cancer_pipeline.file_records import (
    FileTask,
    StoreCommit,
    StoredFiles,
    StorePlan,
)
from breast_cancer_pipeline.progress import Progress

__all__ = ["FileTask", "ImageStoreDataset", "StoreCommit", "StoredFiles", "StorePlan"]

logger = logging.getLogger(__name__)

_TMP_SUFFIX = ".part"
_STAGING = ".staging"
_COMPLETE = {"complete": True}  # the journal's last line after a completed save or commit

Entry = dict[str, Any]  # key, ok, files {path: {bytes, sha256}}, record, staged
Result = tuple[str, str | None, dict[str, dict[str, Any]] | None, dict[str, Any]]


class ImageStoreDataset(AbstractDataset[StorePlan | StoreCommit, StoredFiles]):
    """A folder of files produced from a ``StorePlan``: incremental, parallel, two-phase.

    Example (``catalog.yml``)::

        intermediate_images:
          type: breast_cancer_pipeline.datasets.ImageStoreDataset
          path: data/02_intermediate/images
          journal: data/02_intermediate/conversion_index.jsonl
    """

    def __init__(self, path: str, journal: str, metadata: dict[str, Any] | None = None) -> None:
        """Create the dataset.

        Args:
            path: The folder of produced files.
            journal: The JSON-lines journal of produced files (keep it outside ``path``).
            metadata: Free-form metadata, ignored by the dataset.
        """
        self._root = Path(PurePosixPath(str(path)))
        self._journal = Path(PurePosixPath(str(journal)))
        self._staging = self._root / _STAGING
        self.metadata = metadata
        self.last_save: dict[str, int] = {}

    # ------------------------------------------------------------------ load

    def load(self) -> StoredFiles:
        """The committed and staged files and the records of the last completed save.

        Raises:
            DatasetError: The folder does not exist (nothing was saved yet).
        """
        if not self._root.is_dir():
            raise DatasetError(f"no files at '{self._root}': run the ingestion pipeline first")
        entries, _ = self._read_journal()
        # Absolute: a loader may be called by a worker of a cluster, in another folder.
        root, staging = self._root.absolute(), self._staging.absolute()
        locations = {path: (str(root / path),) for path in self._walk_files()}
        for entry in entries.values():
            if entry["ok"] and entry["staged"]:
                for path in entry["files"]:
                    locations[path] = (str(staging / path), str(root / path))
        rows = [
            {
                "path": path,
                "key": entry["key"],
                "ok": entry["ok"],
                "bytes": sum(f["bytes"] for f in entry["files"].values()),
                **entry["record"],
            }
            for path, entry in sorted(entries.items())
        ]
        records = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["path", "key", "ok"])
        return StoredFiles(locations, records)

    # ------------------------------------------------------------------ save

    def save(self, data: StorePlan | StoreCommit) -> None:
        """Produce what a plan lists (phase 1), or swap it in (phase 2, a ``StoreCommit``).

        Raises:
            DatasetError: ``data`` is neither, a path leaves the folder, two entries produce
                the same file, or a commit names a file the store did not produce.
        """
        if isinstance(data, StoreCommit):
            self._commit(data)
            return
        if not isinstance(data, StorePlan):
            raise DatasetError(
                f"ImageStoreDataset '{self._root}' saves a StorePlan or a StoreCommit, got "
                f"{type(data).__name__}"
            )
        for path in data.files:
            self._check_relative(path)
        started = time.perf_counter()
        self._root.mkdir(parents=True, exist_ok=True)
        self._remove_partial_files()
        _, latest = self._read_journal()
        entries = {p: latest[p] for p, t in data.files.items() if self._reusable(t, latest.get(p))}
        pending = {p: t for p, t in data.files.items() if p not in entries}
        reused = len(entries)
        logger.info(
            "Image store %s: %d entries planned, %d unchanged (skipped), %d to produce",
            self._root,
            len(data.files),
            reused,
            len(pending),
        )
        failed = self._produce(pending, data, entries)
        _check_outputs(entries)
        self._write_journal(entries)
        produced = len(pending) - failed
        self.last_save = {"planned": len(data.files), "skipped": reused, "failed": failed}
        self.last_save["produced"] = produced
        logger.info(
            "Image store %s: produced %d, skipped %d unchanged, %d failed, in %.1f s "
            "(swapped in once the manifest is written)",
            self._root,
            produced,
            reused,
            failed,
            time.perf_counter() - started,
        )

    def _produce(self, pending: Mapping[str, FileTask], plan: StorePlan, entries: dict) -> int:
        """Run the pending tasks, journaling and counting each as it ends; the failures."""
        if not pending:
            return 0
        self._journal.parent.mkdir(parents=True, exist_ok=True)
        progress = Progress(
            len(pending),
            f"Image store {self._root}",
            logger,
            unit="files",
            interval=plan.progress_seconds,
        )
        failed = 0
        with open(self._journal, "a", encoding="utf-8") as journal:
            for path, key, files, record in self._run(pending, plan):
                ok = files is not None
                failed += not ok
                entries[path] = {"key": key, "ok": ok, "files": files or {}, "record": record}
                entries[path]["staged"] = ok
                journal.write(json.dumps({"path": path, **entries[path]}) + "\n")
                journal.flush()
                progress.advance()
        progress.finish()
        return failed

    def _run(self, pending: Mapping[str, FileTask], plan: StorePlan) -> Iterator[Result]:
        """Run the tasks; yield ``(path, key, files written or None, record)`` as each ends."""
        if cluster.uses_cluster(plan.cluster):  # workers elsewhere: paths that mean the same
            calls = ((str(self._staging.absolute()), p, t) for p, t in pending.items())
            with cluster.dask_executor(plan.cluster, plan.workers) as (executor, threads):
                window = plan.cluster["tasks_per_worker"] * max(1, threads)
                batch = plan.cluster["batch_size"]
                yield from cluster.as_completed(executor, _materialise, calls, window, batch)
            return
        calls = ((str(self._staging), p, t) for p, t in pending.items())
        if plan.workers <= 1 or len(pending) <= 1:
            for args in calls:
                yield _materialise(*args)
            return
        with worker_pool(plan.workers, _pool_context(pending)) as pool:
            # A few tasks in flight per worker: memory stays flat for any dataset size.
            window = plan.tasks_per_worker * plan.workers
            yield from cluster.as_completed(pool, _materialise, calls, window)

    # ------------------------------------------------------------------ commit

    def _commit(self, commit: StoreCommit) -> None:
        """Swap the staged files in; remove the files the last completed save did not produce."""
        entries, _ = self._read_journal()
        produced = {path for e in entries.values() if e["ok"] for path in e["files"]}
        missing = sorted(set(commit.referenced) - produced)
        if missing:
            raise DatasetError(
                f"the manifest points at {len(missing)} file(s) that image store "
                f"'{self._root}' did not produce (first: {missing[0]!r}); run the whole "
                "ingestion pipeline: kedro run --pipelines=ingestion"
            )
        swapped = 0
        for entry in entries.values():
            if entry["staged"]:
                for path in entry["files"]:
                    staged, target = self._staging / path, self._root / path
                    if staged.exists():  # else swapped in by an interrupted commit
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(staged, target)
                        swapped += 1
                entry["staged"] = False
        removed = self._remove_unproduced(produced)
        shutil.rmtree(self._staging, ignore_errors=True)
        self._write_journal(entries)
        logger.info(
            "Image store %s: swapped in %d new file(s), removed %d superseded file(s)",
            self._root,
            swapped,
            removed,
        )

    def _remove_unproduced(self, produced: set[str]) -> int:
        removed = 0
        for path in list(self._walk_files()):
            if path not in produced:
                _unlink(self._root / path)
                removed += 1
        for folder, _, _ in sorted(os.walk(self._root), key=lambda w: -len(w[0])):
            if Path(folder) != self._root and not os.listdir(folder):
                os.rmdir(folder)
        return removed

    # ------------------------------------------------------------------ helpers

    def _check_relative(self, path: str) -> None:
        parts = PurePosixPath(path).parts
        if PurePosixPath(path).is_absolute() or ".." in parts or not parts:
            raise DatasetError(f"store path {path!r} must be relative, inside '{self._root}'")

    def _reusable(self, task: FileTask, entry: Entry | None) -> bool:
        """An entry is reused when its key is the task's and its files are intact."""
        if task.key is None or entry is None or not entry["ok"] or entry["key"] != task.key:
            return False
        return all(
            self._intact(path, meta, entry["staged"]) for path, meta in entry["files"].items()
        )

    def _intact(self, path: str, meta: Mapping[str, Any], staged: bool) -> bool:
        """A committed file: its size; a staged one (maybe left by a crash): its SHA-256."""
        places = (self._staging / path, self._root / path) if staged else (self._root / path,)
        where = next((p for p in places if p.is_file()), None)
        if where is None or where.stat().st_size != meta["bytes"]:
            return False
        if not staged:
            return True
        return meta.get("sha256") is not None and _sha256(where) == meta["sha256"]

    def _read_journal(self) -> tuple[dict[str, Entry], dict[str, Entry]]:
        """``(complete, latest)``: the entries of the last completed save, and the newest of all.

        Lines after the last completion mark come from a save that did not finish: their
        work can be reused, but they are not what the store holds. A cut line is ignored.
        """
        complete: dict[str, Entry] | None = None
        latest: dict[str, Entry] = {}
        first_format: set[str] = set()  # lines written before completion marks existed
        if not self._journal.is_file():
            return {}, latest
        with open(self._journal, encoding="utf-8") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                    if item == _COMPLETE:
                        complete = dict(latest)
                        continue
                    latest[item["path"]] = _entry(item)
                    if "files" not in item:
                        first_format.add(item["path"])
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
        if complete is None:  # never completed, or a journal of the first format
            complete = {p: latest[p] for p in first_format if not latest[p]["staged"]}
        return complete, latest

    def _write_journal(self, entries: Mapping[str, Entry]) -> None:
        with atomic_path(self._journal) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            for path, entry in sorted(entries.items()):
                handle.write(json.dumps({"path": path, **entry}) + "\n")
            handle.write(json.dumps(_COMPLETE) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _walk_files(self) -> Iterator[str]:
        """The committed files: hidden files and folders (``.staging``, temporaries) excluded."""
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

    def _exists(self) -> bool:
        return self._root.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._root), "journal": str(self._journal)}


def _entry(item: Mapping[str, Any]) -> Entry:
    """A journal line as an entry (lines of the first journal format had one file per entry)."""
    files = item.get("files")
    if files is None:
        files = {item["path"]: {"bytes": item["bytes"], "sha256": None}} if item["ok"] else {}
    entry = {"key": item["key"], "ok": bool(item["ok"]), "files": dict(files)}
    return {**entry, "record": dict(item["record"]), "staged": bool(item.get("staged", False))}


def _check_outputs(entries: Mapping[str, Entry]) -> None:
    owner: dict[str, str] = {}
    for path, entry in sorted(entries.items()):
        for output in entry["files"]:
            if output in owner:
                raise DatasetError(
                    f"{owner[output]!r} and {path!r} both produce {output!r}; rename or "
                    "exclude one of their sources"
                )
            owner[output] = path


def worker_pool(workers: int, context: multiprocessing.context.BaseContext) -> ProcessPoolExecutor:
    """A process pool whose workers end when the process that made them ends, even by SIGKILL.

    Each worker asks the kernel for SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``;
    under a fork server the parent is the server, which itself exits with this process) and
    exits at once if its parent is already gone. Elsewhere the workers are ordinary.

    Args:
        workers: Number of worker processes.
        context: The multiprocessing context to start them with.
    """
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )


def _die_with_parent(creator: int) -> None:
    """Worker initializer: SIGKILL on the parent's death (Linux), or exit if it is gone."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes  # noqa: PLC0415 - only in workers
        import signal  # noqa: PLC0415

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1 or not _alive(creator):
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _materialise(root: str, path: str, task: FileTask) -> Result:
    """Produce one entry's file(s) under ``root`` (runs in a worker process)."""
    content, record = task.produce()
    if content is None:
        return path, task.key, None, record
    outputs = {path: content} if isinstance(content, bytes) else dict(content)
    files = {}
    for output, data in outputs.items():
        parts = PurePosixPath(output).parts
        if PurePosixPath(output).is_absolute() or ".." in parts or not parts:
            raise DatasetError(f"task {path!r} produced {output!r}: paths must be relative")
        files[output] = _write_durably(Path(root, output), data)
    return path, task.key, files, record


def _write_durably(target: Path, data: bytes) -> dict[str, Any]:
    """Write ``data`` to a temporary name, fsync it, rename it onto ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink(Path(tmp))
        raise
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

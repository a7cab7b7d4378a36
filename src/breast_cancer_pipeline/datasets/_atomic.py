"""Atomic writes: write beside the target, then rename into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    Works for a file or a directory written at the yielded path. On error the temporary is
    removed and ``target`` keeps its previous content.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if tmp.is_dir() and target.exists():
            # A directory cannot be renamed onto a non-empty one: swap through a second name.
            old = target.with_name(f".{target.name}.old")
            _remove(old)
            target.rename(old)
            tmp.rename(target)
            _remove(old)
        else:
            os.replace(tmp, target)
    finally:
        _remove(tmp)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (and durably: the file is fsynced first)."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _remove(path: Path, _rmtree: Callable[[Path], None] = shutil.rmtree) -> None:
    if path.is_dir() and not path.is_symlink():
        _rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

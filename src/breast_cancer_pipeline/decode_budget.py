"""One memory budget for the decodes running at the same time in a process.

:class:`DecodeBudget` is a semaphore counted in bytes rather than in decodes: each decode
reserves what :func:`breast_cancer_pipeline.imaging.decode_cost` says it will hold at its peak
before decoding any pixel, and gives it back when done. Small images decode side by side; a
large one waits until its bytes are free; one that needs more than the whole budget is refused
at once (never left waiting). Any caller of
:func:`~breast_cancer_pipeline.imaging.decode_image` can pass one: the served model shares
one per process (:func:`shared_budget`, parameter ``inference.serving.decode_memory_mb``).

After a large decode, :func:`give_back_memory` returns the freed pages to the operating
system, so that a process that decoded a large image does not keep its peak for good.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from breast_cancer_pipeline.imaging import ImageTooCostlyError

#: Reservations at least this large give the freed memory back when released.
TRIM_BYTES = 32 * 2**20


class DecodeBudget:
    """Bytes that the decodes of one process may hold together.

    Attributes:
        total_bytes: The whole budget.
        parameter: The name given in errors (e.g. ``inference.serving.decode_memory_mb``).
    """

    def __init__(
        self,
        total_bytes: int,
        parameter: str = "the decode budget",
        small: DecodeBudget | None = None,
    ) -> None:
        """A budget of ``total_bytes``, named ``parameter`` in errors.

        ``small`` is a lane of its own for the decodes that fit in it: they reserve from it
        and so never wait behind large decodes holding this budget.

        Raises:
            ValueError: ``total_bytes`` is not a positive int.
        """
        if not isinstance(total_bytes, int) or isinstance(total_bytes, bool) or total_bytes < 1:
            raise ValueError(f"total_bytes must be a positive int, got {total_bytes!r}")
        self.total_bytes = total_bytes
        self.parameter = parameter
        self.small = small
        self._free = total_bytes
        self._changed = threading.Condition()

    @property
    def free_bytes(self) -> int:
        """Bytes not reserved at this moment."""
        with self._changed:
            return self._free

    @contextmanager
    def reserve(self, cost: int, name: str = "") -> Iterator[None]:
        """Hold ``cost`` bytes of the budget for the duration of the ``with`` block.

        Waits while the budget is taken by other decodes; a decode starts as soon as its
        cost fits in what is free.

        Args:
            cost: The decode's estimated peak, in bytes.
            name: The file or row name, for the error.

        Raises:
            ImageTooCostlyError: ``cost`` is more than the whole budget (at once, no wait).
        """
        if self.small is not None and cost <= self.small.total_bytes:
            with self.small.reserve(cost, name):
                yield
            return
        if cost > self.total_bytes:
            raise ImageTooCostlyError(name, cost, self.total_bytes, self.parameter)
        cost = max(0, int(cost))
        with self._changed:
            self._changed.wait_for(lambda: self._free >= cost)
            self._free -= cost
        try:
            yield
        finally:
            with self._changed:
                self._free += cost
                self._changed.notify_all()
            if cost >= TRIM_BYTES:
                give_back_memory()


_SHARED: dict[tuple[int, str, int], DecodeBudget] = {}
_SHARED_LOCK = threading.Lock()


def shared_budget(total_bytes: int, parameter: str, small_bytes: int = 0) -> DecodeBudget:
    """The process-wide budget of ``total_bytes``: the same arguments give the same budget.

    Args:
        total_bytes: The whole budget in bytes.
        parameter: The parameter it comes from, named in errors.
        small_bytes: A lane of this many bytes for the decodes that fit in it (0: none).
    """
    with _SHARED_LOCK:
        key = (total_bytes, parameter, small_bytes)
        if key not in _SHARED:
            small = DecodeBudget(small_bytes, parameter) if small_bytes else None
            _SHARED[key] = DecodeBudget(total_bytes, parameter, small)
        return _SHARED[key]


def give_back_memory() -> bool:
    """Return the memory freed by this process to the operating system, where possible.

    glibc keeps freed blocks in its arenas (one per thread that allocated), so the resident
    size of a server that decoded a large image in several threads stays near its peak;
    ``malloc_trim`` releases the free pages of every arena.

    Returns:
        True when memory was released (glibc), False where ``malloc_trim`` is unavailable.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim

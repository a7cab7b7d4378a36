"""This process's resident memory: now, its peak, and resetting the peak (Linux ``/proc``).

Used by the node hook (``node.<name>.peak_rss_mb``) and the scaling benchmark. The peak is
the kernel's high-water mark of this process's own address space (``VmHWM``), which starts
afresh at ``exec``. ``getrusage(RUSAGE_SELF).ru_maxrss`` does not: Linux carries the
parent's peak into a child across ``fork`` and ``exec``, so a child of a 3.7 GiB process
reports at least 3.7 GiB. It is only the fallback where ``/proc`` is missing (macOS).
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_STATM = Path("/proc/self/statm")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def rss_mb() -> float:
    """Resident memory of this process now, in MiB (0 where ``/proc`` is missing)."""
    try:
        pages = int(_STATM.read_text().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current resident memory (Linux ≥ 4.0); False if not."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB, since its start or the last reset."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _maxrss_mb(resource.RUSAGE_SELF)


def children_peak_rss_mb() -> float:
    """Peak resident memory of the largest child process this one has waited for, in MiB.

    A child forked from this process starts from this process's own address space, so its
    figure is not inflated by this process's parent.
    """
    return _maxrss_mb(resource.RUSAGE_CHILDREN)


def _maxrss_mb(who: int) -> float:
    """``getrusage(who).ru_maxrss`` in MiB (bytes on macOS, KiB elsewhere)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024

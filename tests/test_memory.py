"""Peak memory is this process's own, not inherited from the process that started it."""

import subprocess
import sys

import pytest

from breast_cancer_pipeline import memory

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the high-water mark is read from /proc"
)

#: A parent that touches 600 MiB, then starts a child that reports its own peak.
_PARENT = """
import subprocess, sys
block = bytearray(600 * 2**20)
block[::4096] = b"\\1" * len(block[::4096])
child = "from breast_cancer_pipeline import memory; print(memory.peak_rss_mb())"
print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                     check=True).stdout)
"""


def test_a_child_of_a_large_process_reports_its_own_peak():
    """Linux's ``ru_maxrss`` would report the parent's 600 MiB here (the scaling bug)."""
    done = subprocess.run(
        [sys.executable, "-c", _PARENT], capture_output=True, text=True, check=True
    )
    peak = float(done.stdout.strip())
    assert 5 < peak < 300


def test_the_peak_covers_a_block_touched_and_freed_and_a_reset_drops_it():
    baseline = memory.rss_mb()
    block = bytearray(200 * 2**20)
    block[::4096] = b"\1" * len(block[::4096])
    del block
    assert memory.peak_rss_mb() >= baseline + 150
    assert memory.reset_peak_rss()
    assert memory.peak_rss_mb() < memory.rss_mb() + 100

"""The decode budget: a semaphore in bytes that the decodes of one process share."""

import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from breast_cancer_pipeline.decode_budget import DecodeBudget, give_back_memory, shared_budget
from breast_cancer_pipeline.imaging import ImageTooCostlyError, decode_cost, decode_image
from tests.payloads import deflated_dicom, zeros_png


def _waiting(budget: DecodeBudget, cost: int) -> tuple[threading.Thread, threading.Event]:
    """A thread that reserves ``cost`` and sets the event once inside (until told to leave)."""
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with budget.reserve(cost, "waiting.png"):
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    thread.leave = leave
    return thread, inside


def test_a_decode_waits_until_its_bytes_are_free():
    budget = DecodeBudget(100)
    with budget.reserve(70, "first.png"):
        big, big_inside = _waiting(budget, 40)
        small, small_inside = _waiting(budget, 30)
        assert small_inside.wait(10)  # 70 + 30 fit
        assert not big_inside.wait(0.2)  # 70 + 30 + 40 do not
        assert budget.free_bytes == 0
        small.leave.set()
        small.join(10)
        assert not big_inside.wait(0.2)  # 70 + 40 still do not
    assert big_inside.wait(10)  # now they do
    big.leave.set()
    big.join(10)
    assert budget.free_bytes == 100


def test_a_decode_larger_than_the_whole_budget_is_refused_at_once():
    budget = DecodeBudget(100, "inference.serving.decode_memory_mb")
    with budget.reserve(60), pytest.raises(ImageTooCostlyError) as error, budget.reserve(101):
        pass
    assert error.value.limit_name == "inference.serving.decode_memory_mb"
    assert "more than inference.serving.decode_memory_mb allows (100 bytes)" in str(error.value)
    assert budget.free_bytes == 100


def test_a_failed_decode_gives_its_bytes_back():
    budget = DecodeBudget(100)
    with pytest.raises(RuntimeError), budget.reserve(90):
        raise RuntimeError("decoder crashed")
    assert budget.free_bytes == 100


def test_the_shared_budget_is_one_per_size_and_name():
    one = shared_budget(2**20, "a")
    assert shared_budget(2**20, "a") is one
    assert shared_budget(2**21, "a") is not one and shared_budget(2**20, "b") is not one
    with pytest.raises(ValueError, match="positive int"):
        DecodeBudget(0)


class _RecordingBudget(DecodeBudget):
    def __init__(self, total: int) -> None:
        super().__init__(total)
        self.costs: list[int] = []

    @contextmanager
    def reserve(self, cost: int, name: str = ""):
        self.costs.append(cost)
        with super().reserve(cost, name):
            yield


def test_decode_image_reserves_its_cost():
    data = zeros_png(300, 200, 6)
    budget = _RecordingBudget(2**30)
    pixels = decode_image(data, "a.png", budget=budget)
    np.testing.assert_array_equal(pixels, np.zeros((200, 300, 1), dtype=np.uint8))
    assert budget.costs == [decode_cost(data, "a.png").peak_bytes]
    assert budget.free_bytes == 2**30


def test_a_deflate_bomb_is_measured_against_the_tighter_limit():
    bomb = deflated_dicom(32 * 2**20)
    budget = DecodeBudget(8 * 2**20, "inference.serving.decode_memory_mb")
    for max_decoded_bytes, named in [
        (None, "inference.serving.decode_memory_mb"),
        (16 * 2**20, "inference.serving.decode_memory_mb"),
        (8 * 2**20, "max_decoded_bytes"),
    ]:
        with pytest.raises(ImageTooCostlyError) as error:
            decode_image(bomb, "bomb.dcm", max_decoded_bytes=max_decoded_bytes, budget=budget)
        assert error.value.limit_name == named
        assert error.value.limit == 8 * 2**20 < error.value.cost
    assert budget.free_bytes == budget.total_bytes  # refused before reserving


#: Eight threads decode large images under one budget; prints the resident memory over rest
#: at the peak and after, in MiB (``trim`` off: the budget never gives memory back).
_AFTER_DECODES = """
import sys, threading
from breast_cancer_pipeline import decode_budget, memory
from breast_cancer_pipeline.imaging import decode_image, resize_image
from tests.payloads import deflated_dicom, zeros_png
if sys.argv[1] == "off":
    decode_budget.TRIM_BYTES = 2**62
files = [zeros_png(4000, 4000, 6), zeros_png(4000, 4000, 0, 16)]
decode_image(zeros_png(16, 16, 6))
budget = decode_budget.DecodeBudget(256 * 2**20)
before = memory.rss_mb()
threads = [
    threading.Thread(target=lambda k=k: resize_image(decode_image(files[k % 2], budget=budget), 32))
    for k in range(8)
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(memory.rss_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim, /proc")
def test_memory_is_given_back_after_large_decodes_in_several_threads():
    def after(trim: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", _AFTER_DECODES, trim],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        return float(done.stdout)

    assert give_back_memory() in (True, False)
    kept, kept_without = after("on"), after("off")
    assert kept < 100, kept  # back near rest (the last results stay in the allocator)
    assert kept_without > 2 * kept + 50, kept_without  # the feature, not luck


def test_small_decodes_have_a_lane_of_their_own():
    """A large decode holding the whole budget does not hold up a small one (issue 26, item 2)."""
    budget = shared_budget(100, "inference.serving.decode_memory_mb", small_bytes=10)
    assert budget.small.total_bytes == 10
    holding, release = threading.Event(), threading.Event()

    def large():
        with budget.reserve(100, "large"):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=large)
    thread.start()
    try:
        assert holding.wait(30)
        assert budget.free_bytes == 0
        entered = threading.Event()

        def small():
            with budget.reserve(8, "small"):
                entered.set()

        threading.Thread(target=small).start()
        assert entered.wait(5)  # it ran while the large decode held the whole budget
        assert budget.small.free_bytes == 10
    finally:
        release.set()
        thread.join()

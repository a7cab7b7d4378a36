"""The bounded fan-outs (here on threads) and the errors of an unreachable cluster."""

from __future__ import annotations

import operator
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from breast_cancer_pipeline.cluster import (
    ClusterError,
    as_completed,
    dask_executor,
    in_order,
    map_in_order,
    uses_cluster,
)
from tests.params import base_params


class _Counting:
    """A call that records how many calls run at once, slower for the low numbers."""

    def __init__(self) -> None:
        self.lock, self.running, self.most = threading.Lock(), 0, 0

    def __call__(self, i: int) -> int:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02 if i % 5 == 0 else 0.001)
        with self.lock:
            self.running -= 1
        return i * i


@pytest.mark.parametrize("batch_size", [1, 3])
def test_in_order_keeps_the_order_and_the_window(batch_size):
    call = _Counting()
    with ThreadPoolExecutor(8) as pool:
        results = list(in_order(pool, call, [(i,) for i in range(40)], 2, batch_size))
    assert results == [i * i for i in range(40)]
    assert 1 <= call.most <= 2  # two tasks in flight at most; a batch runs its calls in turn


def test_as_completed_yields_every_result_once_within_the_window():
    call = _Counting()
    with ThreadPoolExecutor(8) as pool:
        results = list(as_completed(pool, call, [(i,) for i in range(40)], 3, 2))
    assert sorted(results) == [i * i for i in range(40)]
    assert results != [i * i for i in range(40)]  # the slow ones came back later
    assert call.most <= 3


def _fail_at_seven(i: int) -> int:
    if i == 7:
        raise ValueError("image 7 is bad")
    return i


@pytest.mark.parametrize("fan_out", [in_order, as_completed])
def test_a_failing_call_stops_the_fan_out_with_its_error(fan_out):
    with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError, match="image 7 is bad"):
        list(fan_out(pool, _fail_at_seven, [(i,) for i in range(100)], 2, 2))


def test_without_an_address_the_calls_run_here_in_order():
    assert not uses_cluster(None) and not uses_cluster(base_params("cluster"))
    assert uses_cluster(base_params("cluster", address="local"))
    calls = [(i, 3) for i in range(5)]
    assert list(map_in_order(operator.mul, calls, base_params("cluster"), 2)) == [0, 3, 6, 9, 12]
    assert list(map_in_order(operator.mul, calls, None, 2)) == [0, 3, 6, 9, 12]


def test_an_unreachable_scheduler_is_named_with_the_fix():
    with socket.socket() as probe:  # a free port: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    settings = base_params("cluster", address=address, connect_timeout_seconds=1)
    with pytest.raises(ClusterError) as info, dask_executor(settings, 2):
        pass
    message = str(info.value)
    assert f"cluster.address={address!r}" in message
    assert "dask scheduler --host" in message and "cluster.address=null" in message

"""What every benchmark shares: interleaved repeats, their summary, goals and the machine.

A benchmark compares two ways of doing one thing (A: the pipeline's, B: a bare baseline). On a
shared or slow machine a single pair of runs says little, so each figure is measured in
rounds, A then B, ``REPEATS`` times (A, B, A, B, ...): a change of load hits both ways alike.
A ratio is computed per round (A and B measured side by side) and summarised by its median,
with its min, max and every round beside it (:func:`summary`).

Goals are reported, never enforced: a benchmark fails only when the thing it measures fails
(an exception or a wrong result, checked by ``assert`` in the benchmark). :func:`check_goals`
says for each goal whether the median meets it and by how much it misses.

:func:`reference_loop` times a fixed piece of CPU work (pure Python and single-threaded
NumPy) so that figures from two machines can be compared: ``latest.json`` records it.

``BENCH_QUICK=1`` (:func:`quick`) makes every benchmark tiny: a smoke run of the harness and
of each benchmark's code, whose figures mean nothing.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Rounds of every interleaved measurement (at least three, so that the median means something).
REPEATS = 3
#: What :func:`reference_work` does at scale 1 (recorded with its time).
REFERENCE_WORK = (
    "v1: pure-Python loop sum(i*i % 7) over 2,000,000 ints, then NumPy (single-threaded): "
    "sort 1,000,000 float64 and 20 element-wise passes over them"
)
#: A goal: ``(">=", 0.9)``, ``("<=", 1.3)`` or ``("==", True)``.
Goal = tuple[str, Any]


def quick() -> bool:
    """Whether this is a smoke run (``BENCH_QUICK=1``): tiny sizes, figures meaningless."""
    return os.environ.get("BENCH_QUICK", "").strip() not in ("", "0", "false", "no")


def interleave(
    measures: Mapping[str, Callable[[], Any]], repeats: int = REPEATS
) -> dict[str, list[Any]]:
    """Run every measure once per round, in the given order, for ``repeats`` rounds.

    Args:
        measures: ``{name: function returning one measurement}``, run A, B, A, B, ...
        repeats: Number of rounds (≥ 1).

    Returns:
        ``{name: [measurement of round 1, round 2, ...]}``.
    """
    results: dict[str, list[Any]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            results[name].append(measure())
    return results


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """The ratio of each round: ``numerators[i] / denominators[i]``."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators but {len(denominators)} denominators")
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median, min, max and every value, rounded to ``digits`` decimals."""
    if not values:
        raise ValueError("no values to summarise")
    return {
        "median": round(float(statistics.median(values)), digits),
        "min": round(float(min(values)), digits),
        "max": round(float(max(values)), digits),
        "repeats": [round(float(v), digits) for v in values],
    }


def agreement(values: Sequence[bool]) -> dict[str, Any]:
    """A yes/no figure over rounds: ``all`` rounds true, and each round's value."""
    return {"all": all(values), "repeats": [bool(v) for v in values]}


def headline(figure: Any) -> Any:
    """The value a goal is checked against: a median, a mean (over seeds) or an ``all``."""
    if isinstance(figure, Mapping):
        for key in ("median", "mean", "all"):
            if key in figure:
                return figure[key]
    return figure


def check_goals(figures: Mapping[str, Any], goals: Mapping[str, Goal]) -> dict[str, Any]:
    """For each goal whose figure was measured: the goal, the value, met or not, the margin.

    The margin is how far the value is past the goal (negative: by how much it misses),
    relative to the goal: ``+0.05`` is 5 % better than needed.
    """
    report: dict[str, Any] = {}
    for name, (op, target) in goals.items():
        if name not in figures:
            continue
        value = headline(figures[name])
        if value is None:  # not defined on any repeat (e.g. a ratio over zero)
            met, margin = False, None
        elif op == "==":
            met, margin = value == target, None
        elif op in (">=", "<="):
            met = value >= target if op == ">=" else value <= target
            margin = (value - target if op == ">=" else target - value) / abs(target)
            margin = round(margin, 3)
        else:
            raise ValueError(f"goal of {name}: unknown comparison {op!r}; use >=, <= or ==")
        report[name] = {"goal": f"{op} {target}", "value": value, "met": met, "margin": margin}
    return report


def reference_work(scale: float = 1.0) -> int:
    """A fixed piece of CPU work (:data:`REFERENCE_WORK`; ``scale`` < 1 for tests)."""
    total = 0
    for i in range(int(2_000_000 * scale)):
        total += i * i % 7
    values = np.random.default_rng(0).random(max(int(1_000_000 * scale), 16))
    values.sort()
    for _ in range(20):
        values = np.sqrt(values * values + 1.0) - 0.5
    return total + int(values.argmax())


def reference_loop(repeats: int = 5, scale: float = 1.0) -> dict[str, Any]:
    """CPU and wall seconds of :func:`reference_work`, ``repeats`` times (median, min, max).

    CPU time barely moves with the load of other processes; wall time does. Divide a
    benchmark's seconds by the CPU median to compare machines.
    """
    cpu, wall = [], []
    for _ in range(repeats):
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        reference_work(scale)
        cpu.append(time.process_time() - cpu_started)
        wall.append(time.perf_counter() - wall_started)
    return {
        "work": REFERENCE_WORK,
        "scale": scale,
        "cpu_seconds": summary(cpu, 4),
        "wall_seconds": summary(wall, 4),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """The CPU model, cores usable by this process, memory, load and Python."""
    return {
        "cpu_model": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }

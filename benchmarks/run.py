"""Run the benchmarks and write ``benchmarks/results/latest.json``.

``python -m benchmarks.run [area ...]`` (``make bench AREAS="ingestion serving"``) runs every
module ``benchmarks/bench_<area>.py``, or the areas named. Each module exposes:

- ``run(workdir: Path) -> dict[str, Any]``: flat figures named ``<area>.<figure>``. A figure
  measured in interleaved rounds is a :func:`~benchmarks.harness.summary` (median, min, max,
  repeats); a yes/no one an :func:`~benchmarks.harness.agreement`; plain values describe the
  set-up. It raises (``assert``) when the measured thing gives a wrong result.
- ``GOALS: dict[str, Goal]``: the goal of some figures, e.g. ``{"<area>.x": (">=", 0.9)}``.

The run fails (exit 1) only when an area raises; missed goals are reported (console and the
``goals`` block), never fatal. The file also records the date, the machine and the CPU time of
a fixed reference loop (:func:`~benchmarks.harness.reference_loop`), with each area's own date
and reference time, since the figures of the areas not run are kept from the previous file.
``BENCH_QUICK=1`` runs every area tiny (a smoke run) and writes ``results/quick.json`` instead.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import harness

RESULTS_DIR = Path(__file__).parent / "results"
RESULTS = RESULTS_DIR / "latest.json"
QUICK_RESULTS = RESULTS_DIR / "quick.json"


def _areas() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _measure(area: str, module: Any) -> dict[str, Any]:
    print(f"== {area}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-{area}-") as workdir:
        measured = dict(module.run(Path(workdir)))
    measured[f"{area}.bench_seconds"] = round(time.perf_counter() - started, 1)
    for key, value in measured.items():
        print(f"   {key} = {value}", flush=True)
    return measured


def _print_goals(goals: Mapping[str, Any], failed: Mapping[str, str]) -> None:
    for name, goal in goals.items():
        if goal["met"]:
            verdict = "met"
        elif goal["margin"] is None:
            verdict = "MISSED"
        else:
            verdict = f"MISSED by {-goal['margin']:.1%}"
        print(f"   goal {name} {goal['goal']}: {goal['value']} — {verdict}", flush=True)
    for area, error in failed.items():
        print(f"   FAILED {area}: {error}", file=sys.stderr, flush=True)


def run_areas(
    modules: Mapping[str, Any],
    output: Path,
    keep_previous: bool = True,
    reference_scale: float = 1.0,
) -> int:
    """Run ``modules`` (``{area: module}``), write ``output``; 1 if an area raised, else 0.

    Args:
        modules: The benchmark modules to run, by area.
        output: The results file; with ``keep_previous``, the figures of areas not run now
            (and of areas that failed) are kept from it.
        keep_previous: Merge into the existing ``output`` rather than start afresh.
        reference_scale: Scale of the reference loop (below 1 only for smoke runs).
    """
    reference = harness.reference_loop(scale=reference_scale)
    print(f"reference loop: {reference['cpu_seconds']['median']} s CPU", flush=True)
    machine = harness.machine()
    failed: dict[str, str] = {}
    measured_by_area: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {}
    for area, module in modules.items():
        try:
            measured = _measure(area, module)
        except Exception as exc:  # the measured thing failed: report it, run the others
            traceback.print_exc()
            failed[area] = f"{type(exc).__name__}: {exc}"
            continue
        goals_met = harness.check_goals(measured, getattr(module, "GOALS", {}))
        measured_by_area[area] = (measured, goals_met, _now())
        # Written after every area: a run stopped later keeps the areas it finished.
        _write(output, keep_previous, measured_by_area, failed, machine, reference)
    results, measured_now = _write(
        output, keep_previous, measured_by_area, failed, machine, reference
    )
    goals = results["goals"]
    _print_goals({k: v for k, v in goals.items() if k in measured_now}, failed)
    print(f"wrote {output}", flush=True)
    return 1 if failed else 0


def _write(
    output: Path,
    keep_previous: bool,
    measured_by_area: Mapping[str, tuple[dict[str, Any], dict[str, Any], str]],
    failed: Mapping[str, str],
    machine: dict[str, Any],
    reference: dict[str, Any],
) -> tuple[dict[str, Any], set[str]]:
    """Merge the areas measured so far into ``output`` and write it; the results written."""
    # Read the previous results only now: an area run meanwhile by another process is kept.
    previous = json.loads(output.read_text()) if keep_previous and output.is_file() else {}
    results, measured_now = _merge(previous, measured_by_area, machine, reference)
    machine["load_average_after"] = harness.machine()["load_average"]
    results.update(quick=reference["scale"] < 1.0, failed=dict(failed))
    _atomic_write(output, results)
    return results, measured_now


def _atomic_write(output: Path, results: Mapping[str, Any]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(output)


def _merge(
    previous: dict[str, Any],
    measured_by_area: Mapping[str, tuple[dict[str, Any], dict[str, Any], str]],
    machine: dict[str, Any],
    reference: dict[str, Any],
) -> tuple[dict[str, Any], set[str]]:
    """The results file with this run's areas replacing theirs; and the figures measured now."""
    figures: dict[str, Any] = previous.get("figures", {})
    areas: dict[str, Any] = previous.get("areas", {})
    goals: dict[str, Any] = previous.get("goals", {})
    measured_now: set[str] = set()
    for area, (measured, goals_met, updated) in measured_by_area.items():
        # The area's figures of the previous run go (an area may name some after another
        # subject: serving measures predict.*).
        stale = set(areas.get(area, {}).get("figures", ())) | {
            k for k in figures if k.startswith(f"{area}.")
        }
        figures = {k: v for k, v in figures.items() if k not in stale} | measured
        goals = {k: v for k, v in goals.items() if k not in stale} | goals_met
        measured_now |= set(measured)
        areas[area] = {
            "updated": updated,
            "seconds": measured[f"{area}.bench_seconds"],
            "cpu_model": machine["cpu_model"],
            "cores": machine["cores"],
            "reference_cpu_seconds": reference["cpu_seconds"]["median"],
            "figures": sorted(measured),
        }
    results = {
        "updated": _now(),
        "quick": False,
        "machine": machine,
        "reference": reference,
        "areas": dict(sorted(areas.items())),
        "failed": {},
        "goals": dict(sorted(goals.items())),
        "figures": dict(sorted(figures.items())),
    }
    return results, measured_now


def main(argv: list[str]) -> int:
    """Run the benchmarks named in ``argv`` (all when empty)."""
    names = argv or _areas()
    unknown = sorted(set(names) - set(_areas()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {_areas()}", file=sys.stderr)
        return 2
    modules = {area: importlib.import_module(f"benchmarks.bench_{area}") for area in names}
    if harness.quick():
        return run_areas(modules, QUICK_RESULTS, keep_previous=False, reference_scale=0.05)
    return run_areas(modules, RESULTS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

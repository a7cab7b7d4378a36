"""Run every benchmark module and write ``benchmarks/results/latest.json``.

Each module ``benchmarks/bench_<area>.py`` exposes ``run(workdir: Path) -> dict[str, Any]``
returning flat figures named ``<area>.<figure>`` (ratios measured side by side in the same
process, plus the raw rates they came from). ``python -m benchmarks.run [area ...]`` runs all
or some; the figures of areas not run are kept from the previous file.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "latest.json"


def _areas() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    """Run the benchmarks named in ``argv`` (all when empty)."""
    areas = argv or _areas()
    unknown = sorted(set(areas) - set(_areas()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {_areas()}", file=sys.stderr)
        return 2
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    figures = results.get("figures", {})
    for area in areas:
        module = importlib.import_module(f"benchmarks.bench_{area}")
        print(f"== {area}", flush=True)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"bench-{area}-") as workdir:
            measured = module.run(Path(workdir))
        measured[f"{area}.bench_seconds"] = round(time.perf_counter() - started, 1)
        for key, value in measured.items():
            print(f"   {key} = {value}", flush=True)
        figures.update(measured)
    results = {
        "machine": {
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "figures": dict(sorted(figures.items())),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A throw-away copy of the project for a benchmark's own Kedro runs."""

from __future__ import annotations

import shutil
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def copy_project(target: Path) -> Path:
    """Copy into ``target`` what a Kedro run there needs.

    The configuration (without ``conf/local``, left empty for the benchmark's own entries),
    ``pyproject.toml``, ``.telemetry``, an empty ``src`` (the package is installed) and the empty
    ``data/<layer>`` folders.

    Returns:
        ``target``.
    """
    shutil.copytree(PROJECT / "conf", target / "conf", ignore=shutil.ignore_patterns("local"))
    (target / "conf" / "local").mkdir()
    for name in ("pyproject.toml", ".telemetry"):  # .telemetry: Kedro's consent, false
        shutil.copy2(PROJECT / name, target / name)
    (target / "src").mkdir()
    for folder in (PROJECT / "data").iterdir():
        if folder.is_dir():
            (target / "data" / folder.name).mkdir(parents=True)
    return target

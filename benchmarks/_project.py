"""A throw-away copy of the project for a benchmark's own Kedro runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


def kedro_run(project: Path, *args: str) -> float:
    """``kedro run --env=demo ...`` in ``project`` (output appended to ``run.log``); its seconds.

    The run sees no ``KEDRO_*`` or ``MLFLOW_*`` variable of the caller; it tracks to the
    project's own ``mlflow.db``, with Kedro's telemetry off.

    Raises:
        RuntimeError: The run failed; the end of ``run.log`` says why.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEDRO_", "MLFLOW_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        KEDRO_DISABLE_TELEMETRY="true",
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
    )
    log = project / "run.log"
    command = [str(Path(sys.executable).with_name("kedro")), "run", "--env=demo", *args]
    started = time.perf_counter()
    with log.open("a") as out:
        done = subprocess.run(command, cwd=project, env=env, stdout=out, stderr=out, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - started

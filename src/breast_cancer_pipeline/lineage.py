"""Where a run comes from: the code, the Kedro environment, the DVC stage and the data.

:class:`~breast_cancer_pipeline.hooks.LineageHook` tags every MLflow run with
:func:`run_tags` and logs the manifest as the run's dataset (:func:`manifest_dataset`):

- ``git.commit``: ``git rev-parse HEAD`` of the project (absent outside a repository);
- ``git.dirty``: ``true`` when tracked or new files differ from the commit (``dvc.lock`` and
  ``data/``, which runs write, do not count), and then ``git.diff_digest`` of those changes;
- ``git.code_digest``: digest of the tracked files but ``dvc.lock`` and ``data/`` (and of the
  changes): the code state the run ran;
- ``kedro.env``: the run's environment (``--env``, ``KEDRO_ENV``, else ``local``);
- ``kedro.pipelines``: the pipelines run, ``+``-separated (``__default__`` for ``kedro run``);
- ``dvc.stage``: the stage DVC runs (``DVC_STAGE``, which DVC sets for every stage command);
- ``dvc.exp_name`` and ``dvc.exp_baseline``: under ``dvc exp run``, the experiment and the
  commit it starts from (``DVC_EXP_NAME``, ``DVC_EXP_BASELINE_REV``);
- ``data.manifest_digest``: content digest of ``data/03_primary/manifest.parquet``;
- ``lineage.group``: shared by the runs of one ``dvc exp run`` (``exp:<name>``), else by the
  runs of one code state (``code:<git.code_digest>``), so the stages of one ``dvc repro``
  share it; ``LINEAGE_GROUP=<name>`` in the environment sets it explicitly;
- ``lineage.baseline_group``: under ``dvc exp run``, ``code:<digest>`` of the baseline commit,
  the group of the runs whose outputs the experiment reuses;
- ``lineage.kind``: ``pipeline`` (a ``kedro run``) or ``trial`` (a head-search trial).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Tags a nested run (a search trial) copies from its parent run.
TAG_PREFIXES = ("git.", "kedro.", "dvc.", "data.", "lineage.")
#: The catalog dataset whose content digest is the run's data version.
MANIFEST_DATASET = "manifest"
#: Paths a run itself writes (DVC's lock file, the data layers): not part of the code state.
RUN_OUTPUTS = ("dvc.lock", "data/")
#: Environment variables: DVC's (dvc/env.py, dvc/stage/run.py) and the explicit group.
DVC_STAGE, DVC_EXP_NAME, DVC_EXP_BASELINE = "DVC_STAGE", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"
LINEAGE_GROUP = "LINEAGE_GROUP"
#: Hex digits kept of a digest in a tag.
DIGEST_LENGTH = 12


def _git(project: Path, *args: str) -> str | None:
    """The output of ``git <args>`` in ``project``, or None (no git, not a repository)."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=project, capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _is_run_output(path: str) -> bool:
    return any(path == out or path.startswith(out) for out in RUN_OUTPUTS)


def code_digest(project: Path, ref: str = "HEAD") -> str | None:
    """Digest of the files git tracks at ``ref``, except the :data:`RUN_OUTPUTS`.

    Committing ``dvc.lock`` or metrics after a ``dvc repro`` does not change it, so the runs of
    that repro and an experiment started from the new commit name the same code state.

    Returns:
        12 hex digits, or None when ``ref`` is not a commit of a git repository at ``project``.
    """
    listing = _git(project, "ls-tree", "-r", "-z", "--full-tree", ref)
    if listing is None:
        return None
    entries = sorted(e for e in listing.split("\0") if e and not _is_run_output(e.split("\t")[1]))
    return hashlib.sha256("\0".join(entries).encode()).hexdigest()[:DIGEST_LENGTH]


def git_state(project: Path) -> dict[str, str]:
    """``git.commit``, ``git.dirty``, ``git.diff_digest`` and ``git.code_digest`` of ``project``.

    The diff digest (only when dirty) covers the path and content of every changed, deleted or
    new (not ignored) file, except the :data:`RUN_OUTPUTS`: the stages of one ``dvc repro``
    see the same one. The code digest is :func:`code_digest` of ``HEAD``, combined with the
    diff digest when dirty.

    Returns:
        The tags; empty when ``project`` is not in a git repository.
    """
    commit = _git(project, "rev-parse", "HEAD")
    status = _git(project, "status", "--porcelain=v1", "-z", "--no-renames", "-uall")
    code = code_digest(project)
    if commit is None or status is None or code is None:
        return {}
    root = Path((_git(project, "rev-parse", "--show-toplevel") or str(project)).strip())
    changed = sorted(
        path for path in (e[3:] for e in status.split("\0") if e) if not _is_run_output(path)
    )
    tags = {"git.commit": commit.strip(), "git.dirty": str(bool(changed)).lower()}
    if changed:
        digest = hashlib.sha256()
        for path in changed:
            file = root / path
            digest.update(path.encode() + b"\0")
            digest.update(file.read_bytes() if file.is_file() else b"<deleted>")
        tags["git.diff_digest"] = digest.hexdigest()[:DIGEST_LENGTH]
        code = hashlib.sha256(f"{code}+{tags['git.diff_digest']}".encode()).hexdigest()
    tags["git.code_digest"] = code[:DIGEST_LENGTH]
    return tags


def lineage_group(git: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """The tag shared by the runs of one ``dvc exp run``, or of one code state.

    Args:
        git: :func:`git_state`'s tags.
        environ: The process environment.

    Returns:
        ``$LINEAGE_GROUP`` when set; ``exp:<name>`` under ``dvc exp run``; else
        ``code:<git.code_digest>`` (``unversioned`` outside git).
    """
    if environ.get(LINEAGE_GROUP):
        return environ[LINEAGE_GROUP]
    if environ.get(DVC_EXP_NAME):
        return f"exp:{environ[DVC_EXP_NAME]}"
    return f"code:{git['git.code_digest']}" if "git.code_digest" in git else "unversioned"


def run_tags(
    project: Path, env: str, pipeline_names: list[str] | None, environ: Mapping[str, str]
) -> dict[str, str]:
    """Every lineage tag of a run except the data digest (see the module's table).

    Args:
        project: The project's root.
        env: The Kedro environment.
        pipeline_names: The pipelines run (None: the default pipeline).
        environ: The process environment (DVC's variables).

    Returns:
        Tag name → value.
    """
    git = git_state(project)
    dvc = {
        "dvc.stage": environ.get(DVC_STAGE),
        "dvc.exp_name": environ.get(DVC_EXP_NAME),
        "dvc.exp_baseline": environ.get(DVC_EXP_BASELINE),
    }
    tags = {
        **git,
        "kedro.env": env,
        "kedro.pipelines": "+".join(pipeline_names or ["__default__"]),
        **{k: v for k, v in dvc.items() if v},
        "lineage.group": lineage_group(git, environ),
        "lineage.kind": "pipeline",
    }
    baseline = environ.get(DVC_EXP_BASELINE) and code_digest(project, environ[DVC_EXP_BASELINE])
    if baseline:  # the stages an experiment reuses ran in the baseline's code state
        tags["lineage.baseline_group"] = f"code:{baseline}"
    return tags


def frame_digest(frame: Any) -> str:
    """Content digest of a DataFrame: its column names and every row's values, in order.

    Independent of the file's encoding (Parquet writer, compression), unlike the file's hash.
    """
    import pandas as pd  # noqa: PLC0415

    digest = hashlib.sha256(json.dumps([str(c) for c in frame.columns]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:DIGEST_LENGTH]


def manifest_dataset(frame: Any, source: str, digest: str) -> Any:
    """The manifest as an MLflow dataset (``mlflow.log_input``), versioned by ``digest``."""
    import mlflow  # noqa: PLC0415

    with warnings.catch_warnings():
        # MLflow registers its local-file source twice, and hints at integer columns.
        warnings.filterwarnings("ignore", "The specified dataset source", UserWarning)
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        return mlflow.data.from_pandas(frame, source=source, name=MANIFEST_DATASET, digest=digest)

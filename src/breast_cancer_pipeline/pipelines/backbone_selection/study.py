"""The head search's Optuna study: where it is kept, what it is called, what is left to run.

With ``head_search.storage`` a database URL (default ``sqlite:///optuna.db``, beside
``mlflow.db``) the study outlives the process:

- a killed search resumes: the study is loaded and only the trials still missing run
  (``head_search.n_trials`` counts the study's completed trials, whoever ran them);
- ``optuna-dashboard sqlite:///optuna.db`` shows it;
- several processes (or machines, with a shared database server) run trials of one study at
  once, each starting ``kedro run --pipelines=backbone_selection`` (Optuna's distributed mode).

The study is named ``<head_search.study_name>-<digest>``, the digest covering the cached
features and every setting that changes a trial's score, so a changed setup starts a new study
instead of resuming a foreign one (``n_trials`` is not in it: raising it extends the study).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

#: The arrays of a candidate's cached features a trial reads (their content is in the digest).
FEATURE_KEYS = ("features_train", "features_val", "y_train", "y_val")
#: Seconds a process waits for another's write lock on a SQLite study before failing.
SQLITE_TIMEOUT_SECONDS = 60
#: Attempts at opening the storage (workers racing to create a new database's tables).
STORAGE_ATTEMPTS = 3


def setup_digest(features: Mapping[str, np.ndarray], setup: Mapping[str, Any]) -> str:
    """A short content digest of the search's inputs: the features and the settings.

    Args:
        features: A candidate's cached features (:data:`FEATURE_KEYS` are read).
        setup: The settings that change a trial's score (JSON-serialisable).

    Returns:
        The first 12 hex digits of the SHA-256 of both.
    """
    digest = hashlib.sha256(json.dumps(setup, sort_keys=True).encode())
    for key in FEATURE_KEYS:
        array = np.ascontiguousarray(features[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:12]


def open_study(search: Mapping[str, Any], name: str, seed: int) -> Any:
    """Create the study, or load it from ``search["storage"]`` when it exists there.

    The TPE sampler is seeded with ``seed`` plus the number of trials the study holds, so a
    fresh search is reproducible and a process that joins or resumes a study draws its own
    points rather than repeating the first ones.

    Args:
        search: The ``backbone_selection.head_search`` parameters (``storage``,
            ``load_if_exists``).
        name: The study's name (see :func:`setup_digest`).
        seed: The search's seed.

    Returns:
        The ``optuna.Study`` (direction: maximise).

    Raises:
        ValueError: The study exists and ``head_search.load_if_exists`` is false.
    """
    import optuna  # noqa: PLC0415

    storage = _storage(search["storage"])
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            load_if_exists=search["load_if_exists"],
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise ValueError(
            f"the study {name!r} already exists in {search['storage']} and "
            "backbone_selection.head_search.load_if_exists is false: set it to true to resume "
            "the study, or change head_search.study_name to start another"
        ) from None
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.get_trials(deepcopy=False)))
    return study


def _storage(url: str | None) -> Any:
    """Optuna's RDB storage at ``url`` (None: in memory).

    Workers started together on a new database race to create its tables (and, on
    PostgreSQL, its enum types): the loser's ``IntegrityError`` (or ``ProgrammingError``:
    the type already exists) is retried once the winner has made them.
    """
    if url is None:
        return None
    import optuna  # noqa: PLC0415
    from sqlalchemy.exc import (  # noqa: PLC0415
        IntegrityError,
        OperationalError,
        ProgrammingError,
    )

    connect_args = {"timeout": SQLITE_TIMEOUT_SECONDS} if url.startswith("sqlite") else {}
    engine_kwargs = {"connect_args": connect_args}
    for attempt in range(1, STORAGE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (IntegrityError, OperationalError, ProgrammingError):
            time.sleep(attempt)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)  # errors propagate


def completed_trials(study: Any) -> int:
    """How many trials of ``study`` completed (in any process)."""
    import optuna  # noqa: PLC0415

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def worker_name() -> str:
    """``host:pid`` of this process, recorded on each trial it runs (``worker`` user attr)."""
    return f"{socket.gethostname()}:{os.getpid()}"

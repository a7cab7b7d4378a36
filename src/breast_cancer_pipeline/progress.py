"""Progress of long work, in one place: log lines with count, rate and ETA, and live metrics.

- :class:`Progress` logs ``label: done/total (pct), rate/s, ETA`` at most every
  ``interval`` seconds (and once at the end), so hours of conversion or training are never
  silent.
- :func:`publish_metrics` hands figures produced *during* a node (a training epoch, an Optuna
  trial) to whoever listens. Nodes never import MLflow: the project's hook registers a
  listener that logs them to the active MLflow run, so curves are live in ``mlflow ui``.
- :func:`publish_trial` does the same for each finished trial of a search (its settings and
  score): the hook makes it a nested MLflow run, settings as params.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Seconds between two progress lines of one task.
INTERVAL_SECONDS = 10.0


class _Listeners(list):
    """The listeners of one kind of event, each registered once, called in order."""

    def add(self, listener: Callable[..., None]) -> None:
        if listener not in self:
            self.append(listener)

    def discard(self, listener: Callable[..., None]) -> None:
        if listener in self:
            self.remove(listener)

    def publish(self, *event: Any) -> None:
        for listener in list(self):
            listener(*event)


MetricsListener = Callable[[Mapping[str, float], int], None]
_listeners = _Listeners()


@dataclass(frozen=True)
class TrialReport:
    """One finished trial of a hyperparameter search.

    Attributes:
        study: The study's name.
        number: The trial's number in the study (unique across the processes sharing it).
        state: ``complete``, ``fail`` or ``pruned``.
        params: The settings the trial tried.
        metrics: Its figures (empty when it failed).
        started: Start time, seconds since the epoch (None when unknown).
        finished: End time, seconds since the epoch (None when unknown).
    """

    study: str
    number: int
    state: str
    params: Mapping[str, Any]
    metrics: Mapping[str, float] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None


TrialListener = Callable[[TrialReport], None]
_trial_listeners = _Listeners()


def add_listener(listener: MetricsListener) -> None:
    """Receive every :func:`publish_metrics` call (``listener(metrics, step)``)."""
    _listeners.add(listener)


def remove_listener(listener: MetricsListener) -> None:
    """Stop sending metrics to ``listener`` (no error when it was not registered)."""
    _listeners.discard(listener)


def publish_metrics(metrics: Mapping[str, float], step: int) -> None:
    """Send figures measured during a node to the registered listeners (e.g. MLflow).

    Args:
        metrics: Metric name → value; names carry their stage (``finetune.val_auc``).
        step: The step (epoch, trial) the figures belong to.
    """
    _listeners.publish(metrics, step)


def add_trial_listener(listener: TrialListener) -> None:
    """Receive every :func:`publish_trial` call (``listener(report)``)."""
    _trial_listeners.add(listener)


def remove_trial_listener(listener: TrialListener) -> None:
    """Stop sending trials to ``listener`` (no error when it was not registered)."""
    _trial_listeners.discard(listener)


def publish_trial(report: TrialReport) -> None:
    """Send a finished search trial to the registered listeners (e.g. a nested MLflow run)."""
    _trial_listeners.publish(report)


def format_seconds(seconds: float) -> str:
    """``75`` → ``'1 min 15 s'``; ``4000`` → ``'1 h 07 min'``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """Counts work done and logs count, rate and ETA at most every ``interval`` seconds.

    Example::

        progress = Progress(len(files), "Converting", logger, unit="images")
        for f in files:
            ...
            progress.advance()
        progress.finish()
    """

    def __init__(
        self,
        total: int,
        label: str,
        logger: logging.Logger,
        unit: str = "items",
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = int(total)
        self.label = label
        self.logger = logger
        self.unit = unit
        self.interval = float(interval)
        self.done = 0
        self._clock = clock
        self._started = clock()
        self._last_logged = self._started

    def advance(self, n: int = 1) -> None:
        """Record ``n`` more items done; log if ``interval`` seconds passed since the last line."""
        self.done += int(n)
        now = self._clock()
        if now - self._last_logged >= self.interval and self.done < self.total:
            self._log(now)

    def finish(self) -> None:
        """Log the final line (count, rate, elapsed time)."""
        now = self._clock()
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        self.logger.info(
            "%s: %d/%d %s done in %s (%.1f %s/s)",
            self.label,
            self.done,
            self.total,
            self.unit,
            format_seconds(elapsed),
            rate,
            self.unit,
        )

    def _log(self, now: float) -> None:
        self._last_logged = now
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        share = 100.0 * self.done / self.total if self.total else 100.0
        self.logger.info(
            "%s: %d/%d %s (%.0f %%), %.1f %s/s, ETA %s",
            self.label,
            self.done,
            self.total,
            self.unit,
            share,
            rate,
            self.unit,
            format_seconds(eta) if eta != float("inf") else "unknown",
        )

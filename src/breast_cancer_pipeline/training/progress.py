"""One log line and the published metrics of every epoch.

- :class:`EpochProgress`: the callback (metrics, seconds, ETA of the phase).
- :func:`publish_restored`: the epochs a resumed run restores, published again so that the
  run's tracked curves are whole.
"""

from __future__ import annotations

import logging
import math
import time

import keras

from breast_cancer_pipeline.progress import format_seconds, publish_metrics
from breast_cancer_pipeline.training.checkpoints import RunRecord

logger = logging.getLogger(__name__)


class EpochProgress(keras.callbacks.Callback):
    """One log line per epoch (metrics, seconds, ETA of the phase), and the metrics published.

    Args:
        phase: Name of the phase, at the start of each line.
        epochs: Epochs of the phase (early stopping may end it sooner).
        first_step: Global step of the phase's epoch 0 (epochs of the phases before it).
        metrics_prefix: Publish each epoch's metrics as ``<prefix>.<metric>`` with
            :func:`breast_cancer_pipeline.progress.publish_metrics`; ``None``: log only.
    """

    def __init__(
        self, phase: str, epochs: int, first_step: int, metrics_prefix: str | None
    ) -> None:
        super().__init__()
        self.phase = phase
        self.epochs = epochs
        self.first_step = first_step
        self.metrics_prefix = metrics_prefix
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Start the epoch's clock."""
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Log the epoch's figures and publish them."""
        self.seconds.append(time.perf_counter() - self._started)
        logs = {key: float(value) for key, value in (logs or {}).items()}
        eta = sum(self.seconds) / len(self.seconds) * (self.epochs - epoch - 1)
        logger.info(
            "%s epoch %d/%d: %s (%s, ETA of the phase %s)",
            self.phase,
            epoch + 1,
            self.epochs,
            " ".join(f"{key} {value:.4g}" for key, value in sorted(logs.items())),
            format_seconds(self.seconds[-1]),
            format_seconds(eta),
        )
        if self.metrics_prefix is not None:
            publish_metrics(
                {f"{self.metrics_prefix}.{k}": v for k, v in logs.items() if math.isfinite(v)},
                step=self.first_step + epoch,
            )


def publish_restored(record: RunRecord, metrics_prefix: str) -> None:
    """Publish the epochs a resumed run restores, so that its tracked curves are whole.

    Args:
        record: The record the run resumes from.
        metrics_prefix: Publish each epoch's metrics as ``<prefix>.<metric>``, stepped by the
            epoch of all phases (as :class:`EpochProgress` published them).
    """
    epochs = [
        ({k: v[i] for k, v in history.items() if k != "epoch"}, step)
        for history in record.histories.values()
        for i, step in enumerate(history["epoch"])
    ]
    epochs += [
        (epoch["logs"], record.steps_done + i)
        for i, epoch in enumerate(record.epochs_of(record.phase))
    ]
    for logs, step in epochs:
        publish_metrics(
            {f"{metrics_prefix}.{k}": v for k, v in logs.items() if math.isfinite(v)}, step=step
        )

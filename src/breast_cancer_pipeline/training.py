"""Training machinery shared by fine-tuning and the benchmarks.

- :func:`make_dataset`: a ``tf.data`` pipeline over (memory-mapped) ``uint8`` arrays: indices
  are shuffled and batched, each batch is gathered from the arrays in one read, and batches
  are prefetched while the model trains. Optional minority oversampling draws every class
  equally often.
- :func:`resolve_class_weights`: ``auto`` | ``none`` | explicit per-class weights.
- :func:`make_strategy`: ``auto`` | ``none`` | ``mirrored`` | ``multi_worker`` (``tf.distribute``).
- :class:`EpochLogger` (progress through logging) and :class:`ResumableCheckpoint` (the best
  and the last weights on validation AUROC, written atomically, with the state a killed run
  resumes from).

Importing this module imports Keras and TensorFlow: import it inside training nodes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "none", "mirrored", "multi_worker")


# ------------------------------------------------------------------------------ input
def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    oversample: bool = False,
) -> tuple[tf.data.Dataset, int]:
    """A ``tf.data`` pipeline of ``(uint8 images, one-hot labels)`` batches.

    The arrays stay where they are (a memory map is read batch by batch): the pipeline
    shuffles indices, batches them, gathers each batch from ``x`` in one sorted read on a
    background thread and prefetches. Augmentation is not done here; it lives in the model.

    Args:
        x: Images, ``N×H×W×C`` ``uint8`` (a ``np.memmap`` is fine).
        y: Class indices, length ``N``.
        n_classes: Number of classes (one-hot width).
        batch_size: Images per batch (global batch under a distribution strategy).
        training: Shuffle every epoch (and oversample, if asked); otherwise keep the order.
        seed: Seed of the shuffling and sampling.
        oversample: Draw each class with equal probability (minority oversampling); an epoch
            still has ``N`` images.

    Returns:
        ``(dataset, steps_per_epoch)``; pass both to ``model.fit`` (the oversampled dataset
        repeats forever, so ``steps_per_epoch`` bounds the epoch).

    Raises:
        ValueError: ``x`` and ``y`` differ in length, or a label is outside ``n_classes``.
    """
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    if len(x) != n:
        raise ValueError(f"make_dataset: {len(x)} images but {n} labels")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"make_dataset: labels must be in [0, {n_classes}), got {y.min()}..")
    steps = max(1, math.ceil(n / batch_size))
    if training and oversample:
        per_class = [
            tf.data.Dataset.from_tensor_slices(np.flatnonzero(y == c))
            .shuffle(max(1, int((y == c).sum())), seed=seed + c, reshuffle_each_iteration=True)
            .repeat()
            for c in range(n_classes)
            if (y == c).any()
        ]
        indices = tf.data.Dataset.sample_from_datasets(
            per_class, weights=[1.0 / len(per_class)] * len(per_class), seed=seed
        )
    else:
        indices = tf.data.Dataset.range(n)
        if training:
            indices = indices.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    shape = tuple(x.shape[1:])

    def gather(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.sort(batch)  # one forward pass over the memory map
        return np.asarray(x[order]), np.eye(n_classes, dtype=np.float32)[y[order]]

    def load(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = tf.numpy_function(gather, [batch], [tf.uint8, tf.float32])
        images.set_shape((None, *shape))
        labels.set_shape((None, n_classes))
        return images, labels

    dataset = indices.batch(batch_size).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    options = tf.data.Options()
    # Every worker of a cluster builds the same pipeline and takes its share of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE), steps


def resolve_class_weights(
    setting: str | Mapping[str, float] | Sequence[float] | None,
    y: np.ndarray,
    class_names: Sequence[str],
    oversample: bool = False,
) -> dict[int, float] | None:
    """Class weights for ``model.fit`` from the ``class_weight`` parameter.

    Args:
        setting: ``"auto"`` (balanced, ``n / (k * count)`` from ``y``), ``"none"``/``None``,
            a mapping ``{class name: weight}`` (unnamed classes get 1), or a list in class
            order.
        y: The training labels.
        class_names: Class names in index order.
        oversample: Minority oversampling is on; ``auto`` then gives no weights (the batches
            are balanced already).

    Returns:
        ``{class index: weight}`` or ``None``.

    Raises:
        ValueError: An unknown class name, a list of the wrong length, a non-positive weight,
            or an unrecognised setting.
    """
    n_classes = len(class_names)
    if setting is None or setting == "none":
        return None
    if setting == "auto":
        if oversample:
            return None
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes)
        total = counts.sum()
        return {i: float(total / (n_classes * c)) if c else 1.0 for i, c in enumerate(counts)}
    if isinstance(setting, Mapping):
        unknown = sorted(set(setting) - set(class_names))
        if unknown:
            raise ValueError(
                f"finetune.class_weight names unknown classes {unknown}; the classes are "
                f"{list(class_names)}"
            )
        weights = {i: float(setting.get(name, 1.0)) for i, name in enumerate(class_names)}
    elif isinstance(setting, Sequence) and not isinstance(setting, str):
        if len(setting) != n_classes:
            raise ValueError(
                f"finetune.class_weight lists {len(setting)} weights for {n_classes} classes "
                f"({list(class_names)})"
            )
        weights = {i: float(w) for i, w in enumerate(setting)}
    else:
        raise ValueError(
            "finetune.class_weight must be auto, none, {class: weight} or a list of weights, "
            f"got {setting!r}"
        )
    if any(w <= 0 for w in weights.values()):
        raise ValueError(f"finetune.class_weight: weights must be positive, got {weights}")
    return weights


# ------------------------------------------------------------------------------ strategy
def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy named by the ``strategy`` parameter.

    ``auto`` picks ``multi_worker`` when ``TF_CONFIG`` describes a cluster of several tasks,
    ``mirrored`` when there are several GPUs, otherwise ``none`` (TensorFlow's default
    strategy). Create it before any other TensorFlow work in the process.

    Raises:
        ValueError: An unknown name, or ``multi_worker`` without a ``TF_CONFIG`` cluster.
    """
    if name not in STRATEGIES:
        raise ValueError(f"finetune.strategy must be one of {list(STRATEGIES)}, got {name!r}")
    cluster_tasks = _cluster_size()
    if name == "auto":
        if cluster_tasks > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "none"
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if cluster_tasks < 1:
        raise ValueError(
            "finetune.strategy=multi_worker needs the TF_CONFIG environment variable: "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
            '"index": 0}} on the first machine, index 1 on the second (see README, "GPUs and '
            'several machines")'
        )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    _patch_nested_reduce(strategy)
    return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process is the chief (the only one, or worker 0 of a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def _cluster_size() -> int:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON: {exc}") from exc
    return sum(len(tasks) for tasks in cluster.values())


def _patch_nested_reduce(strategy: tf.distribute.Strategy) -> None:
    """Let Keras 3 drive ``MultiWorkerMirroredStrategy`` (Keras 3.15, TensorFlow 2.21).

    Keras calls ``strategy.reduce`` on a whole nested batch (only to get example shapes for
    building the model) and on scalar logs with ``axis=0``; the collective strategy supports
    neither. This instance-level wrapper hands back the local replica's batch for a nest and
    reduces scalars across replicas.
    """
    reduce = strategy.reduce

    def nested_reduce(reduce_op: Any, value: Any, axis: int | None = None) -> Any:
        if isinstance(value, tuple | list | dict):
            return tf.nest.map_structure(
                lambda v: (
                    strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                value,
            )
        if axis is not None:
            local = (
                strategy.experimental_local_results(value)[0]
                if isinstance(value, tf.distribute.DistributedValues)
                else value
            )
            if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                axis = None
        return reduce(reduce_op, value, axis=axis)

    strategy.reduce = nested_reduce


# ------------------------------------------------------------------------------ callbacks
class EpochLogger(keras.callbacks.Callback):
    """Logs one line per epoch (visible in the Kedro log while training runs)."""

    def __init__(self, label: str, epochs: int) -> None:
        """Create the logger for a phase called ``label`` of ``epochs`` epochs."""
        super().__init__()
        self.label = label
        self.epochs = epochs
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Start the epoch's clock."""
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Log the epoch's figures."""
        figures = " ".join(f"{k} {float(v):.4g}" for k, v in sorted((logs or {}).items()))
        logger.info(
            "%s epoch %d/%d (%.1f s): %s",
            self.label,
            epoch + 1,
            self.epochs,
            time.perf_counter() - self._started,
            figures,
        )


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves the best weights on a monitored metric and the state to resume from.

    After every epoch it writes, atomically, ``best`` (when ``monitor`` improved: Keras's
    ``ModelCheckpoint(save_best_only=True)``), ``last`` (the weights and the optimizer) and
    the state JSON: the phase, the epochs done, the history so far, and the counters of the
    early-stopping and learning-rate callbacks, which it restores on a resumed run.

    Args:
        checkpoints: A :class:`~breast_cancer_pipeline.datasets.training_checkpoints.
            CheckpointDirectory`.
        phase: Name of the training phase (``phase1``/``phase2``).
        base_state: The state to extend (fingerprint, completed phases, their histories).
        monitor: Metric to maximise.
        resume_from: The saved state of this phase, when resuming.
        stateful: Callbacks whose ``best``/``wait``/``cooldown_counter`` are saved.
    """

    def __init__(
        self,
        checkpoints: Any,
        phase: str,
        base_state: dict[str, Any],
        monitor: str = "val_auc",
        resume_from: dict[str, Any] | None = None,
        stateful: Sequence[keras.callbacks.Callback] = (),
    ) -> None:
        super().__init__()
        self.checkpoints = checkpoints
        self.phase = phase
        self.base_state = base_state
        self.monitor = monitor
        self.resume_from = resume_from
        self.stateful = list(stateful)
        self.history: dict[str, list[float]] = dict((resume_from or {}).get("history", {}))
        self.best = (resume_from or {}).get("best", -math.inf)

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Restore the counters of the other callbacks on a resumed run."""
        for callback, saved in zip(
            self.stateful, (self.resume_from or {}).get("callbacks", []), strict=False
        ):
            for key, value in saved.items():
                setattr(callback, key, value)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Write best, last and the state."""
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        score = float(logs.get(self.monitor, -math.inf))
        if score > self.best:
            self.best = score
            self.checkpoints.save_weights(self.model, "best")
        self.checkpoints.save_weights(self.model, "last")
        state = {
            **self.base_state,
            "phase": self.phase,
            "epochs_done": epoch + 1,
            "best": self.best,
            "stopped": bool(self.model.stop_training),
            "history": self.history,
            "callbacks": [
                {
                    key: _plain(getattr(cb, key))
                    for key in ("best", "wait", "cooldown_counter")
                    if hasattr(cb, key)
                }
                for cb in self.stateful
            ],
        }
        self.checkpoints.write_state(state)


def _plain(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of JSON-serialisable settings and arrays (to match checkpoints)."""
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str((part.shape, part.dtype.str)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]

"""Training machinery shared by fine-tuning and the benchmarks.

- :func:`make_dataset`: a ``tf.data`` pipeline over (memory-mapped) ``uint8`` arrays: indices
  are shuffled and batched, each batch is gathered from the arrays in one read, and batches
  are prefetched while the model trains. Optional minority oversampling draws every class
  equally often.
- :func:`resolve_class_weights`: ``auto`` | ``none`` | explicit per-class weights.
- :func:`make_strategy`: ``auto`` | ``none`` | ``mirrored`` | ``multi_worker`` (``tf.distribute``).
- :func:`mixed_precision_policy` and :func:`dtype_policy`: the Keras dtype policy a model is
  built under (``finetune.mixed_precision``), set for the build and training only.
- Resumable training: :class:`PhaseBackup` (Keras's ``BackupAndRestore``: weights, optimizer
  and epoch of an interrupted phase) and :class:`PhaseRecorder`, which keeps the rest in a
  :class:`RunRecord` (per-epoch history, best weights, early-stopping and plateau counters,
  completed phases, fingerprint).
- :class:`EpochProgress`: a log line per epoch with metrics and ETA, and live metrics.

Importing this module imports Keras and TensorFlow: import it inside training nodes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from breast_cancer_pipeline.metrics import class_weights
from breast_cancer_pipeline.pipelines.finetune.parameters import MIXED_PRECISION, STRATEGIES
from breast_cancer_pipeline.progress import format_seconds, publish_metrics

logger = logging.getLogger(__name__)


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
    indices = _indices(y, n_classes, training=training, seed=seed, oversample=oversample)
    dataset = indices.batch(batch_size).map(
        _batch_loader(x, y, n_classes), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    options = tf.data.Options()
    # Every worker of a cluster builds the same pipeline and takes its share of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    steps = max(1, math.ceil(n / batch_size))
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE), steps


def _indices(
    y: np.ndarray, n_classes: int, *, training: bool, seed: int, oversample: bool
) -> tf.data.Dataset:
    """Image indices: in order, shuffled every epoch, or drawn class-balanced forever."""
    if not (training and oversample):
        indices = tf.data.Dataset.range(len(y))
        if training:
            indices = indices.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
        return indices
    per_class = [
        tf.data.Dataset.from_tensor_slices(np.flatnonzero(y == c))
        .shuffle(max(1, int((y == c).sum())), seed=seed + c, reshuffle_each_iteration=True)
        .repeat()
        for c in range(n_classes)
        if (y == c).any()
    ]
    return tf.data.Dataset.sample_from_datasets(
        per_class, weights=[1.0 / len(per_class)] * len(per_class), seed=seed
    )


def _batch_loader(x: np.ndarray, y: np.ndarray, n_classes: int) -> Any:
    """The ``map`` function that turns a batch of indices into images and one-hot labels."""
    shape = tuple(x.shape[1:])
    eye = np.eye(n_classes, dtype=np.float32)

    def gather(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.sort(batch)  # one forward pass over the memory map
        return np.asarray(x[order]), eye[y[order]]

    def load(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = tf.numpy_function(gather, [batch], [tf.uint8, tf.float32])
        images.set_shape((None, *shape))
        labels.set_shape((None, n_classes))
        return images, labels

    return load


def resolve_class_weights(
    setting: str | Mapping[str, float] | Sequence[float],
    y: np.ndarray,
    class_names: Sequence[str],
    oversample: bool,
) -> dict[int, float] | None:
    """Class weights for ``model.fit`` from the ``class_weight`` parameter.

    The parameter's form (and positive weights) is checked by the ``finetune`` schema; what
    depends on the data is checked here.

    Args:
        setting: ``"auto"`` (balanced, :func:`breast_cancer_pipeline.metrics.class_weights`),
            ``"none"``, a mapping ``{class name: weight}`` (unnamed classes get 1), or a list
            in class order.
        y: The training labels.
        class_names: Class names in index order.
        oversample: Minority oversampling is on; ``auto`` then gives no weights (the batches
            are balanced already).

    Returns:
        ``{class index: weight}`` or ``None``.

    Raises:
        ValueError: An unknown class name, a list of the wrong length, or an unrecognised
            setting.
    """
    n_classes = len(class_names)
    if setting == "none" or (setting == "auto" and oversample):
        return None
    if setting == "auto":
        return class_weights(y, n_classes)
    if isinstance(setting, Mapping):
        unknown = sorted(set(setting) - set(class_names))
        if unknown:
            raise ValueError(
                f"finetune.class_weight names unknown classes {unknown}; the classes are "
                f"{list(class_names)}"
            )
        return {i: float(setting.get(name, 1.0)) for i, name in enumerate(class_names)}
    if isinstance(setting, Sequence) and not isinstance(setting, str):
        if len(setting) != n_classes:
            raise ValueError(
                f"finetune.class_weight lists {len(setting)} weights for {n_classes} classes "
                f"({list(class_names)})"
            )
        return {i: float(w) for i, w in enumerate(setting)}
    raise ValueError(
        "finetune.class_weight must be auto, none, {class: weight} or a list of weights, "
        f"got {setting!r}"
    )


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


# ------------------------------------------------------------------------------ precision
#: GPUs from this compute capability on have the tensor cores that make float16 pay.
MIXED_FLOAT16_MIN_CAPABILITY = (7, 0)


def mixed_precision_policy(setting: str) -> str:
    """The Keras dtype policy that ``finetune.mixed_precision`` names on this machine.

    ``auto`` is ``mixed_float16`` when every visible GPU has compute capability ≥ 7.0
    (Volta and later), otherwise ``float32`` (on CPUs mixed precision only adds casts);
    ``off`` is ``float32``; a policy name is itself.

    Raises:
        ValueError: An unknown setting.
    """
    if setting not in MIXED_PRECISION:
        raise ValueError(
            f"finetune.mixed_precision must be one of {list(MIXED_PRECISION)}, got {setting!r}"
        )
    if setting == "off":
        return "float32"
    if setting != "auto":
        return setting
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [
        tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0)
        for gpu in gpus
    ]
    if capabilities and min(capabilities) >= MIXED_FLOAT16_MIN_CAPABILITY:
        return "mixed_float16"
    return "float32"


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Make ``name`` Keras's global dtype policy inside the block; restore the previous after.

    Layers take the global policy when they are built, so a model built inside the block
    computes in ``name`` (its variables stay float32); code after the block is unaffected.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    if name != previous.name:
        logger.info("Keras dtype policy %s", name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# ------------------------------------------------------------------------------ callbacks
class PhaseBackup(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` that leaves the next ``fit`` of the model alone.

    When it restores a backup, Keras 3.15 sets the model's ``_initial_epoch`` and never resets
    it, so the next ``fit`` of the same model (the next phase) would start at that epoch.
    """

    def on_train_end(self, logs: dict | None = None) -> None:
        """Keras's end of training, then forget the restored epoch."""
        super().on_train_end(logs)
        self.model._initial_epoch = None


#: The keys of the checkpoint state (:meth:`RunRecord.to_state`).
STATE_KEYS = ("fingerprint", "completed", "histories", "phase", "epochs")
#: Counters of EarlyStopping / ReduceLROnPlateau that ``on_train_begin`` resets.
COUNTERS = ("best", "wait", "cooldown_counter")


@dataclass
class RunRecord:
    """What a resumed training needs beyond Keras's backup, kept in the checkpoint state.

    ``BackupAndRestore`` restores the weights, the optimizer and the epoch of the phase in
    progress. This record adds the completed phases and their histories, and per epoch of
    the phase in progress its logs, the best score so far, whether it stopped the phase, and
    the counters of the early-stopping and plateau callbacks (which Keras resets).
    """

    fingerprint: str
    completed: list[str] = field(default_factory=list)
    histories: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    phase: str | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RunRecord:
        """The record saved as ``state`` (see :meth:`to_state`)."""
        return cls(**{key: state[key] for key in STATE_KEYS})

    def to_state(self) -> dict[str, Any]:
        """The JSON-serialisable state (``epochs_done`` is for people reading it)."""
        state = {key: getattr(self, key) for key in STATE_KEYS}
        return {**state, "epochs_done": len(self.epochs)}

    @property
    def steps_done(self) -> int:
        """Epochs of the completed phases (the global step of the next phase's first epoch)."""
        return sum(len(history["epoch"]) for history in self.histories.values())

    def epochs_of(self, phase: str) -> list[dict[str, Any]]:
        """The recorded epochs of ``phase`` when it is the phase in progress, else none."""
        return list(self.epochs) if self.phase == phase else []

    def complete(self, phase: str) -> None:
        """Move the phase in progress to the completed ones, with its history."""
        history: dict[str, list[float]] = {}
        for epoch in self.epochs_of(phase):
            for key, value in epoch["logs"].items():
                history.setdefault(key, []).append(value)
        history["epoch"] = list(range(self.steps_done, self.steps_done + len(self.epochs)))
        self.histories[phase] = history
        self.completed.append(phase)
        self.phase, self.epochs = None, []


class PhaseRecorder(keras.callbacks.Callback):
    """Records every epoch in the :class:`RunRecord` and saves the best weights and the state.

    Put it after the early-stopping and plateau callbacks (their counters then include the
    epoch) and before ``BackupAndRestore``: the state is never behind Keras's backup, and on a
    resumed run the record is cut back to the epoch Keras restored.

    Args:
        checkpoints: A :class:`~breast_cancer_pipeline.datasets.training_checkpoints.
            CheckpointDirectory`.
        record: The run's record; this phase's epochs are appended to it.
        phase: Name of the training phase (``phase1``/``phase2``).
        stateful: Callbacks whose counters are saved and restored.
        monitor: Metric to maximise (the best weights).
    """

    def __init__(
        self,
        checkpoints: Any,
        record: RunRecord,
        phase: str,
        stateful: Sequence[keras.callbacks.Callback],
        monitor: str,
    ) -> None:
        super().__init__()
        self.checkpoints = checkpoints
        self.record = record
        self.phase = phase
        self.stateful = list(stateful)
        self.monitor = monitor
        self._first_epoch = True

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Start this phase's record, unless it is the phase being resumed."""
        if self.record.phase != self.phase:
            self.record.phase, self.record.epochs = self.phase, []
        self._first_epoch = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """At the first epoch, restore the counters of the epoch Keras resumes after."""
        if not self._first_epoch:
            return
        self._first_epoch = False
        del self.record.epochs[epoch:]  # a no-op when the record was matched to the backup
        if self.record.epochs:
            saved = self.record.epochs[-1]["callbacks"]
            for callback, counters in zip(self.stateful, saved, strict=True):
                for key, value in counters.items():
                    setattr(callback, key, value)
            logger.info("Resuming %s at epoch %d", self.phase, epoch + 1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Save the best weights when the monitored metric improved, then the state."""
        logs = {key: float(value) for key, value in (logs or {}).items()}
        previous = self.record.epochs[-1]["best"] if self.record.epochs else -math.inf
        score = logs.get(self.monitor, math.nan)
        if score > previous:
            self.checkpoints.save_best(self.model)
        self.record.epochs.append(
            {
                "logs": logs,
                "best": score if score > previous else previous,
                "stopped": bool(self.model.stop_training),
                "callbacks": [
                    {key: _plain(getattr(cb, key)) for key in COUNTERS if hasattr(cb, key)}
                    for cb in self.stateful
                ],
            }
        )
        self.checkpoints.write_state(self.record.to_state())


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

"""The ``tf.distribute`` strategy a run trains under, and which worker is the chief.

- :func:`make_strategy`: ``auto`` | ``none`` | ``mirrored`` | ``multi_worker``.
- :func:`is_chief`: the process that publishes the run's metrics.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from breast_cancer_pipeline.training.options import STRATEGIES


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

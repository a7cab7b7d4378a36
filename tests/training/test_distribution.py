"""The distribution strategies, and two workers training one model on 127.0.0.1."""

import json
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from breast_cancer_pipeline.training.distribution import make_strategy
from breast_cancer_pipeline.training.plan import HEAD_KEYS
from tests.pipelines.finetune.helpers import AUGMENTATION, BEST_HEAD, subprocess_env


def test_strategy_names(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert make_strategy("none") is tf.distribute.get_strategy()
    assert make_strategy("auto") is tf.distribute.get_strategy()  # one CPU, no cluster
    with pytest.raises(ValueError, match="must be one of"):
        make_strategy("tpu")
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        make_strategy("multi_worker")


_WORKER = textwrap.dedent(
    """
    import logging, sys
    import numpy as np
    from breast_cancer_pipeline import progress
    from tests.pipelines.finetune.helpers import model_input, run_finetune

    logging.basicConfig(level=logging.INFO, force=True)
    progress.add_listener(lambda metrics, step: print("PUBLISHED", step, flush=True))
    model, metadata, *_ = run_finetune(
        sys.argv[2], model_input(n=32), seed=3, deterministic=True, strategy="multi_worker",
        phase1={"learning_rate": 0.01}, phase2={"epochs": 0},
    )
    assert metadata["replicas"] == 2, metadata
    np.savez(sys.argv[1], *model.get_weights())
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_one_epoch_to_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    procs = []
    for index in range(2):
        env = subprocess_env(
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    str(tmp_path / f"w{index}.npz"),
                    str(tmp_path / "ckpt"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    # One epoch, published by the chief (worker 0) only, and every worker logs its progress.
    assert [line for line in outputs[0].splitlines() if line.startswith("PUBLISHED")] == [
        "PUBLISHED 0"
    ]
    assert "PUBLISHED" not in outputs[1]
    assert all("phase1 epoch 1/1" in out for out in outputs)
    first, second = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(first.files) > 4
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])

    # From their (seeded, shared) initialisation, phase 1 moved the head and only the head.
    import keras

    from breast_cancer_pipeline.modeling import build_classifier

    keras.utils.set_random_seed(3)
    initial = build_classifier(
        "small_cnn", 2, 16, 1, None, {k: BEST_HEAD[k] for k in HEAD_KEYS}, AUGMENTATION, seed=3
    ).get_weights()
    trained = [first[f"arr_{i}"] for i in range(len(initial))]
    for before, after in zip(initial[:-2], trained[:-2], strict=True):
        np.testing.assert_array_equal(before, after)  # the frozen base
    assert not np.allclose(initial[-2], trained[-2])  # the head's kernel

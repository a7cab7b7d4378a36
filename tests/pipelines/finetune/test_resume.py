"""A finetune killed with SIGKILL resumes from its last checkpoint; no half-written model."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from breast_cancer_pipeline.datasets.training_checkpoints import CheckpointDirectory
from tests.pipelines.finetune.helpers import subprocess_env

_RUN = textwrap.dedent(
    """
    import logging, sys, time
    import keras
    from breast_cancer_pipeline.datasets import KerasModelDataset
    import breast_cancer_pipeline.training.phases as phases
    from tests.pipelines.finetune.helpers import run_finetune

    logging.basicConfig(level=logging.INFO, force=True)
    out, slow = sys.argv[1], sys.argv[2] == "slow"
    if slow:  # one second per epoch, so that the parent can kill us mid-phase
        class Slow(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                time.sleep(1.0)
        make = phases.build_callbacks
        phases.build_callbacks = lambda *a: [*make(*a), Slow()]
    model, metadata, history, _ = run_finetune(
        out + "/ckpt", deterministic=True, resume=True, early_stopping_patience=50,
        reduce_lr={"patience": 50}, phase1={"learning_rate": 0.01}, phase2={"epochs": 8},
    )
    KerasModelDataset(out + "/classifier.keras").save(model)
    print("EPOCHS", [len(h["epoch"]) for h in history.values()])
    """
)


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    state_file = tmp_path / "ckpt" / "state.json"
    env = subprocess_env()
    first = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), "slow"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        state = {}
        while time.monotonic() < deadline and first.poll() is None:
            if state_file.is_file():
                state = json.loads(state_file.read_text())
                if state.get("phase") == "phase2" and state.get("epochs_done", 0) >= 2:
                    break
            time.sleep(0.2)
        assert first.poll() is None, "the run ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
    assert first.returncode == -signal.SIGKILL
    assert not (tmp_path / "classifier.keras").exists()  # no model, not even half of one
    killed_at = json.loads(state_file.read_text())["epochs_done"]
    assert 2 <= killed_at < 8
    # Keras's backup is written just after the state: a kill in between leaves it one behind.
    checkpoints = CheckpointDirectory(tmp_path / "ckpt")
    checkpoints.discard_partial_writes()
    backed_up = checkpoints.backed_up_epochs("phase2")
    assert backed_up in (killed_at - 1, killed_at)

    second = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "fast"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming phase2 at epoch {backed_up + 1}" in second.stderr
    assert "phase1 epoch" not in second.stderr  # phase 1 is not trained again
    assert "EPOCHS [1, 8]" in second.stdout  # the killed run's epochs are in the history
    assert not (tmp_path / "ckpt").exists()
    from breast_cancer_pipeline.datasets import KerasModelDataset

    model = KerasModelDataset(str(tmp_path / "classifier.keras")).load()
    assert model.output_shape == (None, 2)

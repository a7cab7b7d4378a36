"""The whole DAG on a tiny demo dataset, trained once per test session and shared.

`tests/test_experiments.py` (DVC and MLflow lineage) and `tests/test_run.py` (the DAG's
outputs, inference, the EDA notebook) check what one flow left behind, in a throw-away copy
of the project with its own git repository and a tiny demo environment: `dvc repro` → commit
→ `dvc exp run -S` on the fine-tuning learning rate → `dvc exp show` / `dvc metrics diff` →
`dvc push` to a local remote, cache and outputs wiped, `dvc pull`. Training the demo
pipeline is the slow part (minutes on 2 cores), so it runs once (:func:`experiments_flow`),
whichever module asks first; a fixture of each module returns it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
EXPERIMENT = "lr-0.0005"
LEARNING_RATE = "conf/demo/parameters.yml:finetune.phase2.learning_rate"
METRICS = "data/08_reporting/metrics.json"
MODEL = "data/06_models/classifier.keras"
#: Patients with a benign breast, and as many with a malignant one (4 images each).
LESION_PATIENTS = 4
#: Images of each lesion class: the two views of each affected breast.
IMAGES_PER_CLASS = 2 * LESION_PATIENTS
#: The candidates of the tiny run: the demo's own (random weights, here at 32 px).
CANDIDATES = ("small_cnn", "small_cnn_narrow", "small_resnet")
#: The demo environment made tiny: a few small images, a few epochs.
TINY = {
    "demo_data": {
        "lesion_patients_per_class": LESION_PATIENTS,
        "normal_patients": 1,
        "image_size": 48,
        "external_site": {"lesion_patients_per_class": 1, "normal_patients": 1},
    },
    "validation": {"min_per_class": 1},
    "augmentation": {"image_size": 32, "preview": {"rows": 2, "augmented_per_image": 2}},
    "backbone_selection": {"epochs": 2, "repeats": 1, "head_search": {"n_trials": 2, "epochs": 2}},
    "finetune": {"phase1": {"epochs": 1}, "phase2": {"epochs": 2, "learning_rate": 0.001}},
    "reporting": {
        "bootstrap": {"n_resamples": 50},
        "gradcam": {"per_class": 1},
        # A tiny model must still be able to become champion (the gate is tested elsewhere).
        "champion": {"min_ci_low": 0.0},
    },
}


@dataclass
class Experiments:
    """What the flow produced, for the tests (and for checks of the MLflow runs)."""

    project: Path
    remote: Path
    mlflow_db: Path
    env: dict[str, str] = field(default_factory=dict)  #: the environment the commands ran in
    baseline: str = ""  #: the commit of the first `dvc repro`
    seconds: dict[str, float] = field(default_factory=dict)  #: per step of the flow
    output: dict[str, str] = field(default_factory=dict)  #: stdout and stderr per step
    exp_show: list = field(default_factory=list)  #: `dvc exp show --json`
    metrics_diff: dict = field(default_factory=dict)  #: `dvc metrics diff --all --json`
    tracked: list[str] = field(default_factory=list)  #: `git ls-files` after the baseline
    baseline_model_md5: str = ""  #: classifier.keras after `dvc repro`
    model_md5: str = ""  #: classifier.keras after the experiment, before the wipe
    restored_md5: str = ""  #: classifier.keras after `dvc pull`


def copy_project(target: Path) -> None:
    """The project's tracked and new files, without data (its .gitkeep files kept) or lock."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = PROJECT / name
        if name == "dvc.lock" or not source.is_file():
            continue
        if name.startswith("data/") and not name.endswith(".gitkeep"):
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)


def make_tiny(project: Path) -> None:
    """Every block of the demo environment kept (its candidates too), made tiny."""
    demo = project / "conf/demo/parameters.yml"
    blocks = yaml.safe_load(demo.read_text())
    tiny = {name: _merge(blocks[name], TINY.get(name, {})) for name in blocks}
    demo.write_text(yaml.safe_dump(tiny))


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base or {})
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _environment(project: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEDRO_", "MLFLOW_", "DVC_", "GIT_"))
    }
    # git (and DVC's commits of experiments) without the developer's config: no signing.
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    identity = {"NAME": "Experiment Test", "EMAIL": "experiments@example.invalid"}
    env.update(
        {f"GIT_{who}_{k}": v for who in ("AUTHOR", "COMMITTER") for k, v in identity.items()}
    )
    env.update(
        # The venv's kedro, dvc and uv, as `make` puts them first.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        KEDRO_DISABLE_TELEMETRY="true",
        DVC_NO_ANALYTICS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
    )
    return env


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _flow(root: Path) -> Experiments:
    """The whole flow, once: repro, commit, an experiment, comparisons, push, wipe, pull."""
    flow = Experiments(root / "project", root / "remote", root / "project" / "mlflow.db")
    flow.project.mkdir()
    copy_project(flow.project)
    make_tiny(flow.project)
    env = flow.env = _environment(flow.project)

    def run(step: str, *command: str) -> str:
        started = time.perf_counter()
        done = subprocess.run(
            command,
            cwd=flow.project,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        flow.seconds[step] = round(time.perf_counter() - started, 1)
        flow.output[step] = done.stdout + done.stderr
        assert done.returncode == 0, f"{' '.join(command)}:\n{flow.output[step][-4000:]}"
        return done.stdout

    model = flow.project / MODEL
    run("git init", "git", "init", "-q")
    run("git add", "git", "add", "-A")
    run("git commit", "git", "commit", "-q", "-m", "A tiny demo")
    run("dvc repro", "dvc", "repro")
    flow.baseline_model_md5 = _md5(model)
    run("git add baseline", "git", "add", "-A")
    run("git commit baseline", "git", "commit", "-q", "-m", "Baseline")
    flow.baseline = run("git rev-parse", "git", "rev-parse", "HEAD").strip()
    flow.tracked = run("git ls-files", "git", "ls-files").split()
    run("dvc exp run", "dvc", "exp", "run", "-n", EXPERIMENT, "-S", f"{LEARNING_RATE}=0.0005")
    flow.exp_show = json.loads(run("dvc exp show", "dvc", "exp", "show", "--json"))
    diff = run("dvc metrics diff", "dvc", "metrics", "diff", "--all", "--json", "HEAD", EXPERIMENT)
    flow.metrics_diff = json.loads(diff)[METRICS]

    flow.model_md5 = _md5(model)
    run("dvc remote add", "dvc", "remote", "add", "-d", "local", str(flow.remote))
    run("dvc push", "dvc", "push")
    shutil.rmtree(flow.project / ".dvc/cache")
    run("wipe outputs", "git", "clean", "-f", "-d", "-X", "-q", "data")  # git-ignored files
    assert not model.exists()
    run("dvc pull", "dvc", "pull")
    run("dvc status", "dvc", "status")
    flow.restored_md5 = _md5(model)
    print("seconds per step:", flow.seconds)
    return flow


#: The one flow of this test session, or the error it failed with.
_RESULT: list[Experiments | BaseException] = []


def experiments_flow(tmp_path_factory: pytest.TempPathFactory) -> Experiments:
    """The flow of this session: run by the first module that asks, then shared.

    A failed flow is not rerun: every later caller gets its error.
    """
    if not _RESULT:
        try:
            _RESULT.append(_flow(tmp_path_factory.mktemp("experiments")))
        except BaseException as exc:
            _RESULT.append(exc)
            raise
    if isinstance(_RESULT[0], BaseException):
        pytest.fail(f"the shared demo flow failed: {_RESULT[0]}", pytrace=False)
    return _RESULT[0]


def pipeline_runs(flow: Experiments) -> tuple:
    """``(client, experiment id, runs)``: the flow's MLflow runs of pipeline stages."""
    import mlflow

    uri = f"sqlite:///{flow.mlflow_db}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    eid = client.get_experiment_by_name("breast_cancer_pipeline").experiment_id
    runs = client.search_runs([eid], filter_string="tags.`lineage.kind` = 'pipeline'")
    return client, eid, runs

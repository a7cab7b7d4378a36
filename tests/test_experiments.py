"""Experiments you can rerun and compare: `dvc repro`, `dvc exp run -S`, a remote.

One flow in a throw-away copy of the project with its own git repository and a tiny demo
environment, run once for the module (:func:`experiments`): `dvc repro` → commit →
`dvc exp run -S` on the fine-tuning learning rate → `dvc exp show` / `dvc metrics diff` →
`dvc push` to a local remote, cache and outputs wiped, `dvc pull`. The tests below check
what each step left behind; the fixture also exposes the project's MLflow database.
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

from breast_cancer_pipeline.pipeline_registry import TRAINING_STAGES

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
EXPERIMENT = "lr-0.0005"
LEARNING_RATE = "conf/demo/parameters.yml:finetune.phase2.learning_rate"
METRICS = "data/08_reporting/metrics.json"
#: The demo environment made tiny: a few small images, one light candidate, a few epochs.
TINY = {
    "demo_data": {"images_per_class": 12, "image_size": 48},
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
#: Every DVC stage: the demo data, then the stages of a training run.
STAGES = ["demo_data", *TRAINING_STAGES]


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
    model_md5: str = ""  #: classifier.keras after the experiment, before the wipe
    restored_md5: str = ""  #: classifier.keras after `dvc pull`


def _copy_project(target: Path) -> None:
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


def _make_tiny(project: Path) -> None:
    """Every block of the demo environment kept, made tiny; `small_cnn` the only candidate."""
    demo = project / "conf/demo/parameters.yml"
    blocks = yaml.safe_load(demo.read_text())
    demo.write_text(yaml.safe_dump({name: TINY.get(name, {}) for name in blocks}))
    # An environment can add candidates but not remove conf/base's: drop them there.
    selection = project / "conf/base/parameters_backbone_selection.yml"
    params = yaml.safe_load(selection.read_text())
    candidates = params["backbone_selection"]["candidates"]
    params["backbone_selection"]["candidates"] = {"small_cnn": candidates["small_cnn"]}
    selection.write_text(yaml.safe_dump(params, sort_keys=False))


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


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> Experiments:
    """The whole flow, once: repro, commit, an experiment, comparisons, push, wipe, pull."""
    root = tmp_path_factory.mktemp("experiments")
    flow = Experiments(root / "project", root / "remote", root / "project" / "mlflow.db")
    flow.project.mkdir()
    _copy_project(flow.project)
    _make_tiny(flow.project)
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

    run("git init", "git", "init", "-q")
    run("git add", "git", "add", "-A")
    run("git commit", "git", "commit", "-q", "-m", "A tiny demo")
    run("dvc repro", "dvc", "repro")
    run("git add baseline", "git", "add", "-A")
    run("git commit baseline", "git", "commit", "-q", "-m", "Baseline")
    flow.baseline = run("git rev-parse", "git", "rev-parse", "HEAD").strip()
    flow.tracked = run("git ls-files", "git", "ls-files").split()
    run("dvc exp run", "dvc", "exp", "run", "-n", EXPERIMENT, "-S", f"{LEARNING_RATE}=0.0005")
    flow.exp_show = json.loads(run("dvc exp show", "dvc", "exp", "show", "--json"))
    diff = run("dvc metrics diff", "dvc", "metrics", "diff", "--all", "--json", "HEAD", EXPERIMENT)
    flow.metrics_diff = json.loads(diff)[METRICS]

    model = flow.project / "data/06_models/classifier.keras"
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


def _metrics(row: dict) -> dict:
    return row["data"]["metrics"][METRICS]["data"]


def _learning_rate(row: dict) -> float:
    params = row["data"]["params"]["conf/demo/parameters.yml"]["data"]
    return params["finetune"]["phase2"]["learning_rate"]


def _baseline_and_experiment(experiments: Experiments) -> tuple[dict, dict]:
    """The rows of `dvc exp show --json` for the baseline commit and the experiment on it."""
    (baseline,) = [row for row in experiments.exp_show if row["rev"] == experiments.baseline]
    (experiment,) = [
        rev
        for group in baseline["experiments"] or []
        for rev in group["revs"]
        if rev["name"] == EXPERIMENT
    ]
    return baseline, experiment


def test_dvc_repro_under_the_demo_environment_versions_metrics_and_plots_in_git(experiments):
    lock = yaml.safe_load((experiments.project / "dvc.lock").read_text())
    assert lock["stages"]["finetune"]["cmd"] == "kedro run --env=demo --pipelines=finetune"
    assert lock["stages"]["finetune"]["params"]["params.yaml"] == {"kedro_env": "demo"}
    assert METRICS in experiments.tracked
    assert {"roc.csv", "pr.csv", "calibration.csv", "learning_curves.csv"} <= {
        Path(name).name for name in experiments.tracked if name.startswith("data/08_reporting/")
    }
    assert "data/06_models/classifier.keras" not in experiments.tracked  # in the DVC cache


def test_changing_the_learning_rate_reruns_exactly_finetune_and_reporting(experiments):
    ran = [
        line.split("'")[1]
        for line in experiments.output["dvc exp run"].splitlines()
        if line.startswith("Running stage")
    ]
    assert ran == ["finetune", "reporting"]


def test_exp_show_lists_the_baseline_and_the_experiment_with_their_test_auroc(experiments):
    baseline, experiment = _baseline_and_experiment(experiments)
    assert (_learning_rate(baseline), _learning_rate(experiment)) == (0.001, 0.0005)
    assert 0.0 <= _metrics(baseline)["auroc"] <= 1.0
    # The experiment's results are in the workspace: exp show reads the same file.
    workspace = json.loads((experiments.project / METRICS).read_text())
    assert _metrics(experiment)["auroc"] == workspace["auroc"]


def test_metrics_diff_compares_the_baseline_with_the_experiment(experiments):
    baseline, experiment = _baseline_and_experiment(experiments)
    auroc = experiments.metrics_diff["auroc"]
    assert (auroc["old"], auroc["new"]) == (
        _metrics(baseline)["auroc"],
        _metrics(experiment)["auroc"],
    )
    changed = [name for name, values in experiments.metrics_diff.items() if values.get("diff")]
    assert "log_loss" in changed  # another learning rate, another model


def test_push_then_pull_restores_the_wiped_cache_and_outputs(experiments):
    assert experiments.restored_md5 == experiments.model_md5
    assert "Data and pipelines are up to date" in experiments.output["dvc status"]
    assert any(experiments.remote.rglob("*")), "nothing was pushed"


def _pipeline_runs(experiments: Experiments):
    import mlflow

    uri = f"sqlite:///{experiments.mlflow_db}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    eid = client.get_experiment_by_name("breast_cancer_pipeline").experiment_id
    runs = client.search_runs([eid], filter_string="tags.`lineage.kind` = 'pipeline'")
    return client, eid, runs


def test_every_run_carries_commit_env_stage_and_data_digest_and_one_group(experiments):
    _, _, runs = _pipeline_runs(experiments)
    # The repro runs every stage once; the experiment reruns finetune and reporting.
    assert sorted(r.data.tags["dvc.stage"] for r in runs) == sorted(
        [*STAGES, "finetune", "reporting"]
    )
    for r in runs:
        tags = r.data.tags
        assert tags["kedro.env"] == "demo"
        assert tags["kedro.pipelines"] == tags["dvc.stage"]
        assert len(tags["git.commit"]) == 40
        assert tags["git.dirty"] in ("true", "false")
        assert tags["dvc.stage"] == "demo_data" or len(tags["data.manifest_digest"]) == 12
    repro = [r for r in runs if "dvc.exp_name" not in r.data.tags]
    exp = [r for r in runs if r.data.tags.get("dvc.exp_name") == EXPERIMENT]
    assert len({r.data.tags["lineage.group"] for r in repro}) == 1
    assert {r.data.tags["lineage.group"] for r in exp} == {f"exp:{EXPERIMENT}"}
    assert {r.data.tags["lineage.baseline_group"] for r in exp} == {
        repro[0].data.tags["lineage.group"]
    }
    assert {r.data.tags["git.commit"] for r in exp} == {experiments.baseline}
    digests = {
        r.data.tags["data.manifest_digest"] for r in runs if r.data.tags["dvc.stage"] != "demo_data"
    }
    assert len(digests) == 1


def test_model_versions_have_signatures_and_champion_is_the_promoted_one(experiments):
    import mlflow

    client, _, _ = _pipeline_runs(experiments)
    versions = sorted(
        client.search_model_versions("name='breast-cancer-classifier'"),
        key=lambda v: int(v.version),
    )
    assert len(versions) == 2
    for version in versions:
        info = mlflow.models.get_model_info(f"models:/breast-cancer-classifier/{version.version}")
        assert [c["name"] for c in info.signature.inputs.to_dict()] == ["image", "id", "path"]
        assert info.saved_input_example_info["type"] == "dataframe"
        assert "test.auroc" in version.tags
    assert client.get_run(versions[1].run_id).data.tags["lineage.group"] == f"exp:{EXPERIMENT}"
    promoted = [v for v in versions if v.tags["champion.decision"] == "promoted"]
    assert promoted
    champion = client.get_model_version_by_alias("breast-cancer-classifier", "champion")
    assert str(champion.version) == str(promoted[-1].version)

"""Lineage tags: git state, Kedro environment, pipelines, DVC stage and experiment, the
manifest's digest (as a tag and a logged dataset), and the group shared by one DVC run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro_datasets.pandas import ParquetDataset

from breast_cancer_pipeline import context as project_context
from breast_cancer_pipeline import lineage, progress
from breast_cancer_pipeline.hooks import LineageHook

PROJECT = Path(__file__).resolve().parents[1]
DVC_VARIABLES = ("DVC_STAGE", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "LINEAGE_GROUP")
pytestmark = pytest.mark.usefixtures("mlflow_store")


def _git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout


@pytest.fixture(autouse=True)
def no_dvc(monkeypatch):
    """The tests set DVC's variables themselves (pytest may run under `dvc exp run`)."""
    for name in DVC_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A committed project: code, a dvc.lock and git-tracked data outputs."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "data" / "08_reporting").mkdir(parents=True)
    (root / "src" / "nodes.py").write_text("x = 1\n")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    (root / "data" / "08_reporting" / "metrics.json").write_text("{}\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "init")
    return root


def test_a_clean_tree_is_its_commit_and_code_state(repo):
    commit = _git(repo, "rev-parse", "HEAD").strip()
    state = lineage.git_state(repo)
    assert state == {
        "git.commit": commit,
        "git.dirty": "false",
        "git.code_digest": lineage.code_digest(repo),
    }
    assert lineage.lineage_group(state, {}) == f"code:{state['git.code_digest']}"


def test_what_runs_write_changes_neither_dirty_flag_nor_group(repo):
    before = lineage.git_state(repo)
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (repo / "data" / "08_reporting" / "metrics.json").write_text('{"auroc": 0.9}\n')
    (repo / "data" / "08_reporting" / "new.csv").write_text("a\n")
    after = lineage.git_state(repo)
    assert after["git.dirty"] == "false"
    assert after["git.code_digest"] == before["git.code_digest"]
    # Committing them (as after a `dvc repro`) keeps the code state: an experiment started
    # from the new commit finds the repro's runs under its baseline group.
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "dvc.lock and metrics")
    committed = lineage.git_state(repo)
    assert committed["git.commit"] != before["git.commit"]
    assert committed["git.code_digest"] == before["git.code_digest"]


def test_changed_and_new_code_make_it_dirty_with_a_digest_of_the_changes(repo):
    clean = lineage.git_state(repo)
    (repo / "src" / "nodes.py").write_text("x = 2\n")
    first = lineage.git_state(repo)
    assert first["git.dirty"] == "true" and len(first["git.diff_digest"]) == 12
    assert first["git.code_digest"] != clean["git.code_digest"]
    assert lineage.git_state(repo) == first  # every stage of one `dvc repro` sees the same
    (repo / "src" / "nodes.py").write_text("x = 3\n")
    assert lineage.git_state(repo)["git.diff_digest"] != first["git.diff_digest"]
    (repo / "src" / "nodes.py").write_text("x = 1\n")
    (repo / "src" / "extra.py").write_text("y = 1\n")  # untracked, not ignored
    assert lineage.git_state(repo)["git.dirty"] == "true"
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "code")
    assert lineage.git_state(repo)["git.code_digest"] != clean["git.code_digest"]


def test_outside_git_there_is_no_commit(tmp_path):
    assert lineage.git_state(tmp_path) == {}
    assert lineage.lineage_group({}, {}) == "unversioned"


def test_the_group_is_the_experiment_under_dvc_exp_run_or_the_explicit_one(repo):
    git = lineage.git_state(repo)
    assert lineage.lineage_group(git, {"DVC_EXP_NAME": "bulky-tram"}) == "exp:bulky-tram"
    both = {"DVC_EXP_NAME": "bulky-tram", "LINEAGE_GROUP": "nightly-7"}
    assert lineage.lineage_group(git, both) == "nightly-7"


def test_run_tags_name_env_pipelines_the_dvc_stage_and_the_baseline(repo):
    baseline = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "src" / "nodes.py").write_text("x = 2\n")  # `dvc exp run -S` edits the workspace
    environ = {"DVC_STAGE": "finetune", "DVC_EXP_NAME": "e1", "DVC_EXP_BASELINE_REV": baseline}
    tags = lineage.run_tags(repo, "demo", ["finetune"], environ)
    assert tags["kedro.env"] == "demo"
    assert tags["kedro.pipelines"] == "finetune"
    assert (tags["dvc.stage"], tags["dvc.exp_name"], tags["dvc.exp_baseline"]) == (
        "finetune",
        "e1",
        baseline,
    )
    assert tags["lineage.group"] == "exp:e1" and tags["lineage.kind"] == "pipeline"
    assert tags["lineage.baseline_group"] == f"code:{lineage.code_digest(repo, baseline)}"
    plain = lineage.run_tags(repo, "local", None, {})
    assert plain["kedro.pipelines"] == "__default__"
    assert not any(k.startswith("dvc.") for k in plain)
    assert "lineage.baseline_group" not in plain


def test_the_manifest_digest_is_of_its_content_not_its_file(tmp_path):
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["benign", "malignant"]})
    frame.to_parquet(tmp_path / "a.parquet", compression="snappy")
    frame.to_parquet(tmp_path / "b.parquet", compression="gzip")
    assert (tmp_path / "a.parquet").read_bytes() != (tmp_path / "b.parquet").read_bytes()
    digests = {
        lineage.frame_digest(pd.read_parquet(tmp_path / f)) for f in ("a.parquet", "b.parquet")
    }
    assert digests == {lineage.frame_digest(frame)}
    relabelled = frame.assign(label=["benign", "benign"])
    assert lineage.frame_digest(relabelled) != lineage.frame_digest(frame)
    assert lineage.frame_digest(frame.rename(columns={"label": "y"})) != lineage.frame_digest(frame)


def _identity(frame):
    return frame


@pytest.fixture
def manifest(tmp_path) -> tuple[DataCatalog, pd.DataFrame]:
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["benign", "malignant"]})
    path = tmp_path / "manifest.parquet"
    catalog = DataCatalog({"manifest": ParquetDataset(filepath=str(path)), "copy": MemoryDataset()})
    return catalog, frame


def _run_hook(repo, pipeline, catalog, names, *, write: pd.DataFrame | None = None):
    """What a Kedro run does around the hook: kedro-mlflow's run, the nodes, the end."""
    hook = LineageHook()
    run_params = {"env": "demo", "project_path": str(repo), "pipeline_names": names}
    with mlflow.start_run() as run:
        hook.before_pipeline_run(run_params, pipeline, catalog)
        if write is not None:
            catalog.save("manifest", write)
        hook.after_pipeline_run(pipeline, catalog)
    return mlflow.get_run(run.info.run_id)


def test_a_run_reading_the_manifest_logs_it_as_its_input(repo, manifest, monkeypatch):
    catalog, frame = manifest
    catalog.save("manifest", frame)
    monkeypatch.setenv("DVC_STAGE", "validation")
    pipeline = Pipeline([Node(_identity, "manifest", "copy", name="check")])

    run = _run_hook(repo, pipeline, catalog, ["validation"])

    digest = lineage.frame_digest(frame)
    tags = run.data.tags
    assert tags["data.manifest_digest"] == digest
    assert tags["git.commit"] == _git(repo, "rev-parse", "HEAD").strip()
    assert (tags["kedro.env"], tags["kedro.pipelines"], tags["dvc.stage"]) == (
        "demo",
        "validation",
        "validation",
    )
    (logged,) = run.inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("manifest", digest)
    assert json.loads(logged.dataset.source)["uri"].endswith("manifest.parquet")
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "input"


def test_the_run_that_writes_the_manifest_logs_the_new_one(repo, manifest):
    catalog, frame = manifest
    catalog.save("manifest", frame.iloc[:1])  # a stale manifest from an earlier run
    pipeline = Pipeline([Node(_identity, "copy", "manifest", name="ingest")])

    run = _run_hook(repo, pipeline, catalog, ["ingestion"], write=frame)

    assert run.data.tags["data.manifest_digest"] == lineage.frame_digest(frame)
    (logged,) = run.inputs.dataset_inputs
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "output"


def test_a_run_of_parameters_only_has_no_data_digest(repo, manifest):
    catalog, frame = manifest
    catalog.save("manifest", frame)
    pipeline = Pipeline([Node(_identity, "params:demo_data", "copy", name="make")])

    run = _run_hook(repo, pipeline, catalog, ["demo_data"])

    assert "data.manifest_digest" not in run.data.tags
    assert "git.commit" in run.data.tags
    assert not run.inputs.dataset_inputs


def _search_like(params):
    progress.publish_trial(
        progress.TrialReport("study-1", 0, "complete", {"dropout": 0.2}, {"score": 0.9})
    )
    return params


def test_a_kedro_run_of_the_project_is_tagged_and_its_trials_inherit_the_tags(monkeypatch):
    """The hooks as settings.py registers them, in a session of this project."""
    monkeypatch.setenv("DVC_STAGE", "backbone_selection")
    bootstrap_project(PROJECT)
    pipeline = Pipeline([Node(_search_like, "params:inference", "out", name="search")])
    # Pipelines built by an earlier session of this process would be rebuilt from the
    # new session's configuration (context.use_config_loader), replacing this one.
    monkeypatch.setattr(project_context, "_built_from", None)
    monkeypatch.setattr(pipelines, "_content", {"__default__": pipeline})
    monkeypatch.setattr(pipelines, "_is_data_loaded", True)
    with KedroSession.create(project_path=PROJECT, env="demo") as session:
        session.run()
    while mlflow.active_run() is not None:
        mlflow.end_run()

    assert progress._trial_listeners == []  # the hook stopped listening with the run
    runs = mlflow.search_runs(experiment_names=["breast_cancer_pipeline"], output_format="list")
    (parent,) = [r for r in runs if r.data.tags["lineage.kind"] == "pipeline"]
    (trial,) = [r for r in runs if r.data.tags["lineage.kind"] == "trial"]
    tags = parent.data.tags
    assert tags["git.commit"] == _git(PROJECT, "rev-parse", "HEAD").strip()
    assert tags["git.dirty"] in ("true", "false")
    assert (tags["kedro.env"], tags["kedro.pipelines"]) == ("demo", "__default__")
    assert tags["dvc.stage"] == "backbone_selection"
    assert tags["lineage.group"] == lineage.lineage_group(lineage.git_state(PROJECT), {})
    assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
    for key in ("git.commit", "kedro.env", "dvc.stage", "lineage.group"):
        assert trial.data.tags[key] == tags[key]
    assert trial.data.params == {"dropout": "0.2"}
    found = mlflow.search_runs(
        experiment_names=["breast_cancer_pipeline"],
        filter_string=f"tags.`lineage.group` = '{tags['lineage.group']}'",
        output_format="list",
    )
    assert {r.info.run_id for r in found} == {parent.info.run_id, trial.info.run_id}

"""One DAG per environment: `kedro run --env`, `KEDRO_ENV`, kedro-viz and DVC agree.

The backbone candidates come from the parameters, so the DAG depends on the environment.
A candidate that only a test environment defines must be built and run under `--env`,
drawn by kedro-viz under `--env`, and be absent without it.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from breast_cancer_pipeline import context as project_context

PROJECT = Path(__file__).resolve().parents[1]
ENV = "extra_candidate"
CANDIDATE = "tiny_cnn"
#: The environment: one more candidate, and heads small enough to train in a second.
EXTRA = {
    "backbone_selection": {
        "candidates": {CANDIDATE: {"backbone": "small_cnn", "weights": None}},
        "epochs": 1,
        "repeats": 1,
    }
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project's configuration with the environment `extra_candidate`."""
    shutil.copytree(PROJECT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "conf" / ENV).mkdir()
    (tmp_path / "conf" / ENV / "parameters.yml").write_text(yaml.safe_dump(EXTRA))
    (tmp_path / "src").mkdir()  # the package itself is installed; Kedro only checks the folder
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    # The configuration the pipelines are built from is the process's: restored afterwards.
    monkeypatch.setattr(project_context, "_active_loader", project_context._active_loader)
    monkeypatch.setattr(project_context, "_built_from", project_context._built_from)
    return tmp_path


def _pipelines(project: Path, env: str | None, runtime_params: dict | None = None) -> dict:
    """The registered pipelines as a session in ``env`` (and ``--params``) builds them."""
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(
        project_path=project, env=env, runtime_params=runtime_params
    ) as session:
        session.load_context()
        return dict(pipelines)


def _stage_nodes(project: Path, env: str | None) -> set[str]:
    """Node names of the backbone_selection stage as a session in ``env`` builds them."""
    return {node.name for node in _pipelines(project, env)["backbone_selection"].nodes}


def _candidate_nodes(name: str) -> set[str]:
    return {f"backbone_selection.{name}.extract_features", f"backbone_selection.{name}.train_head"}


def test_env_and_kedro_env_build_the_same_dag_in_one_process(project, monkeypatch):
    without = _stage_nodes(project, None)
    assert _candidate_nodes("small_cnn") <= without
    assert not _candidate_nodes(CANDIDATE) & without

    with_env = _stage_nodes(project, ENV)  # `kedro run --env=extra_candidate`
    assert with_env == without | _candidate_nodes(CANDIDATE)

    monkeypatch.setenv("KEDRO_ENV", ENV)  # `KEDRO_ENV=extra_candidate kedro run`
    assert _stage_nodes(project, None) == with_env


def test_kedro_viz_draws_the_environment_s_candidates(project):
    from kedro_viz.integrations.kedro.data_loader import load_data

    # What `kedro viz run --env X` loads (without --include-hooks: no project hooks run).
    _, pipelines, _ = load_data(project, env=ENV)
    names = {node.name for node in pipelines["backbone_selection"].nodes}
    assert _candidate_nodes(CANDIDATE) <= names
    _, pipelines, _ = load_data(project)
    assert not _candidate_nodes(CANDIDATE) & {n.name for n in pipelines["backbone_selection"].nodes}


def _model_input() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 255, (6, 16, 16, 1), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_val": rng.integers(0, 255, (3, 16, 16, 1), dtype=np.uint8),
        "y_val": np.array([0, 1, 2]),
    }


def _cli(project: Path, *args: str):
    from click.testing import CliRunner
    from kedro.framework.cli.cli import KedroCLI
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    return CliRunner().invoke(KedroCLI(project_path=project), list(args))


def test_a_candidate_only_in_an_environment_runs_with_env(project):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=ENV) as session:
        catalog = session.load_context().catalog
        catalog.save("model_input", _model_input())
        catalog.save("augmentation_spec", {})
    stage = f"--namespaces=backbone_selection.{CANDIDATE}"

    done = _cli(project, "run", f"--env={ENV}", "--pipelines=backbone_selection", stage)
    assert done.exit_code == 0, done.output
    result = yaml.safe_load(
        (project / f"data/07_model_output/candidates/{CANDIDATE}.json").read_text()
    )
    assert (result["backbone"], result["repeats"], result["epochs"]) == ("small_cnn", 1, 1)
    assert (project / f"data/04_feature/backbone_features/{CANDIDATE}").is_dir()

    # Without the environment there is no such candidate to run.
    done = _cli(project, "run", "--pipelines=backbone_selection", stage)
    assert done.exit_code != 0
    assert CANDIDATE in str(done.exception)


def _blocks_read_by(pipeline) -> set[str]:
    """Top-level parameter blocks a pipeline reads (and the model it serves, if it logs one)."""
    inputs = set(pipeline.inputs())
    if hasattr(pipeline, "inference"):  # kedro-mlflow's PipelineML
        inputs |= set(pipeline.inference.inputs())
    return {i.removeprefix("params:").split(".")[0] for i in inputs if i.startswith("params:")}


def test_every_dvc_stage_runs_in_the_tracked_environment_and_tracks_its_blocks(monkeypatch):
    monkeypatch.setattr(project_context, "_active_loader", project_context._active_loader)
    monkeypatch.setattr(project_context, "_built_from", project_context._built_from)
    dvc = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
    env = yaml.safe_load((PROJECT / "params.yaml").read_text())["kedro_env"]
    env_blocks = yaml.safe_load((PROJECT / "conf" / env / "parameters.yml").read_text())
    pipelines = _pipelines(PROJECT, env)
    # The DAG a stage runs depends on evaluation.folds/ensemble: it tracks every block that
    # any of its shapes reads (and the block that shapes it).
    folded = _pipelines(PROJECT, env, {"evaluation": {"folds": 2, "ensemble": True}})
    for name, stage in dvc["stages"].items():
        assert stage["cmd"] == f"kedro run --env=${{kedro_env}} --pipelines={name}"
        params = {}
        for entry in stage["params"]:
            for file, keys in (
                {"params.yaml": [entry]} if isinstance(entry, str) else entry
            ).items():
                params.setdefault(file, set()).update(keys)
        blocks = _blocks_read_by(pipelines[name]) | _blocks_read_by(folded[name])
        if name in ("finetune", "reporting"):
            blocks.add("evaluation")
        assert params.pop("params.yaml") == {"kedro_env"}, name
        assert params.pop("conf/${kedro_env}/parameters.yml") == blocks, name
        assert params == {f"conf/base/parameters_{block}.yml": {block} for block in blocks}, name
        # DVC refuses a stage whose block the environment's file lacks.
        assert blocks <= set(env_blocks), (
            f"conf/{env}/parameters.yml lacks {blocks - set(env_blocks)}"
        )


def test_parameters_are_read_once_until_a_file_changes(project, monkeypatch):
    """Without a session, every stage's wiring shares one read of the configuration."""
    monkeypatch.setattr(project_context, "_active_loader", None)
    monkeypatch.setattr(project_context, "_read", None)
    monkeypatch.setattr(project_context, "_sessionless", None)
    monkeypatch.setenv("KEDRO_ENV", ENV)
    first = project_context.run_parameters()
    assert CANDIDATE in first["backbone_selection"]["candidates"]
    assert project_context.run_parameters() is first
    extra = project / "conf" / ENV / "parameters.yml"
    extra.write_text(yaml.safe_dump({**EXTRA, "backbone_selection": {"epochs": 7}}))
    changed = project_context.run_parameters()
    assert changed["backbone_selection"]["epochs"] == 7
    assert CANDIDATE not in changed["backbone_selection"]["candidates"]

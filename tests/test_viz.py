"""`kedro viz build`: every dataset sits in a layer and every stage is a collapsible group."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from breast_cancer_pipeline.pipeline_registry import TRAINING_STAGES

PROJECT = Path(__file__).resolve().parents[1]

#: kedro-viz's layer names (the catalog's 01_raw ... 08_reporting sections) in the order it
#: draws them: along the DAG. The backbone features are computed from the model-input arrays,
#: so `feature` comes after `model_input`.
FLOW = [
    "raw",
    "intermediate",
    "primary",
    "model_input",
    "feature",
    "models",
    "model_output",
    "reporting",
]


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """The static site `kedro viz build` writes, built in a throw-away copy of the project."""
    root = tmp_path_factory.mktemp("viz")
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()  # the package itself is installed; Kedro only checks the folder
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEDRO_", "MLFLOW_"))}
    env["KEDRO_DISABLE_TELEMETRY"] = "true"
    done = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    api = root / "build" / "api"
    # kedro-viz reports a failed build on stdout, sometimes with return code 0.
    assert done.returncode == 0 and (api / "main").is_file(), done.stdout[-3000:] + done.stderr
    return api


def _graph(build: Path, pipeline: str) -> dict:
    path = build / "main" if pipeline == "__default__" else build / "pipelines" / pipeline
    return json.loads(path.read_text())


@pytest.mark.parametrize("pipeline", ["__default__", "demo_data", "inference"])
def test_every_dataset_has_a_layer(build, pipeline):
    graph = _graph(build, pipeline)
    datasets = [node for node in graph["nodes"] if node["type"] == "data"]
    assert datasets
    assert {node["name"]: node["layer"] for node in datasets if node["layer"] not in FLOW} == {}


def test_no_node_or_stage_feeds_an_earlier_layer(build):
    # kedro-viz orders layers through the nodes and through each collapsed stage (any input of
    # a stage precedes all of its outputs): one step backwards and it shows no layers at all.
    graph = _graph(build, "__default__")
    nodes = {node["id"]: node for node in graph["nodes"]}
    steps = {
        name: (group["inputs"], group["outputs"])
        for name, group in graph["modular_pipelines"].items()
        if name != "__root__"
    }
    for edge in graph["edges"]:
        if nodes[edge["target"]]["type"] == "task":
            steps.setdefault(edge["target"], ([], []))[0].append(edge["source"])
        if nodes[edge["source"]]["type"] == "task":
            steps.setdefault(edge["source"], ([], []))[1].append(edge["target"])
    backwards = [
        f"{name}: {a['name']} ({a['layer']}) -> {b['name']} ({b['layer']})"
        for name, (ins, outs) in steps.items()
        for a in (nodes[i] for i in ins if nodes[i]["type"] == "data")
        for b in (nodes[o] for o in outs if nodes[o]["type"] == "data")
        if FLOW.index(a["layer"]) > FLOW.index(b["layer"])
    ]
    assert backwards == []


def test_layers_follow_the_data_flow(build):
    # kedro-viz sorts layers along the DAG, and lists none when they form a cycle.
    assert _graph(build, "__default__")["layers"] == FLOW


def test_each_stage_is_a_group_and_datasets_keep_their_names(build):
    graph = _graph(build, "__default__")
    groups = graph["modular_pipelines"]
    candidates = [name for name in groups if name.startswith("backbone_selection.")]
    assert set(groups) == {"__root__", *TRAINING_STAGES, *candidates}
    assert len(candidates) >= 2  # one nested group per backbone candidate
    root_children = {child["id"] for child in groups["__root__"]["children"]}
    assert set(TRAINING_STAGES) <= root_children  # collapsible at the top level

    tasks = {node["full_name"]: node for node in graph["nodes"] if node["type"] == "task"}
    assert tasks["finetune.finetune_classifier"]["modular_pipelines"] == ["finetune"]
    datasets = {node["name"] for node in graph["nodes"] if node["type"] == "data"}
    assert {"model_input", "classifier", "manifest", "metrics"} <= datasets
    assert not {name for name in datasets if name.split(".")[0] in TRAINING_STAGES}
    params = {node["name"] for node in graph["nodes"] if node["type"] == "parameters"}
    assert "params:finetune" in params


@pytest.mark.parametrize("pipeline", ["demo_data", "inference"])
def test_the_other_pipelines_are_groups_too(build, pipeline):
    assert pipeline in _graph(build, pipeline)["modular_pipelines"]


def test_the_tile_stage_is_drawn_before_the_model_input(build):
    """`tile_images` (augmentation.tiles) sits in the augmentation group, feeding both arrays."""
    graph = _graph(build, "__default__")
    nodes = {node["id"]: node for node in graph["nodes"]}
    tasks = {node["full_name"]: node for node in nodes.values() if node["type"] == "task"}
    assert tasks["augmentation.tile_images"]["modular_pipelines"] == ["augmentation"]
    layout = next(i for i, n in nodes.items() if n["type"] == "data" and n["name"] == "tile_layout")
    readers = {nodes[e["target"]]["full_name"] for e in graph["edges"] if e["source"] == layout}
    assert readers == {"augmentation.prepare_model_input", "augmentation.prepare_external_input"}

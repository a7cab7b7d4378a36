"""Listing pipelines and loading the catalog must not import TensorFlow (data stages start fast)."""

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

CODE = """
import sys
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.framework.project import pipelines

bootstrap_project({project!r})
names = sorted(pipelines)
with KedroSession.create(project_path={project!r}, env="demo") as session:
    catalog = session.load_context().catalog
    for name in catalog.keys():
        catalog.get(name)  # instantiate every dataset, as kedro-mlflow does at run start
print(",".join(names))
print(sorted(m for m in ("tensorflow", "keras", "great_expectations") if m in sys.modules))
"""


def test_registry_and_catalog_do_not_import_tensorflow(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", CODE.format(project=str(PROJECT))],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        check=True,
    )
    names, heavy = done.stdout.strip().splitlines()[-2:]
    assert names.split(",") == [
        "__default__",
        "augmentation",
        "backbone_selection",
        "demo_data",
        "finetune",
        "inference",
        "ingestion",
        "reporting",
        "validation",
    ]
    assert heavy == "[]"

"""Listing pipelines and loading the catalog start fast: no heavy import, compiled bytecode.

``kedro registry list`` costs what it imports. The project's registry, settings and hooks must
not import the training or validation stacks (TensorFlow alone is ~5 s of CPU here, GX ~8 s):
the stages import them inside their nodes; nor pydicom, which the decoder imports when it
first reads a DICOM file. MLflow is not checked here: kedro-mlflow's CLI
plugin imports it on every ``kedro`` command before the project's code runs. The rest of the
start-up is Python compiling modules, which ``make install`` does once (``--compile-bytecode``).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
#: Imported only by the nodes that need them.
HEAVY = (
    "tensorflow",
    "keras",
    "great_expectations",
    "sklearn",
    "optuna",
    "matplotlib",
    "torch",
    "distributed",  # only runs with cluster.address set
    "dask",
    "pydicom",
)

CODE = """
import json, sys
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.framework.project import pipelines

heavy = {heavy!r}
loaded = lambda: sorted(m for m in heavy if m in sys.modules)
bootstrap_project({project!r})
names = sorted(pipelines)
after_registry = loaded()
with KedroSession.create(project_path={project!r}, env="demo") as session:
    catalog = session.load_context().catalog
    for name in catalog.keys():
        catalog.get(name)  # instantiate every dataset, as kedro-mlflow does at run start
print(json.dumps({{"names": names, "registry": after_registry, "catalog": loaded()}}))
"""


def test_registry_and_catalog_do_not_import_the_heavy_stacks():
    done = subprocess.run(
        [sys.executable, "-c", CODE.format(project=str(PROJECT), heavy=HEAVY)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["names"] == [
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
    assert result["registry"] == []
    assert result["catalog"] == []


def test_install_compiles_the_bytecode():
    # Where PYTHONDONTWRITEBYTECODE is set (CI images), without it every start recompiles
    # MLflow, pandas and Kedro from source: `kedro registry list` 7 s instead of 2.7 s.
    makefile = (PROJECT / "Makefile").read_text()
    sync = re.search(r"^\t.*uv sync .*$", makefile, flags=re.MULTILINE)
    assert sync is not None and "--compile-bytecode" in sync.group(0)

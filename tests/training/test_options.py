"""The training options: importable without TensorFlow, and the schema's very values."""

import ast
import subprocess
import sys
from pathlib import Path
from typing import get_args

from breast_cancer_pipeline.training.options import MIXED_PRECISION, STRATEGIES

TRAINING = Path(__file__).resolve().parents[2] / "src" / "breast_cancer_pipeline" / "training"


def test_the_schema_the_options_and_the_plan_import_without_tensorflow():
    code = (
        "import sys\n"
        "import breast_cancer_pipeline.pipelines.finetune.parameters\n"
        "import breast_cancer_pipeline.pipelines.finetune.nodes\n"
        "import breast_cancer_pipeline.training.plan\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_schema_accepts_exactly_the_options_training_resolves():
    from breast_cancer_pipeline.pipelines.finetune.parameters import FinetuneParams

    fields = FinetuneParams.model_fields
    assert get_args(fields["strategy"].annotation) == STRATEGIES
    assert get_args(fields["mixed_precision"].annotation) == MIXED_PRECISION
    assert "off" in MIXED_PRECISION and "multi_worker" in STRATEGIES


def test_no_training_module_imports_a_pipeline():
    """The training package sits below the pipelines: no import runs back up."""
    upward = []
    for path in sorted(TRAINING.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "breast_cancer_pipeline.pipelines"
            ):
                upward.append(f"{path.name}: {node.module}")
    assert len(list(TRAINING.glob("*.py"))) > 5
    assert upward == []

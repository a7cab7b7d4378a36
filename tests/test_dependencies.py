"""Everything src/ imports is declared in [project].dependencies."""

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = Path(__file__).resolve().parents[1]
SRC = PROJECT / "src"


def _imported_modules() -> dict[str, str]:
    """Top-level module imported -> first file importing it (absolute imports only)."""
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(SRC)))
    return found


def test_every_third_party_import_is_a_declared_dependency():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(text).name) for text in project["dependencies"]}
    owners = packages_distributions()
    undeclared = {
        module: where
        for module, where in _imported_modules().items()
        if module not in sys.stdlib_module_names
        and module not in {"breast_cancer_pipeline", "__future__"}
        and not {canonicalize_name(d) for d in owners.get(module, [])} & declared
    }
    assert undeclared == {}

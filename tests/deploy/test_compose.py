"""compose.yaml: the services of `make services` for users with Docker (not run here), kept in
step with deploy/services.py and the project's lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from deploy import services as svc

PROJECT = Path(__file__).resolve().parents[2]


def _locked(name: str) -> str:
    packages = tomllib.loads((PROJECT / "uv.lock").read_text())["package"]
    return next(p["version"] for p in packages if p["name"] == name)


def test_compose_runs_the_same_services_on_this_machine_only():
    compose = yaml.safe_load((PROJECT / "compose.yaml").read_text())
    postgres, mlflow = compose["services"]["postgres"], compose["services"]["mlflow"]
    assert postgres["environment"]["POSTGRES_USER"] == svc.ROLE
    # The first database is the image's, the others its init script's.
    databases = [postgres["environment"]["POSTGRES_DB"]]
    init_script = compose["configs"]["optuna-database"]["content"]
    databases += re.findall(r"CREATE DATABASE (\w+);", init_script)
    assert databases == list(svc.DATABASES)
    assert f"--backend-store-uri=postgresql://{svc.ROLE}@postgres:5432/mlflow" in mlflow["command"]
    for service in (postgres, mlflow):
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    assert "PGPASSWORD:?" in mlflow["environment"]["PGPASSWORD"]  # from the environment only
    install = mlflow["build"]["dockerfile_inline"]
    assert f"mlflow=={_locked('mlflow')}" in install
    assert f"psycopg[binary]=={_locked('psycopg')}" in install
    assert mlflow["environment"]["MLFLOW_DISABLE_TELEMETRY"] == "true"

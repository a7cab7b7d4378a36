"""Nothing leaves the machine by default: a demo stage run by `dvc repro`, and the server answering
a request, under a guard that refuses (and records) every name lookup or connection beyond this
machine. The guard is an audit hook in a `sitecustomize` on PYTHONPATH, so it runs in every Python
process the commands start; the environment has none of the tools' switches and no CI marker (MLflow
keeps quiet in CI by itself), so only the project's own files keep the usage data local."""

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from breast_cancer_pipeline.telemetry import OPT_IN, TELEMETRY_OFF, keep_usage_data_local
from tests.serving._served import free_port, log_and_register, post, request_body

PROJECT = Path(__file__).resolve().parents[1]

GUARD = """
import os, socket, sys

_LOG = os.environ["NETWORK_GUARD_LOG"]
_LOCAL = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", socket.gethostname()}


def _local(host):
    host = host.decode() if isinstance(host, bytes) else str(host)
    return host in _LOCAL or host.startswith("127.")


def _refuse(what):
    with open(_LOG, "a") as log:
        log.write(f"{os.getpid()} {' '.join(sys.argv)[:200]}: {what}\\n")
    raise OSError(f"network guard: {what} refused")


def _hook(event, args):
    if event == "socket.getaddrinfo" and args[0] is not None and not _local(args[0]):
        _refuse(f"lookup of {args[0]!r}")
    elif event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            _refuse(f"connection to {address!r}")


sys.addaudithook(_hook)
"""

#: Variables that would turn a tool's usage data off (or mark CI) without the project's help.
_NOT_INHERITED = (*TELEMETRY_OFF, OPT_IN, "CI", "PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER")


@pytest.fixture
def guarded_env(tmp_path):
    """An environment whose Python processes refuse non-local lookups and connections."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "network.log"
    log.touch()
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env = {k: v for k, v in env.items() if not k.startswith(("MLFLOW_", "KEDRO_", "DVC_"))}
    env.update(
        PYTHONPATH=str(guard),
        NETWORK_GUARD_LOG=str(log),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env, log


def test_switches_are_set_only_where_the_user_has_not_chosen():
    env = {"DO_NOT_TRACK": "false"}
    added = keep_usage_data_local(env)
    assert env["DO_NOT_TRACK"] == "false" and "DO_NOT_TRACK" not in added
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DVC_NO_ANALYTICS"] == "1"
    assert env["KEDRO_DISABLE_TELEMETRY"] == "true" and env["GX_ANALYTICS_ENABLED"] == "false"
    opted_in = {OPT_IN: "allow"}
    assert keep_usage_data_local(opted_in) == {} and opted_in == {OPT_IN: "allow"}


def test_project_files_keep_every_switch_off():
    assert "consent: false" in (PROJECT / ".telemetry").read_text()
    assert "analytics = false" in (PROJECT / ".dvc" / "config").read_text()
    makefile = (PROJECT / "Makefile").read_text()
    for key, value in TELEMETRY_OFF.items():
        assert f"export {key} ?= {value}" in makefile


def test_the_guard_refuses_and_records_a_lookup(guarded_env):
    env, log = guarded_env
    code = "import socket; socket.getaddrinfo('usage-data.example.invalid', 443)"
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, timeout=60
    )
    assert done.returncode != 0 and b"network guard" in done.stderr
    assert "lookup of 'usage-data.example.invalid'" in log.read_text()


def _project_copy(root: Path) -> Path:
    """What `dvc repro demo_data` needs: config, DVC files, the package source, tiny demo data."""
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".dvc").mkdir()
    for name in ("pyproject.toml", ".telemetry", "dvc.yaml", "params.yaml", ".dvc/config"):
        shutil.copy2(PROJECT / name, root / name)
    demo = root / "conf" / "demo" / "parameters.yml"
    blocks = yaml.safe_load(demo.read_text())
    tiny = {"lesion_patients_per_class": 2, "normal_patients": 0, "image_size": 48}
    blocks["demo_data"] = {**(blocks["demo_data"] or {}), **tiny}
    demo.write_text(yaml.safe_dump(blocks))
    for layer in ("01_raw", "08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    return root


DECISIONS = """
import json
from pathlib import Path

import breast_cancer_pipeline  # noqa: F401  what `kedro run` and the server import first
from dvc.analytics import is_enabled
from kedro_telemetry.plugin import _check_for_telemetry_consent
from mlflow.telemetry.utils import is_telemetry_disabled

print(json.dumps({
    "mlflow": not is_telemetry_disabled(),
    "kedro": bool(_check_for_telemetry_consent(Path.cwd())),
    "dvc": is_enabled(),
}))
"""


@pytest.mark.parametrize("opt_in", [False, True], ids=["default", "opted_in"])
def test_each_tool_decides_to_send_nothing_unless_the_user_opts_in(guarded_env, tmp_path, opt_in):
    env, _ = guarded_env
    project = _project_copy(tmp_path / "project")
    if opt_in:  # what docs/privacy.md tells a user to do
        env = {**env, OPT_IN: "allow"}
        (project / ".telemetry").write_text("consent: true\n")
        (project / ".dvc" / "config").write_text("[core]\n    analytics = true\n")
    done = subprocess.run(
        [sys.executable, "-c", DECISIONS],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sends = json.loads(done.stdout.strip().splitlines()[-1])
    assert sends == {"mlflow": opt_in, "kedro": opt_in, "dvc": opt_in}


@pytest.mark.slow
def test_dvc_repro_of_a_demo_stage_sends_nothing(guarded_env, tmp_path):
    env, log = guarded_env
    project = _project_copy(tmp_path / "project")
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    subprocess.run(["git", "init", "-q"], cwd=project, env=env, check=True)
    done = subprocess.run(
        ["dvc", "repro", "demo_data"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert any((project / "data" / "01_raw" / "demo").rglob("*.png"))
    assert log.read_text() == ""


@pytest.mark.slow
def test_the_server_answers_and_sends_nothing(guarded_env, tmp_path, monkeypatch):
    from PIL import Image

    env, log = guarded_env
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    log_and_register(tmp_path)
    port = free_port()
    env = {**env, "MLFLOW_TRACKING_URI": uri, "PORT": str(port), "MODEL_URI": _first_version()}
    server = subprocess.Popen(
        [sys.executable, "-m", "breast_cancer_pipeline.serving"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_for(port, server)
        png = io.BytesIO()
        Image.new("L", (40, 40), 90).save(png, format="PNG")
        cell = base64.b64encode(png.getvalue()).decode()
        status, body = post(f"http://127.0.0.1:{port}/invocations", request_body([cell]))
        assert status == 200 and body["predictions"][0]["error"] == "", body
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert log.read_text() == ""


def _first_version() -> str:
    from breast_cancer_pipeline.serving import REGISTERED_MODEL_NAME

    return f"models:/{REGISTERED_MODEL_NAME}/1"


def _wait_for(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240  # TensorFlow and the model load: ~30 s here
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited: {server.stderr.read().decode()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail("the server did not start within 240 s")

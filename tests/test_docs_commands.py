"""Every shell command written in the README and the docs pages runs, or passes its tool's check.

The commands are those of the ```` ```bash ````, ```` ```sh ```` and ```` ```console ```` blocks
of ``README.md`` and ``docs/*.md`` (in a console block, the lines after a ``$`` prompt; the
other lines are its output). One test per command, run in a copy of the project in
``tmp_path`` (its own git repository; the pipeline's outputs as empty stand-ins), or, where
running it would take minutes or needs a server, checked by the tool's own parser or dry run:

=====================================  ====================================================
kind                                   how it is checked
=====================================  ====================================================
``make T``                             ``make -n T`` in the copy (the target exists, its
                                       recipe expands), with the command's variables
``kedro run ...``                      Kedro's own CLI parser; the environment exists; each
                                       pipeline is in the registry built from that
                                       environment and the ``--params``; ``--nodes`` exist
                                       in it; the project's parameter check (the hook that
                                       runs before the first node) passes on the merged
                                       parameters, or fails as the console block shows
``kedro registry``/``viz ...``         Kedro's (kedro-viz's) parser; the pipeline named, and
                                       the registry under the environment, build
``dvc exp run -S ...``, ``repro``      DVC's parser; each ``-S`` applied to the copy by DVC's
                                       own override code; the project's parameter check on
                                       every stage under the changed configuration;
                                       ``dvc repro --dry`` in the copy
``dvc status/params/metrics/plots``,   run in the copy
``dvc exp show``, ``dvc remote add``
``dvc push/pull/checkout/exp apply``   DVC's parser (they need a filled cache or remote; the
                                       whole-DAG flow of ``tests/test_experiments.py`` runs
                                       push and pull)
``git ...``, ``rm ...``                run in the copy (``git commit`` with
                                       ``--allow-empty``: the copy has nothing new)
``curl ...``                           run by bash with ``curl`` replaced by a recorder that
                                       answers like the server: the route exists, the body is
                                       a ``dataframe_split`` request with an ``image`` column
                                       of base64 cells; what reads the answer runs
``mlflow ...``                         MLflow's own CLI parser
``dask scheduler/worker ...``          distributed's own CLI parsers
``python -c``/``-m``                   the code compiles and its imports resolve; a module's
                                       own argument parser
``pytest ...``                         ``pytest --collect-only`` with the same arguments
``deploy/airflow/.venv/bin/kedro``,    kedro-airflow's and Airflow's own parsers, in Airflow's
``.../airflow``                        environment (skipped until ``make airflow-test``
                                       builds it; that target runs these checks)
``export``, ``source``, ``uvx``,       the variable's value (a file that exists, the tracking
``docker``                             URI of ``mlflow.yml`` or of ``make services``, its
                                       password file, a valid ``TF_CONFIG``); the
                                       venv's activate script; the storage of the head search;
                                       the Dockerfile, a built tag, a mounted pipeline output
=====================================  ====================================================

A command of any other kind fails its test: add the kind to ``CHECKS``, or write the command
another way. ```` ```python ```` blocks must compile; a ``$`` prompt in any other block fails
(a command there would go unchecked).
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from breast_cancer_pipeline import context as project_context
from breast_cancer_pipeline.serving import EXPLAIN_COLUMN, ID_COLUMNS, IMAGE_COLUMN
from breast_cancer_pipeline.serving.levels import LEVEL_COLUMNS
from deploy.services import Services

PROJECT = Path(__file__).resolve().parents[1]
PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
#: What the recorder stands in for when a page calls the server.
SERVER_ROUTES = {"/", "/invocations", "/ping", "/health", "/version", "/model"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: DVC's in-process runs repeat one deprecation of its own dependency per command.
pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")


# ---------------------------------------------------------------------------------------------
# The commands of the pages


@dataclass(frozen=True)
class DocCommand:
    """One command of a page: where it is, its text, and (console) the output shown after it."""

    page: str
    line: int
    text: str
    output: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """``page:line: the command`` (its first 70 characters, without a trailing comment)."""
        command = re.sub(r"\s+#\s.*$", "", self.text.splitlines()[0]).rstrip(" \\")
        return f"{self.page}:{self.line}: {command[:70]}"


@dataclass
class Block:
    page: str
    line: int  #: of the first line inside the fence
    lang: str
    lines: list[str] = field(default_factory=list)


def fenced_blocks(path: Path) -> Iterator[Block]:
    """The fenced code blocks of a Markdown page."""
    page = path.relative_to(PROJECT).as_posix()
    block, closing, indent = None, "", ""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = FENCE.match(line)
        if block is None and match:
            block = Block(page, number + 1, match["lang"].lower())
            closing, indent = match["fence"], match["indent"]
        elif block is not None and line.strip() == closing:
            yield block
            block = None
        elif block is not None:
            block.lines.append(line.removeprefix(indent))


def _incomplete(text: str) -> bool:
    """A command that goes on on the next line: a backslash or a pipe at its end, an open quote."""
    if text.endswith(("\\", "|", "&&")):
        return True
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def block_commands(block: Block) -> Iterator[DocCommand]:
    """The commands of a shell or console block, continuation lines and here-documents joined."""
    console = block.lang == "console"
    lines = [line.strip() if not console else line for line in block.lines]
    i = 0
    while i < len(lines):
        line, start = lines[i], i
        i += 1
        if console and not line.startswith("$ "):
            continue
        text = line.removeprefix("$ ").strip()
        if not text or text.startswith("#"):
            continue
        while _incomplete(text) and i < len(lines):
            text = f"{text}\n{lines[i]}"
            i += 1
        if heredoc := HEREDOC.search(text):
            while i < len(lines):
                text = f"{text}\n{lines[i]}"
                i += 1
                if lines[i - 1].strip() == heredoc[1]:
                    break
        output = []
        while console and i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        yield DocCommand(block.page, block.line + start, text, tuple(output))


def doc_commands() -> list[DocCommand]:
    return [
        command
        for page in PAGES
        for block in fenced_blocks(page)
        if block.lang in SHELL_LANGUAGES
        for command in block_commands(block)
    ]


COMMANDS = doc_commands()


# ---------------------------------------------------------------------------------------------
# The copy of the project


@dataclass
class Project:
    """A copy of the project with its own git repository, and what the checks share."""

    root: Path
    env: dict[str, str]
    scratch: Path  #: files a command names (case.png, ...), and where curl's pipe runs
    built_tags: set[str]
    changed: bool = True  #: a command may have changed the copy: reset it before the next
    bootstrapped: bool = False
    kedro_cli: Any = None  #: Kedro's CLI with its plugins, made once
    #: The registered pipelines per merged configuration (building them takes a second).
    registries: dict[str, dict] = field(default_factory=dict)

    def run(self, *command: str, cwd: Path | None = None, variables: dict | None = None) -> str:
        """Run ``command`` in the copy (or ``cwd``), with the command's own ``variables``."""
        done = subprocess.run(
            command,
            cwd=cwd or self.root,
            env={**self.env, **(variables or {})},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"{shlex.join(command)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def dvc(self, *argv: str) -> None:
        """DVC's command line, in this process (a new process costs a second of imports)."""
        from dvc.cli import main

        self.changed = True
        with contextlib.chdir(self.root):
            code = main(list(argv))
        assert code == 0, f"dvc {shlex.join(argv)}: exit {code} (its log is in the output)"

    def reset(self) -> None:
        """Back to the committed state, with a stand-in for every output a stage declares."""
        if not self.changed:
            return
        self.changed = False
        self.run("git", "reset", "-q", "--hard")
        self.run("git", "clean", "-q", "-f", "-d")  # untracked, not ignored: outputs stay
        for path in pipeline_outputs(self.root):
            target = self.root / path
            if not target.exists():
                if target.suffix:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch()
                else:
                    target.mkdir(parents=True, exist_ok=True)


def pipeline_outputs(root: Path) -> list[str]:
    """Every path that a stage of ``dvc.yaml`` writes."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return [
        out if isinstance(out, str) else next(iter(out))
        for stage in stages.values()
        for key in ("outs", "metrics", "plots")
        for out in stage.get(key, [])
    ]


def _copy_project(target: Path) -> None:
    """The project's files that git knows of (tracked or new), the venv linked."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (PROJECT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, target / name)
    (target / ".venv").symlink_to(PROJECT / ".venv")


def _environment(root: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEDRO_", "MLFLOW_", "DVC_", "GIT_", "PYTEST_"))
    }
    identity = {"NAME": "Docs Test", "EMAIL": "docs@example.invalid"}
    env.update(
        {f"GIT_{who}_{k}": v for who in ("AUTHOR", "COMMITTER") for k, v in identity.items()}
    )
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        KEDRO_DISABLE_TELEMETRY="true",
        DVC_NO_ANALYTICS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
    )
    return env


def _png(side: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def copy_of_project(tmp_path_factory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("docs_commands") / "project"
    root.mkdir()
    _copy_project(root)
    scratch = root.parent / "scratch"
    scratch.mkdir()
    for name in ("case.png", "case1.png"):
        (scratch / name).write_bytes(_png())
    (scratch / "case2.dcm").write_bytes(b"\0" * 128 + b"DICM")
    project = Project(root, _environment(root), scratch, built_tags=docker_built_tags())
    project.run("git", "init", "-q")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "A copy")
    yield project
    if str(root / "src") in sys.path:
        sys.path.remove(str(root / "src"))


@pytest.fixture
def project(copy_of_project: Project, monkeypatch) -> Iterator[Project]:
    copy_of_project.reset()
    # In this process, Kedro and DVC read what a shell in the copy would give them.
    for name in [k for k in os.environ if k.startswith(("KEDRO_", "DVC_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    # The configuration the pipelines are built from is the process's: restored afterwards,
    # and the pipelines built from the copy's configuration dropped.
    monkeypatch.setattr(project_context, "_active_loader", project_context._active_loader)
    monkeypatch.setattr(project_context, "_built_from", project_context._built_from)
    yield copy_of_project
    if copy_of_project.bootstrapped:
        from kedro.framework.project import pipelines

        pipelines.configure(f"{project_context.__package__}.pipeline_registry")


# ---------------------------------------------------------------------------------------------
# Splitting a command line


def split_compound(text: str) -> list[str]:
    """The simple commands of ``a && b | c; d``, split outside quotes and ``$(...)``.

    A ``#`` that starts a word outside quotes starts a comment, to the end of its line.
    """
    parts, current, quote, depth, i = [], "", "", 0, 0
    while i < len(text):
        char, pair = text[i], text[i : i + 2]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (not current or current[-1].isspace()):
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
            continue
        elif pair == "$(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth and pair in ("&&", "||"):
            parts.append(current)
            current, i = "", i + 2
            continue
        elif not depth and (char in "|;" or (char == "\n" and not current.endswith("\\"))):
            parts.append(current)
            current, i = "", i + 1
            continue
        current += char
        i += 1
    return [part.strip() for part in [*parts, current] if part.strip()]


@dataclass
class Simple:
    """One simple command: its variables, its program (without ``.venv/bin/``) and arguments."""

    variables: dict[str, str]
    program: str
    args: list[str]


def parse_simple(text: str) -> Simple:
    tokens = shlex.split(text.replace("\\\n", " "), comments=True)
    variables = {}
    while tokens and ASSIGNMENT.match(tokens[0]):
        name, _, value = tokens.pop(0).partition("=")
        variables[name] = value
    assert tokens, f"no command in {text!r}"
    program = tokens[0]
    if program.startswith(".venv/bin/"):
        assert (PROJECT / program).exists(), f"{program} is not in the project's venv"
        program = program.removeprefix(".venv/bin/")
    return Simple(variables, program, tokens[1:])


# ---------------------------------------------------------------------------------------------
# Kedro


def _bootstrap(project: Project) -> None:
    """Kedro's settings and pipeline registry set to the copy's (once)."""
    if not project.bootstrapped:
        from kedro.framework.startup import bootstrap_project

        bootstrap_project(project.root)
        project.bootstrapped = True


def _kedro_cli(project: Project) -> Any:
    if project.kedro_cli is None:
        from kedro.framework.cli.cli import KedroCLI

        _bootstrap(project)
        project.kedro_cli = KedroCLI(project.root)
    return project.kedro_cli


def parse_click(group: Any, name: str, args: list[str]) -> tuple[list[str], Any]:
    """``(command path, click context)``: ``args`` parsed by the group's own commands."""
    import click

    parent = click.Context(group, info_name=name)
    command, path, rest = group, [], list(args)
    while isinstance(command, click.Group):
        sub_name, command, rest = command.resolve_command(parent, rest)
        path.append(sub_name)
        if isinstance(command, click.Group):
            parent = click.Context(command, info_name=sub_name, parent=parent)
    return path, command.make_context(path[-1], rest, parent=parent)


def config_loader(project: Project, env: str | None, params: dict) -> Any:
    """The config loader a session in ``env`` with ``--params`` builds, made the active one."""
    from kedro.framework.project import settings

    _bootstrap(project)
    if env is not None:
        assert (project.root / "conf" / env).is_dir(), f"no environment conf/{env}"
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(project.root / settings.CONF_SOURCE),
        env=env,
        runtime_params=params,
        **settings.CONFIG_LOADER_ARGS,
    )
    return loader


def registry(project: Project, loader: Any) -> dict[str, Any]:
    """The registered pipelines as a run with ``loader``'s configuration builds them."""
    key = json.dumps(loader["parameters"], sort_keys=True, default=str)
    if key not in project.registries:
        from kedro.framework.project import pipelines

        project_context.use_config_loader(loader)
        project.registries[key] = dict(pipelines)
    return project.registries[key]


class _Parameters:
    """What the parameter hook reads from the catalog: ``load("parameters")``."""

    def __init__(self, parameters: dict) -> None:
        self.parameters = parameters

    def load(self, name: str) -> dict:
        assert name == "parameters"
        return self.parameters


def check_parameters(loader: Any, pipeline: Any) -> None:
    """The project's check of a run's parameters, as it runs before the first node."""
    from breast_cancer_pipeline.hooks import ParameterCheckHook

    ParameterCheckHook().before_pipeline_run(
        run_params={}, pipeline=pipeline, catalog=_Parameters(loader["parameters"])
    )


def check_kedro(project: Project, command: Simple) -> None:
    path, ctx = parse_click(_kedro_cli(project), "kedro", command.args)
    options = ctx.params
    env = options.get("env") or command.variables.get("KEDRO_ENV")
    loader = config_loader(project, env, options.get("params") or {})
    pipelines = registry(project, loader)
    if path == ["run"]:
        names = options["pipelines"] or [options["pipeline"] or "__default__"]
        missing = [name for name in names if name not in pipelines]
        assert not missing, f"no pipeline {missing} in {sorted(pipelines)}"
        pipeline = sum((pipelines[name] for name in names[1:]), pipelines[names[0]])
        if options["node_names"]:
            pipeline = pipeline.only_nodes(*options["node_names"])
        check_parameters(loader, pipeline)
    elif path == ["registry", "describe"]:
        assert options["name"] in pipelines, f"no pipeline {options['name']}"
    else:
        assert path in (["registry", "list"], ["viz", "run"], ["viz", "build"]), path
        assert "__default__" in pipelines


# ---------------------------------------------------------------------------------------------
# DVC


def _dvc_args(argv: list[str]) -> Any:
    from dvc.cli import parse_args

    return parse_args(argv)


def _kedro_env(project: Project) -> str:
    return yaml.safe_load((project.root / "params.yaml").read_text())["kedro_env"]


def check_dvc_run(project: Project, argv: list[str]) -> None:
    """``dvc exp run -S ...`` / ``dvc repro``: DVC's overrides, the parameter check, a dry run."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    args = _dvc_args(argv)
    project.changed = True
    for path, overrides in to_path_overrides(getattr(args, "set_param", None) or []).items():
        apply_overrides(project.root / path, overrides)
    loader = config_loader(project, _kedro_env(project), {})
    stages = registry(project, loader)
    check_parameters(loader, stages["__default__"] + stages["demo_data"])
    project.dvc("repro", "--dry")


DVC_RUN_IN_COPY = {
    ("config",),
    ("status",),
    ("params", "diff"),
    ("metrics", "show"),
    ("metrics", "diff"),
    ("plots", "show"),
    ("plots", "diff"),
    ("exp", "show"),
    ("remote", "add"),
}
DVC_PARSE_ONLY = {("push",), ("pull",), ("checkout",), ("exp", "apply"), ("fetch",)}
#: DVC commands whose second word is the command (``dvc exp run``).
DVC_GROUPS = {"exp", "params", "metrics", "plots", "remote"}


def check_dvc(project: Project, command: Simple) -> None:
    argv = command.args
    key = tuple(argv[:2]) if argv[0] in DVC_GROUPS else tuple(argv[:1])
    if key in (("repro",), ("exp", "run")):
        check_dvc_run(project, argv)
    elif key in DVC_RUN_IN_COPY:
        project.dvc(*argv)
    elif key in DVC_PARSE_ONLY:
        _dvc_args(argv)
    else:
        pytest.fail(
            f"no check for `dvc {' '.join(key)}`: add it to DVC_RUN_IN_COPY or DVC_PARSE_ONLY"
        )


# ---------------------------------------------------------------------------------------------
# The other tools


def check_make(project: Project, command: Simple) -> None:
    assert command.args, "which target?"
    project.run("make", "-n", *command.args, variables=command.variables)


def check_git(project: Project, command: Simple) -> None:
    args = command.args
    if args[:1] == ["commit"]:
        args = [*args, "--allow-empty"]
    project.changed = True
    project.run("git", *args)


def check_rm(project: Project, command: Simple) -> None:
    targets = [arg for arg in command.args if not arg.startswith("-")]
    for target in targets:
        assert not Path(target).is_absolute() and ".." not in Path(target).parts, target
    project.changed = True
    project.run("rm", *command.args)


def check_mlflow(project: Project, command: Simple) -> None:
    import mlflow.cli

    parse_click(mlflow.cli.cli, "mlflow", command.args)


def check_dask(project: Project, command: Simple) -> None:
    """``dask scheduler``/``dask worker``: parsed by distributed's own command-line parsers."""
    from distributed.cli import dask_scheduler, dask_worker

    parsers = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}
    sub, *rest = command.args
    assert sub in parsers, f"`dask {sub}`: only dask scheduler and dask worker are checked"
    parsers[sub].make_context(f"dask {sub}", rest)


#: Modules run with ``python -m``, and how their arguments are checked.
MODULE_PARSERS: dict[str, Callable[[list[str]], Any]] = {
    "benchmarks.gpu_check": lambda argv: importlib.import_module("benchmarks.gpu_check")._arguments(
        argv
    ),
    "scripts.mammogram_crops": lambda argv: importlib.import_module(
        "scripts.mammogram_crops"
    )._arguments(argv),
}


def check_python(project: Project, command: Simple) -> None:
    args = command.args
    if args[:1] == ["-c"]:
        code = compile(args[1], "<python -c>", "exec")
        for name in re.findall(r"(?:^|;)\s*(?:import|from)\s+([\w.]+)", args[1], re.M):
            assert importlib.util.find_spec(name.split(".")[0]), f"cannot import {name}"
        assert code is not None
    elif args[:1] == ["-m"]:
        assert importlib.util.find_spec(args[1]), f"no module {args[1]}"
        assert args[1] in MODULE_PARSERS, f"no argument check for {args[1]}: MODULE_PARSERS"
        MODULE_PARSERS[args[1]](args[2:])
    else:
        pytest.fail(f"python {args[:1]}: only -c and -m are checked")


def check_pytest(project: Project, command: Simple) -> None:
    collect = ("pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
    project.run(*collect, *command.args, variables=command.variables)


def check_source(project: Project, command: Simple) -> None:
    assert command.args == [".venv/bin/activate"], command.args
    assert (PROJECT / ".venv/bin/activate").is_file()


def _tracking_uri_default() -> str:
    mlflow_yml = (PROJECT / "conf/base/mlflow.yml").read_text()
    return re.search(r"\$\{oc\.env:MLFLOW_TRACKING_URI,([^}]+)\}", mlflow_yml)[1]


def _tf_config(value: str) -> None:
    config = json.loads(value)
    workers = config["cluster"]["worker"]
    assert all(re.fullmatch(r"[\w.-]+:\d+", worker) for worker in workers), workers
    assert config["task"]["type"] == "worker"
    assert 0 <= config["task"]["index"] < len(workers)


#: What `make services` prints to export (deploy/services.py, the Makefile's defaults).
SERVICES = Services(PROJECT / ".services")


def _tracking_uri(value: str) -> None:
    """``mlflow.yml``'s default, or the MLflow server of ``make services``."""
    assert value in (_tracking_uri_default(), SERVICES.tracking_uri), value


#: Variables the pages export, and what a right value is.
EXPORTS: dict[str, Callable[[str], None]] = {
    "TF_CONFIG": _tf_config,
    "MLFLOW_TRACKING_URI": _tracking_uri,
    "PGPASSFILE": lambda value: _assert_equal(
        value, f"$PWD/{SERVICES.pgpass.relative_to(PROJECT)}"
    ),
    "KEDRO_LOGGING_CONFIG": lambda value: _assert_file(PROJECT / value),
    # The opt-in value the package reads (breast_cancer_pipeline.telemetry).
    "BREAST_CANCER_PIPELINE_TELEMETRY": lambda value: _assert_equal(value, "allow"),
}


def _assert_equal(value: str, expected: str) -> None:
    assert value == expected, f"{value} is not {expected}"


def _assert_file(path: Path) -> None:
    assert path.is_file(), f"{path} does not exist"


def check_export(project: Project, command: Simple) -> None:
    for assignment in command.args:
        name, _, value = assignment.partition("=")
        assert name in EXPORTS, f"no check for the variable {name}: add it to EXPORTS"
        EXPORTS[name](value)


def check_uvx(project: Project, command: Simple) -> None:
    tool, *args = command.args
    assert tool == "optuna-dashboard", f"no check for uvx {tool}"
    loader = config_loader(project, None, {})
    assert args == [loader["parameters"]["backbone_selection"]["head_search"]["storage"]]


def docker_built_tags() -> set[str]:
    tags = set()
    for command in COMMANDS:
        for part in split_compound(command.text) if "docker build" in command.text else []:
            tokens = shlex.split(part)
            if tokens[:2] == ["docker", "build"] and "-t" in tokens:
                tags.add(tokens[tokens.index("-t") + 1])
    return tags


def check_docker(project: Project, command: Simple) -> None:
    action, *args = command.args
    if action == "build":
        assert args[-1] == "." and (PROJECT / "Dockerfile").is_file()
        return
    assert action == "run", f"no check for docker {action}"
    options = {"-p": [], "-v": [], "-e": []}
    i = 0
    while args[i].startswith("-"):
        if args[i] == "--rm":
            i += 1
            continue
        options[args[i]].append(args[i + 1])
        i += 2
    image = args[i]
    assert image in project.built_tags or "/" in image, f"{image}: neither built nor public"
    assert all(re.fullmatch(r"\d+:\d+", port) for port in options["-p"])
    outputs = pipeline_outputs(PROJECT)
    for volume in options["-v"]:
        host = volume.split(":")[0].removeprefix("$PWD/")
        assert host in outputs, f"{host} is not an output of the pipeline (dvc.yaml)"


#: Airflow's own environment (`make airflow-test` builds it), and how each of its programs
#: parses a page's arguments there.
AIRFLOW_BIN = Path("deploy/airflow/.venv/bin")
AIRFLOW_PARSERS = {
    "kedro": "import sys; from kedro_airflow.plugin import create; "
    "assert sys.argv[1:3] == ['airflow', 'create'], sys.argv; "
    "create.make_context('create', sys.argv[3:])",
    "airflow": "import sys; from airflow.cli.cli_parser import get_parser; "
    "get_parser().parse_args(sys.argv[1:])",
}


def check_airflow_env(project: Project, command: Simple) -> None:
    """``deploy/airflow/.venv/bin/{kedro,airflow}``: parsed by kedro-airflow's, Airflow's CLI."""
    python = PROJECT / AIRFLOW_BIN / "python"
    if not python.exists():
        pytest.skip("Airflow's environment is not built: `make airflow-test` builds it")
    code = AIRFLOW_PARSERS[Path(command.program).name]
    home = str(project.scratch / "airflow")  # not the page's: the check writes no Airflow home
    variables = {**command.variables, "AIRFLOW_HOME": home, "AIRFLOW__CORE__DAGS_FOLDER": home}
    project.run(str(python), "-c", code, *command.args, variables=variables)


def check_xargs(project: Project, command: Simple) -> None:
    assert command.args[0] == "-I{}", command.args
    inner = shlex.join(command.args[1:]).replace("'{}'", "{}").replace("{}", "runs:/0/card.md")
    check_simple(project, parse_simple(inner))


# ---------------------------------------------------------------------------------------------
# curl: the page's request, sent to a recorder that answers like the server


RECORDER = """
curl() {
  printf '%s\\0' "$@" > curl_args
  if [[ " $* " == *" @- "* ]]; then cat > curl_stdin; fi
  cat curl_response
}
"""


#: The columns of the served signature (serving/packaging.py): a request may send these.
REQUEST_COLUMNS = {IMAGE_COLUMN, *ID_COLUMNS, EXPLAIN_COLUMN, *LEVEL_COLUMNS}


def check_curl(project: Project, text: str) -> None:
    answer = {"predictions": [{"gradcam_png": base64.b64encode(_png(8)).decode()}]}
    (project.scratch / "curl_response").write_text(json.dumps(answer))
    project.run("bash", "-e", "-o", "pipefail", "-c", RECORDER + text, cwd=project.scratch)
    args = (project.scratch / "curl_args").read_text().split("\0")[:-1]
    (url,) = [arg for arg in args if "://" in arg or re.match(r"[\d.]+:\d+/", arg)]
    route = "/" + url.split("://")[-1].split("/", 1)[1]
    assert route in SERVER_ROUTES, f"{route}: the server has {sorted(SERVER_ROUTES)}"
    if route != "/invocations":
        return
    assert "Content-Type: application/json" in args
    body = args[args.index("-d") + 1]
    if body == "@-":
        body = (project.scratch / "curl_stdin").read_text()
    request = json.loads(body)["dataframe_split"]
    columns = request["columns"]
    assert "image" in columns and set(columns) <= REQUEST_COLUMNS, columns
    for row in request["data"]:
        assert len(row) == len(columns)
        base64.b64decode(row[columns.index("image")], validate=True)


# ---------------------------------------------------------------------------------------------
# Dispatch


CHECKS: dict[str, Callable[[Project, Simple], None]] = {
    "make": check_make,
    "kedro": check_kedro,
    "dvc": check_dvc,
    "git": check_git,
    "rm": check_rm,
    "mlflow": check_mlflow,
    "dask": check_dask,
    "python": check_python,
    "pytest": check_pytest,
    "source": check_source,
    "export": check_export,
    "uvx": check_uvx,
    "docker": check_docker,
    "xargs": check_xargs,
    **{str(AIRFLOW_BIN / tool): check_airflow_env for tool in AIRFLOW_PARSERS},
}


def check_simple(project: Project, command: Simple) -> None:
    check = CHECKS.get(command.program)
    if check is None:
        pytest.fail(f"no check for `{command.program}`: add one to CHECKS")
    check(project, command)


def check_command(project: Project, text: str) -> None:
    parts = split_compound(text)
    if re.match(r"^(?:\w+=\S*\s+)*curl\s", text):
        check_curl(project, text)
        return
    assert not HEREDOC.search(text), "a here-document is only checked for curl"
    for part in parts:
        check_simple(project, parse_simple(part))


def expected_error(command: DocCommand) -> list[str]:
    """The error a console block shows after the command (from its ``...Error:`` line on)."""
    for i, line in enumerate(command.output):
        if re.match(r"^\w*Error: ", line):
            return [line.strip() for line in command.output[i:] if line.strip()]
    return []


@pytest.mark.parametrize("command", COMMANDS, ids=[command.id for command in COMMANDS])
def test_every_command_in_the_docs_runs(command: DocCommand, project: Project):
    expected = expected_error(command)
    if not expected:
        check_command(project, command.text)
        return
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the page names the error
        check_command(project, command.text)
    shown = f"{type(raised.value).__name__}: {raised.value}"
    for line in expected:
        assert line in shown, f"the page shows {line!r}; the check raised {shown!r}"


def test_the_commands_of_the_pages_are_found():
    pages = {command.page for command in COMMANDS}
    assert {"README.md", "docs/getting-started.md", "docs/experiments.md"} <= pages
    texts = [command.text for command in COMMANDS]
    assert (
        "make demo   # installs .venv from uv.lock, generates the demo data, runs the whole DAG"
        in texts
    )
    heredocs = [text for text in texts if "<<EOF" in text]
    assert heredocs and all(text.rstrip().endswith("EOF") for text in heredocs)


PYTHON_BLOCKS = [block for page in PAGES for block in fenced_blocks(page) if block.lang == "python"]


@pytest.mark.parametrize(
    "block", PYTHON_BLOCKS, ids=[f"{block.page}:{block.line}" for block in PYTHON_BLOCKS]
)
def test_python_blocks_compile(block: Block):
    compile("\n".join(block.lines), f"{block.page}:{block.line}", "exec")


def test_no_command_hides_in_an_unchecked_block():
    hidden = [
        f"{block.page}:{block.line} ({block.lang or 'no language'})"
        for page in PAGES
        for block in fenced_blocks(page)
        if block.lang not in SHELL_LANGUAGES and any(line.startswith("$ ") for line in block.lines)
    ]
    assert not hidden, f"commands in blocks that are not checked: {hidden}"


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, as the site's table of contents makes them."""
    from markdown.extensions.toc import slugify

    in_code = set()
    for block in fenced_blocks(page):
        in_code.update(range(block.line, block.line + len(block.lines)))
    return {
        slugify(line.lstrip("#").strip(), "-")
        for number, line in enumerate(page.read_text().splitlines(), start=1)
        if line.startswith("#") and number not in in_code
    }


def test_the_readme_links_to_pages_and_anchors_that_exist():
    """The site's strict build checks the links of docs/; the README is not part of it."""
    readme = (PROJECT / "README.md").read_text()
    links = re.findall(r"\]\((?!https?:)([^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 10
    for target, anchor in links:
        assert (PROJECT / target).exists(), f"README links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(PROJECT / target), f"no #{anchor} in {target}"

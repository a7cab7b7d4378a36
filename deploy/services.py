"""A team's tracking services on this machine: PostgreSQL and an MLflow server on it.

``make services`` (``python -m deploy.services start``) starts, on 127.0.0.1,

- PostgreSQL, with a role ``pipeline`` and two databases: ``mlflow`` (the MLflow server's
  backend store) and ``optuna`` (the head search's study, ``head_search.storage``);
- ``mlflow server --backend-store-uri postgresql://pipeline@127.0.0.1:<port>/mlflow
  --artifacts-destination <root>/mlartifacts``: runs, artifacts and the model registry.

``make services-stop`` (``python -m deploy.services stop``) stops both; the data stay.
Everything lives under one folder (``--root``, ``.services`` by default, git-ignored):

- ``postgres/``: PostgreSQL's data directory, with its log ``server.log``;
- ``pgpass``: the role's password in libpq's password-file format, made at the first start.
  No URL carries it: ``PGPASSFILE=<root>/pgpass`` lets the MLflow server, Optuna and ``psql``
  find it;
- ``mlartifacts/``: the MLflow server's artifacts; ``mlflow.log`` and ``mlflow.pid``.

PostgreSQL's server refuses to run as root: as root, its commands run as the user ``postgres``
(Debian's package makes it; ``PG_SERVER_USER`` names another), who owns ``postgres/``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: Where the services listen: this machine only.
HOST = "127.0.0.1"
#: The database role the MLflow server and Optuna connect as.
ROLE = "pipeline"
#: The databases made at the first start: the MLflow server's and the Optuna study's.
DATABASES = ("mlflow", "optuna")
#: The user PostgreSQL's commands run as when this process is root (the variable overrides it).
SERVER_USER = "postgres"
SERVER_USER_VARIABLE = "PG_SERVER_USER"
#: Seconds to wait for PostgreSQL, or for the MLflow server's first answer (its first start
#: creates its tables in PostgreSQL).
START_TIMEOUT_SECONDS = 180
#: The MLflow server's defaults that differ from MLflow's (the environment overrides them): no
#: job runner (its processes serve GenAI trace scoring, which this project does not log).
SERVER_ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
#: Where PostgreSQL's programs are looked for when ``pg_ctl`` is not on PATH.
BIN_GLOBS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
)


class ServiceError(RuntimeError):
    """A service could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class Services:
    """Where the services keep their files and listen.

    Attributes:
        root: The folder of their data, logs and password file.
        pg_port: PostgreSQL's port on 127.0.0.1.
        mlflow_port: The MLflow server's port on 127.0.0.1.
        workers: The MLflow server's worker processes.
    """

    root: Path
    pg_port: int = 5432
    mlflow_port: int = 5000
    workers: int = 1

    def __post_init__(self) -> None:
        # Absolute: PostgreSQL's programs run from "/" (and as another user when root).
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def data_dir(self) -> Path:
        """PostgreSQL's data directory."""
        return self.root / "postgres"

    @property
    def pgpass(self) -> Path:
        """The password file (``PGPASSFILE``)."""
        return self.root / "pgpass"

    @property
    def artifacts(self) -> Path:
        """The MLflow server's artifact store."""
        return self.root / "mlartifacts"

    @property
    def tracking_uri(self) -> str:
        """The MLflow server's URL (``MLFLOW_TRACKING_URI``)."""
        return f"http://{HOST}:{self.mlflow_port}"

    def database_url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database``, without the password (``PGPASSFILE`` has it)."""
        return f"postgresql://{ROLE}@{HOST}:{self.pg_port}/{database}"

    def environment(self) -> dict[str, str]:
        """The variables a client needs: the tracking URI and the password file."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "PGPASSFILE": str(self.pgpass)}


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (``initdb``, ``pg_ctl``), or None."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    for pattern in BIN_GLOBS:
        found = sorted(Path("/").glob(pattern.lstrip("/")), key=_version_key, reverse=True)
        candidates += found
    return next(
        (c for c in candidates if (c / "initdb").exists() and (c / "pg_ctl").exists()), None
    )


def _version_key(path: Path) -> tuple[int, str]:
    """Sort key: ``/usr/lib/postgresql/15/bin`` after ``.../9/bin``."""
    digits = "".join(ch for ch in path.parent.name if ch.isdigit())
    return (int(digits or 0), str(path))


def start(services: Services) -> None:
    """Start PostgreSQL (initialised at the first start) and the MLflow server on it.

    Args:
        services: Where they keep their files and listen.

    Raises:
        ServiceError: PostgreSQL is not installed, a port is taken, or a service did not start
            (the message quotes its log).
    """
    bindir = postgres_bin()
    if bindir is None:
        raise ServiceError(
            "PostgreSQL's server programs (initdb, pg_ctl) were not found: install PostgreSQL "
            "(Debian/Ubuntu: apt-get install postgresql) or put its bin folder on PATH"
        )
    services.root.mkdir(parents=True, exist_ok=True)
    start_postgres(services, bindir)
    create_databases(services)
    start_mlflow(services)


def stop(services: Services, mode: str = "fast") -> list[str]:
    """Stop the MLflow server and PostgreSQL (their data stay).

    Args:
        services: Where they keep their files.
        mode: PostgreSQL's shutdown mode: ``fast`` (a clean stop) or ``immediate`` (no
            checkpoint; for data about to be deleted).

    Returns:
        What was stopped, one line each.
    """
    stopped = []
    if stop_mlflow(services):
        stopped.append(f"the MLflow server of {_shown(services.root)}")
    bindir = postgres_bin()
    if bindir is not None and _postgres_running(services, bindir):
        _run(
            _as_server_user([bindir / "pg_ctl", "-D", services.data_dir, "-m", mode, "-w", "stop"])
        )
        stopped.append(f"the PostgreSQL of {_shown(services.data_dir)}")
    return stopped


def start_postgres(services: Services, bindir: Path) -> None:
    """Initialise the cluster when new, then start PostgreSQL on ``services.pg_port``."""
    if not (services.data_dir / "PG_VERSION").exists():
        _init_cluster(services, bindir)
    if _postgres_running(services, bindir):
        return
    _check_port_free(services.pg_port, "PG_PORT")
    log = services.data_dir / "server.log"
    done = _run(
        _as_server_user(
            [bindir / "pg_ctl", "-D", services.data_dir, "-l", log, "-w"]
            + ["-t", str(START_TIMEOUT_SECONDS), "-o", f"-p {services.pg_port}", "start"]
        ),
        check=False,
    )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else done.stderr
        raise ServiceError(f"PostgreSQL did not start ({log}):\n{tail}")


def _init_cluster(services: Services, bindir: Path) -> None:
    """``initdb`` with the role ``pipeline`` and a new password; TCP on 127.0.0.1 only."""
    user = _server_user()
    services.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    handle, pwfile = tempfile.mkstemp(dir=services.root, prefix=".initdb-")
    try:
        os.write(handle, f"{password}\n".encode())
        os.close(handle)
        if user is not None:
            _check_reachable(services.data_dir, user.pw_name)
            for path in (services.data_dir, Path(pwfile)):
                os.chown(path, user.pw_uid, user.pw_gid)
        _run(
            _as_server_user(
                [bindir / "initdb", "-D", services.data_dir, "-U", ROLE, f"--pwfile={pwfile}"]
                + ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-instructions"]
            )
        )
    finally:
        Path(pwfile).unlink(missing_ok=True)
    with (services.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\n# deploy/services.py: TCP on this machine only, no Unix socket.\n")
        conf.write(f"listen_addresses = '{HOST}'\nunix_socket_directories = ''\n")
    services.pgpass.touch(mode=0o600)
    services.pgpass.write_text(f"{HOST}:*:*:{ROLE}:{password}\n")


def create_databases(services: Services) -> None:
    """Create the databases of :data:`DATABASES` that do not exist yet."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(
        host=HOST,
        port=services.pg_port,
        user=ROLE,
        dbname="postgres",
        passfile=str(services.pgpass),
        connect_timeout=30,
        autocommit=True,
    ) as connection:
        existing = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
        for database in DATABASES:
            if database not in existing:
                connection.execute(f'CREATE DATABASE "{database}"')


def start_mlflow(services: Services) -> None:
    """Start ``mlflow server`` on PostgreSQL in its own session; wait for its first answer."""
    if _mlflow_pid(services) is not None:
        return
    _check_port_free(services.mlflow_port, "MLFLOW_PORT")
    services.artifacts.mkdir(parents=True, exist_ok=True)
    import breast_cancer_pipeline.telemetry  # noqa: F401, PLC0415 (usage data off in os.environ)

    command = [sys.executable, "-m", "mlflow", "server"]
    command += ["--backend-store-uri", services.database_url("mlflow")]
    command += ["--artifacts-destination", str(services.artifacts)]
    command += ["--host", HOST, "--port", str(services.mlflow_port)]
    command += ["--workers", str(services.workers)]
    log = services.root / "mlflow.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            env={**SERVER_ENVIRONMENT, **os.environ, "PGPASSFILE": str(services.pgpass)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (services.root / "mlflow.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise ServiceError(f"the MLflow server exited ({log}):\n{tail}")
        if _answers(f"{services.tracking_uri}/health"):
            return
        time.sleep(0.5)
    stop_mlflow(services)
    raise ServiceError(f"the MLflow server did not answer in {START_TIMEOUT_SECONDS} s ({log})")


def stop_mlflow(services: Services) -> bool:
    """Stop the MLflow server this folder's ``mlflow.pid`` names; False when none runs."""
    pid = _mlflow_pid(services)
    (services.root / "mlflow.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)  # the server and its uvicorn workers
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    if _group_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True


def _mlflow_pid(services: Services) -> int | None:
    """The pid in ``mlflow.pid`` when that process still runs ``mlflow server``."""
    try:
        pid = int((services.root / "mlflow.pid").read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError):
        return None
    return pid if b"mlflow\0server" in command else None


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group ``pgid`` is left (its leader reaped if it is our child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _postgres_running(services: Services, bindir: Path) -> bool:
    if not (services.data_dir / "PG_VERSION").exists():
        return False
    status = [bindir / "pg_ctl", "-D", services.data_dir, "status"]
    return _run(_as_server_user(status), check=False).returncode == 0


def _check_port_free(port: int, variable: str) -> None:
    with socket.socket() as probe:
        # As the servers do: a port whose last connections are closing (TIME_WAIT) is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            raise ServiceError(
                f"port {port} on {HOST} is in use: stop what listens there or choose another "
                f"port ({variable}=...)"
            ) from None


def _server_user() -> pwd.struct_passwd | None:
    """The user PostgreSQL runs as when this process is root (None: not root)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(SERVER_USER_VARIABLE, SERVER_USER)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(
            f"PostgreSQL refuses to run as root and there is no user {name!r} to run it as: "
            f"create one (Debian's postgresql package makes 'postgres'), name it in "
            f"{SERVER_USER_VARIABLE}, or run this as another user"
        ) from None


def _check_reachable(path: Path, user: str) -> None:
    """Every folder above ``path`` must let others through (the server runs as ``user``)."""
    for parent in path.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise ServiceError(
                f"PostgreSQL runs as {user!r}, who cannot reach {path}: {parent} is closed to "
                f"other users (chmod o+x {parent}, or choose another --root)"
            )


def _as_server_user(command: list) -> list[str]:
    user = _server_user()
    prefix = ["runuser", "-u", user.pw_name, "--"] if user is not None else []
    return prefix + [str(part) for part in command]


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd="/", capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise ServiceError(
            f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return done


def main(argv: list[str] | None = None) -> None:
    """``python -m deploy.services start|stop [--root DIR] [--pg-port N] [--mlflow-port N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m deploy.services", description=__doc__.split("\n")[0]
    )
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--root", type=Path, default=Path(".services"))
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    services = Services(args.root, args.pg_port, args.mlflow_port, args.workers)
    try:
        if args.action == "stop":
            print("\n".join(f"stopped: {line}" for line in stop(services)) or "nothing was running")
            return
        start(services)
    except ServiceError as error:
        sys.exit(f"error: {error}")
    print(
        f"PostgreSQL on {HOST}:{services.pg_port}: data and log in {_shown(services.data_dir)}\n"
        f"MLflow server on {services.tracking_uri}: {services.database_url('mlflow')}, artifacts "
        f"in {_shown(services.artifacts)}, log {_shown(services.root / 'mlflow.log')}\n"
        "Point the pipeline, make serve and Optuna at them from this shell:\n"
        f"  export MLFLOW_TRACKING_URI={services.tracking_uri}\n"
        f"  export PGPASSFILE={_shown(services.pgpass, shell=True)}\n"
        f"  Optuna's storage: {services.database_url('optuna')}"
    )


def _shown(path: Path, shell: bool = False) -> str:
    """``path`` relative to the current folder when inside it (``$PWD/...`` for a shell)."""
    if not path.is_relative_to(Path.cwd()):
        return str(path)
    relative = path.relative_to(Path.cwd())
    return f"$PWD/{relative}" if shell else str(relative)


if __name__ == "__main__":
    main()

"""The native twin: the compose stack from OS packages, on 127.0.0.1, with the same configs.

``stackctl up`` starts, in order, PostgreSQL (as an unprivileged user when we are root), the
migrate/seed step, the alert receiver, both services under gunicorn, nginx, Prometheus,
Alertmanager and the three exporters, each waited on until healthy; Grafana, Loki, Tempo and
Alloy only when their binaries are on PATH. ``stackctl down`` stops exactly what ``up`` started
(recorded with each process's start time, so a recycled pid is never signalled). Everything
lives in one state directory (``STACK_DIR``, default ``.stack/``) that can be deleted.
"""

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgcluster import PostgresCluster, create_cluster, find_pg_bin
from stackctl import procfs
from stackctl.addresses import PORT_OFFSET, REPO, native_port, render_configs
from stackctl.compose import resolved_services, start_order
from stackctl.native_map import (
    CONFIG_TREES,
    IMAGE_PROGRAMS,
    STDERR_LOGS,
    Launch,
    Machine,
    launch,
    map_config_tree,
    server_settings,
)
from stackctl.ports import free_offset, port_is_free
from stackctl.processes import ComponentFailedError, log_tail, spawn

# Backups and restores, here as in compose's `backup` service.
BACKUP_SCRIPT = REPO / "scripts/pg-backup"
DB_NAME = "messages"
OWNER = "messages_owner"
READER = "api_reader"
SECRET_NAMES = ("superuser", "owner", "reader", "grafana")
# The compose service:port pairs the native twin listens on.
CORE_PORTS = (
    ("postgres", 5432), ("api-svc", 8000), ("api-svc", 9000), ("processor-svc", 8001),
    ("processor-svc", 9001), ("gateway", 8080), ("gateway", 8081), ("prometheus", 9090),
    ("alertmanager", 9093), ("alert-webhook", 5001),
    ("node-exporter", 9100), ("postgres-exporter", 9187), ("nginx-exporter", 9113),
)  # fmt: skip


def free_stack_offset() -> int:
    """A ``STACK_PORT_OFFSET`` at which every core port is free: where a test stack starts."""
    return free_offset(port for _, port in CORE_PORTS)


# Started when their binaries are installed (none of them is packaged by Debian).
OPTIONAL = ("loki", "tempo", "alloy", "grafana")


@dataclass
class StackState:
    """What lives in the state directory: rendered configs, data, logs, secrets, pids."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def pids_file(self) -> Path:
        return self.root / "pids.json"

    def secrets(self) -> dict[str, str]:
        """Passwords, made once per state directory (kept 0600)."""
        path = self.root / "secrets.json"
        if path.exists():
            loaded: dict[str, str] = json.loads(path.read_text())
            if set(SECRET_NAMES) <= set(loaded):
                return loaded
            path.unlink()  # made by an older version: add what is missing, keep the rest
            values = {name: loaded.get(name) or secrets.token_hex(16) for name in SECRET_NAMES}
            path.write_text(json.dumps(values))
            path.chmod(0o600)
            return values
        values = {name: secrets.token_hex(16) for name in SECRET_NAMES}
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        return values

    def recorded(self) -> list[dict[str, Any]]:
        if not self.pids_file.exists():
            return []
        entries: list[dict[str, Any]] = json.loads(self.pids_file.read_text())
        return entries

    def record(self, name: str, pid: int) -> None:
        entries = [*self.recorded(), {"name": name, "pid": pid, "ticks": procfs.start_ticks(pid)}]
        self.pids_file.write_text(json.dumps(entries, indent=1))

    def forget(self) -> None:
        self.pids_file.unlink(missing_ok=True)


def _url(port: int, path: str = "") -> str:
    return f"http://127.0.0.1:{port}{path}"


class NativeStack:
    def __init__(self, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.state = StackState(state_dir.resolve())
        self.env = dict(os.environ if env is None else env)
        self.timeout = float(self.env.get("STACK_TIMEOUT", "60"))
        self.report: Callable[[str], None] = print
        # name -> (argv, health url, env, stderr file): how to start a component again.
        self._specs: dict[str, tuple[list[str], str | None, dict[str, str], Path | None]] = {}
        self._compose: dict[str, dict[str, Any]] | None = None

    def port(self, service: str, compose_port: int) -> int:
        """The native port of a compose ``service:port`` (see stackctl.addresses)."""
        return native_port(service, compose_port, self.env)

    @property
    def gateway_url(self) -> str:
        return _url(self.port("gateway", 8080))

    @property
    def prometheus_url(self) -> str:
        return _url(self.port("prometheus", 9090))

    # --- up -----------------------------------------------------------------------------
    def up(self) -> None:
        if self.state.recorded():
            raise ComponentFailedError(
                f"a native stack already runs from {self.state.root}: `make native-down` first"
            )
        for directory in (self.state.root, self.state.logs, self.state.run, self.state.data):
            directory.mkdir(parents=True, exist_ok=True)
        self._check_ports_free()
        self._check_reachable()
        render_configs(self.state.config, self.env)
        for name in CONFIG_TREES:
            map_config_tree(name, self._services()[name], self._machine())
        try:
            self._start_all()
        except BaseException:
            self.down()
            raise

    def _check_ports_free(self) -> None:
        taken = [
            f"{self.port(service, port)} ({service})"
            for service, port in CORE_PORTS
            if not port_is_free(self.port(service, port))
        ]
        if taken:
            raise ComponentFailedError(
                f"ports already in use on 127.0.0.1: {', '.join(taken)}. Stop what listens "
                f"there, or move every port of the twin: {PORT_OFFSET}=10000 make native-up"
            )

    def _check_reachable(self) -> None:
        """As root, PostgreSQL runs as `postgres` and nginx's workers as `nobody`: both must
        be able to enter the state directory (a checkout under a 0700 home is not)."""
        if os.geteuid() != 0:
            return
        for user in ("postgres", "nobody"):
            entered = subprocess.run(  # noqa: S603 - fixed argv
                ["runuser", "-u", user, "--", "test", "-x", str(self.state.root)],  # noqa: S607
                check=False,
            )
            if entered.returncode != 0:
                raise ComponentFailedError(
                    f"user {user} cannot enter {self.state.root} (a parent directory such "
                    "as a 0700 home is closed to it); PostgreSQL and nginx run as other users "
                    "when started as root. Put the state elsewhere (and say so to native-down "
                    "too): STACK_DIR=/var/tmp/stack make native-up; or clone under /srv."
                )

    # --- what compose says, made native (stackctl.native_map) ------------------------------
    def _compose_env(self) -> dict[str, str]:
        """The environment compose interpolates with: ours, with the twin's own database
        credentials over whatever the environment or .env say (the cluster is the twin's)."""
        values = self.state.secrets()
        return {
            **self.env,
            "POSTGRES_USER": OWNER,
            "POSTGRES_DB": DB_NAME,
            "POSTGRES_PASSWORD": values["owner"],
            "API_READER_PASSWORD": values["reader"],
            "GRAFANA_ADMIN_PASSWORD": values["grafana"],
        }

    def _services(self) -> dict[str, dict[str, Any]]:
        if self._compose is None:
            self._compose = resolved_services(self._compose_env())
        return self._compose

    def _machine(self) -> Machine:
        return Machine(self.env, self.state.config, self.state.data, self.state.run)

    def _absent(self) -> set[str]:
        """The optional components this machine has no binary for."""
        services = self._services()
        return {
            name
            for name in OPTIONAL
            if not any(shutil.which(b) for b in IMAGE_PROGRAMS[_image(services[name])])
        }

    def launch(self, name: str, machine: Machine | None = None) -> Launch:
        """How the twin runs compose service ``name`` (elsewhere: ``machine``'s ports and
        directories, as the benchmark's side variants do)."""
        spec = self._services()[name]
        return launch(name, spec, machine or self._machine(), absent=self._absent())

    def _start_all(self) -> None:
        absent = self._absent()
        for name in start_order(self._services()):
            if name == "postgres":
                self._prepare_database(self._start_postgres())
            elif name == "migrate":
                self._migrate()
            elif name in absent:
                self.report(f"  not started: {name} (not installed)")
            else:
                self._start(self.launch(name))

    def _start(self, spec: Launch) -> None:
        for directory in spec.dirs:
            directory.mkdir(parents=True, exist_ok=True)
        for notice in spec.notices:
            self.report(f"  {notice}")
        if spec.name == "gateway" and os.geteuid() == 0:
            self._open_to_nobody(spec)
        stderr = STDERR_LOGS.get(spec.name)
        self._spawn(
            spec.name,
            spec.argv,
            health=spec.health,
            env=spec.env,
            stderr_path=self.state.logs / stderr if stderr else None,
        )

    def _open_to_nobody(self, spec: Launch) -> None:
        """Without a `user` directive a root nginx master runs its workers as nobody, and they
        reopen /dev/stdout (the log) and need the prefix's temp dirs."""
        log_path = self.state.logs / f"{spec.name}.log"
        log_path.touch()
        nobody = pwd.getpwnam("nobody")
        for path in [*(d for d in spec.dirs if d.is_relative_to(self.state.run)), log_path]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        health: str | None,
        env: dict[str, str] | None = None,
        stderr_path: Path | None = None,
    ) -> None:
        self._specs.setdefault(name, (argv, health, env or {}, stderr_path))  # as `up` did
        spawn(
            name,
            argv,
            log_path=self.state.logs / f"{name}.log",
            env=env or {},
            health_url=health,
            timeout=self.timeout,
            cwd=self.state.root,
            stderr_path=stderr_path,
            # Recorded before the wait: `down` stops it even if we are interrupted meanwhile.
            on_start=lambda started: self.state.record(name, started.proc.pid),
        )
        self.report(f"  started {name}")

    # --- PostgreSQL and the one-shot migrate step ------------------------------------------
    def _cluster(self) -> PostgresCluster:
        secrets_ = self.state.secrets()
        return PostgresCluster(
            base_dir=self.state.data / "postgres",
            port=self.port("postgres", 5432),
            password=secrets_["superuser"],
            bin_dir=find_pg_bin(),
            run_as="postgres" if os.geteuid() == 0 else None,
            settings=server_settings(self._services()["postgres"]),
        )

    def _start_postgres(self) -> PostgresCluster:
        cluster = self._cluster()
        if (cluster.data_dir / "PG_VERSION").exists():
            cluster.start()
        else:
            cluster = create_cluster(
                cluster.base_dir, port=self.port("postgres", 5432), settings=cluster.settings
            )
            # create_cluster makes its own password: keep it for the next `up`.
            values = self.state.secrets()
            values["superuser"] = cluster.password
            (self.state.root / "secrets.json").write_text(json.dumps(values))
        self.state.record("postgres", _postmaster_pid(cluster))
        self.report("  started postgres")
        return cluster

    def _prepare_database(self, cluster: PostgresCluster) -> tuple[str, str]:
        """As in compose: the owner role and database, pg_stat_statements made by a superuser."""
        values = self.state.secrets()
        import psycopg  # noqa: PLC0415

        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OWNER,)).fetchone():
                cluster.create_database(DB_NAME, OWNER, values["owner"])
        # A restore (scripts/pg-backup) checks a backup in a scratch database first; compose's
        # owner is the image's superuser, this one needs the one privilege for it.
        cluster.execute(f"ALTER ROLE {OWNER} CREATEDB")
        cluster.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", DB_NAME)
        # compose's owner is the postgres image's superuser, and postgres-exporter connects as
        # it; here it is not, and gets what an exporter reads (every session's statements).
        cluster.execute(f"GRANT pg_monitor TO {OWNER}")
        return (
            cluster.url(OWNER, values["owner"], DB_NAME),
            cluster.url(READER, values["reader"], DB_NAME),
        )

    def _migrate(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """compose's one-shot migrate service; ``args`` instead of its command's (`setup`)."""
        spec = self.launch("migrate")
        argv = [*spec.argv[:-1], *args] if args else spec.argv
        result = subprocess.run(  # noqa: S603 - compose's command, made native
            argv,
            env={**os.environ, **spec.env},
            cwd=self.state.root,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        with (self.state.logs / "migrate.log").open("a") as log:
            log.write(result.stdout + result.stderr)
        if check and result.returncode != 0:
            raise ComponentFailedError(
                f"migrate {' '.join(argv[2:])} failed ({result.returncode}):\n"
                f"{log_tail(self.state.logs / 'migrate.log')}"
            )
        if check:
            self.report(f"  migrate {' '.join(args) or 'setup'} done")
        return result

    def database(self, action: str) -> None:
        """``api-svc-db <action>`` (fix-search, unfix-search, setup) on the running stack."""
        self._migrate(action)

    # --- backups (scripts/pg-backup, the script compose's `backup` service runs) ------------
    def backup(self, directory: Path) -> Path:
        """A pg_dump of the database into ``directory`` as the owner; returns the file."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Path(self._pg_backup("backup", directory=directory).stdout.strip())

    def restore(self, file: Path) -> None:
        """``file`` into the database: restored into a scratch database and its migrations
        checked first, then applied in one transaction; a bad file changes nothing."""
        self._pg_backup("stage", str(file))
        cluster = self._cluster()
        checked = self._migrate("check", "--staged", check=False)
        if checked.returncode != 0:
            self._pg_backup("discard")
            reason = _last_line(checked.stderr).removeprefix("api-svc-db check: ").rstrip(".")
            raise BackupError(f"{file} was not restored: {reason}; {DB_NAME} was not changed.")
        self._pg_backup("apply", str(file))
        # Left out of backups (it needs a superuser): made again as in _prepare_database.
        cluster.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", DB_NAME)

    def _pg_backup(
        self, *args: str, directory: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        cluster = self._cluster()
        if not cluster.is_running():
            raise BackupError(
                f"the native stack's PostgreSQL is not running in {self.state.root}: "
                "`make native-up` first."
            )
        bin_dir = client_bin(cluster)
        values = self.state.secrets()
        env = {
            **self.env,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(cluster.port),
            "PGUSER": OWNER,
            "PGPASSWORD": values["owner"],
            "PGDATABASE": DB_NAME,
            "PG_BIN": str(bin_dir),
        }
        if directory is not None:
            env["BACKUP_DIR"] = str(directory)
        result = subprocess.run(  # noqa: S603 - fixed argv
            ["bash", str(BACKUP_SCRIPT), *args],  # noqa: S607
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if result.returncode != 0:
            raise BackupError(_last_line(result.stderr).removeprefix("pg-backup: "))
        if result.stderr.strip():
            self.report(result.stderr.strip())
        return result

    # --- down ----------------------------------------------------------------------------
    def down(self) -> None:
        """Stop every recorded process (newest first) and nothing else."""
        for entry in reversed(self.state.recorded()):
            name, pid = entry["name"], int(entry["pid"])
            if procfs.start_ticks(pid) != entry["ticks"]:
                continue  # gone already, or the pid now belongs to someone else
            start = time.monotonic()
            if name == "postgres":
                self._cluster().stop("fast")
            else:
                _stop_group(pid)
            self.report(f"  stopped {name} ({time.monotonic() - start:.1f} s)")
        self.state.forget()

    def pid(self, name: str) -> int:
        """The running pid of a component this stack started."""
        for entry in reversed(self.state.recorded()):
            if entry["name"] == name and procfs.start_ticks(int(entry["pid"])) == entry["ticks"]:
                return int(entry["pid"])
        raise ComponentFailedError(f"{name} is not running")

    def wait_stopped(self, name: str, timeout: float = 60) -> None:
        pid = self.pid(name)
        deadline = time.monotonic() + timeout
        while procfs.running(pid):
            if time.monotonic() > deadline:
                raise ComponentFailedError(f"{name} still runs after {timeout:.0f} s")
            _reap(pid)
            time.sleep(0.05)

    def respawn(
        self, name: str, *, env: dict[str, str] | None = None, argv: list[str] | None = None
    ) -> None:
        """Start a stopped component again as ``up`` did, optionally with environment
        variables merged into ``up``'s or another command line (test and benchmark variants).
        With neither, it runs exactly as ``up`` started it, whatever ran in between."""
        spec_argv, health, spec_env, stderr_path = self._specs[name]
        self._spawn(
            name,
            argv or spec_argv,
            health=health,
            env={**spec_env, **(env or {})},
            stderr_path=stderr_path,
        )

    def stop(self, name: str) -> None:
        """SIGTERM a component (graceful) and wait until it is gone."""
        _stop_group(self.pid(name))  # waits, and reaps it when it is our child

    def spec_argv(self, name: str) -> list[str]:
        """The command line ``up`` started a component with."""
        return list(self._specs[name][0])

    def spec_env(self, name: str) -> dict[str, str]:
        """The environment ``up`` started a component with."""
        return dict(self._specs[name][2])

    def cluster(self) -> PostgresCluster:
        """The stack's PostgreSQL (its superuser's conninfo, its binaries)."""
        return self._cluster()

    def stop_postgres(self) -> None:
        self._cluster().stop("fast")

    def start_postgres(self) -> None:
        cluster = self._cluster()
        cluster.start()
        self.state.record("postgres", _postmaster_pid(cluster))

    def urls(self) -> dict[str, str]:
        gateway = self.gateway_url
        return {
            "gateway": gateway,
            "api-svc Swagger UI": f"{gateway}/api/docs",
            "processor-svc Swagger UI": f"{gateway}/processor/docs",
            "Prometheus": self.prometheus_url,
            "Alertmanager": _url(self.port("alertmanager", 9093)),
            "PostgreSQL": f"127.0.0.1:{self.port('postgres', 5432)} (database {DB_NAME})",
            "logs": str(self.state.logs),
        }


class BackupError(ComponentFailedError):
    """A backup or restore did not happen; the message is one sentence saying why."""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _major(version_output: str) -> int:
    """15 of "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"."""
    match = re.search(r"\)\s+(\d+)", version_output)
    if not match:
        raise BackupError(f"cannot read the version of: {version_output.strip()!r}.")
    return int(match[1])


def client_bin(cluster: PostgresCluster) -> Path:
    """The directory of pg_dump, pg_restore and psql for ``cluster``: its server's own
    directory (Debian's postgresql-client-<major> installs them there), else the first on
    PATH; refused when older than the server (pg_dump cannot dump a newer server)."""
    tools = ("pg_dump", "pg_restore", "psql")
    candidates = [cluster.bin_dir]
    # Not resolved: Debian's /usr/bin/pg_dump is a link to pg_wrapper, which picks a version.
    if found := shutil.which("pg_dump"):
        candidates.append(Path(found).parent)
    server = _major(
        subprocess.run(  # noqa: S603 - fixed argv
            [str(cluster.bin_dir / "postgres"), "--version"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    )  # fmt: skip
    for directory in candidates:
        if not all((directory / tool).is_file() for tool in tools):
            continue
        version = subprocess.run(  # noqa: S603 - fixed argv
            [str(directory / "pg_dump"), "--version"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        if _major(version) >= server:
            return directory
    raise BackupError(
        f"no pg_dump, pg_restore and psql of PostgreSQL {server} or newer found (in "
        f"{cluster.bin_dir} or on PATH): install Debian's postgresql-client-{server}."
    )


def _image(spec: dict[str, Any]) -> str:
    return str(spec["image"]).rsplit(":", 1)[0]


def _postmaster_pid(cluster: PostgresCluster) -> int:
    return int((cluster.data_dir / "postmaster.pid").read_text().split()[0])


def _stop_group(pid: int, timeout: float = 30) -> None:
    """SIGTERM the process group (graceful everywhere here), SIGKILL what outlives ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not procfs.running(pid):
            return
        time.sleep(0.05)
    os.killpg(pid, signal.SIGKILL)


def _reap(pid: int) -> None:
    """Collect our own exited child, so the group check above sees it gone."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@contextmanager
def running_stack(state_dir: Path, env: dict[str, str] | None = None) -> Iterator[NativeStack]:
    """``up`` on entry, ``down`` on exit (for tests and the benchmark)."""
    stack = NativeStack(state_dir, env)
    stack.up()
    try:
        yield stack
    finally:
        stack.down()

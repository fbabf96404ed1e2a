"""Throwaway PostgreSQL clusters from the OS packages, run by an unprivileged user.

PostgreSQL refuses to run as root; when we are root (CI is), the cluster belongs to the
`postgres` system user the Debian package creates, and every server command runs through runuser.

Used by the test kit's fixtures (testkit) and by the native twin (stackctl); it depends on
neither, and on nothing but psycopg, so the services' tests get a real PostgreSQL without
depending on the tooling.
"""

import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

__all__ = ["SUPERUSER", "PostgresCluster", "create_cluster", "find_pg_bin", "free_port"]

SUPERUSER = "postgres"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_pg_bin() -> Path:
    """The directory holding initdb/pg_ctl: $PG_BIN, PATH, or Debian's versioned directory."""
    if env := os.environ.get("PG_BIN"):
        return Path(env)
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found: install the postgresql package")
    return candidates[-1].parent


def _run_as() -> str | None:
    return SUPERUSER if os.geteuid() == 0 else None


SETTINGS = ("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all")


@dataclass
class PostgresCluster:
    """One cluster on 127.0.0.1:<port>, its data, socket and log under ``base_dir``."""

    base_dir: Path
    port: int
    password: str
    bin_dir: Path
    run_as: str | None
    # Server settings (`postgres -c`): the ones docker-compose.yml gives the postgres image.
    settings: tuple[str, ...] = SETTINGS

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    def url(self, user: str, password: str, database: str, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return (
            f"host=127.0.0.1 port={self.port} user={SUPERUSER} "
            f"password={self.password} dbname={database} connect_timeout=5"
        )

    def _cmd(self, *args: str | Path) -> list[str]:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        return [*prefix, *map(str, args)]

    def _run(self, *args: str | Path) -> None:
        subprocess.run(self._cmd(*args), check=True, capture_output=True, timeout=120)  # noqa: S603

    def init(self) -> None:
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password)
        self._chown(pwfile)
        self._run(
            self.bin_dir / "initdb", "-D", self.data_dir, "-U", SUPERUSER, "--pwfile", pwfile,
            "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        pwfile.unlink()

    def start(self) -> None:
        options = " ".join(
            (
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.base_dir}",
                # Throwaway data: durability is not worth the fsyncs.
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                *(f"-c {setting}" for setting in self.settings),
            )
        )
        self._run(
            self.bin_dir / "pg_ctl", "-D", self.data_dir, "-l", self.log_file,
            "-w", "-t", "60", "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(self.bin_dir / "pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "stop")

    def is_running(self) -> bool:
        result = subprocess.run(  # noqa: S603
            self._cmd(self.bin_dir / "pg_ctl", "-D", self.data_dir, "status"),
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def execute(self, statement: str | sql.Composed, database: str = "postgres") -> None:
        with psycopg.connect(self.conninfo(database), autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str, owner: str, owner_password: str) -> str:
        """An owner role and its database; returns the owner's SQLAlchemy URL."""
        # CREATEROLE: the setup step creates api-svc's read-only role.
        self.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                sql.Identifier(owner), sql.Literal(owner_password)
            )
        )
        self.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner)
            )
        )
        return self.url(owner, owner_password, name)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def destroy(self) -> None:
        if self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _chown(self, path: Path) -> None:
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            os.chown(path, user.pw_uid, user.pw_gid)


def create_cluster(
    base_dir: Path, port: int | None = None, settings: tuple[str, ...] = SETTINGS
) -> PostgresCluster:
    """Initialise and start a new cluster in ``base_dir`` (created, owned by the server user)."""
    base_dir.mkdir(parents=True, exist_ok=True)
    cluster = PostgresCluster(
        base_dir=base_dir,
        port=port or free_port(),
        password=secrets.token_urlsafe(16),
        bin_dir=find_pg_bin(),
        run_as=_run_as(),
        settings=settings,
    )
    cluster._chown(base_dir)
    base_dir.chmod(0o700)
    cluster.init()
    cluster.start()
    return cluster

"""scripts/pg-backup on a throwaway PostgreSQL: retention, and the refusals that need no
running stack (the whole backup/restore path on the native twin: tests/e2e/test_backup.py)."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from api_svc.config import Settings
from api_svc.db_setup import setup
from stackctl.addresses import REPO
from stackctl.native import client_bin
from testkit import PostgresCluster

OWNER_PASSWORD = secrets.token_hex(8)
OLD = ("20200101T000000Z", "20200101T000001Z", "20200101T000002Z")


@pytest.fixture(scope="module")
def cluster(postgres_cluster: PostgresCluster) -> PostgresCluster:
    """A migrated, seeded `backups` database owned by a role that may create databases, as
    the twin's and compose's owners may."""
    owner = postgres_cluster.create_database("backups", "backups_owner", OWNER_PASSWORD)
    postgres_cluster.execute("ALTER ROLE backups_owner CREATEDB")
    reader = postgres_cluster.url("backups_reader", secrets.token_hex(8), "backups")
    setup(Settings(database_url=reader, migration_database_url=owner, seed_rows=100))
    return postgres_cluster


def _run(
    cluster: PostgresCluster, *args: str, password: str = OWNER_PASSWORD, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts/pg-backup"), *args],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGHOST": "127.0.0.1",
            "PGPORT": str(cluster.port),
            "PGUSER": "backups_owner",
            "PGPASSWORD": password,
            "PGDATABASE": "backups",
            "PG_BIN": str(client_bin(cluster)),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("pg-backup: ")
    return lines[0]


def test_retention_keeps_the_newest_and_never_a_file_named_otherwise(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    for stamp in OLD:
        (tmp_path / f"backups-{stamp}.dump").write_text("an old dump")
    kept_by_hand = [
        tmp_path / "backups-before-the-upgrade.dump",
        tmp_path / f"other-{OLD[0]}.dump",
        tmp_path / f"backups-{OLD[0]}.dump.bak",
    ]
    for path in kept_by_hand:
        path.write_text("someone's own file")
    result = _run(cluster, "backup", BACKUP_DIR=str(tmp_path), BACKUP_KEEP="2")
    assert result.returncode == 0, result.stderr
    new = Path(result.stdout.strip())
    assert "removed 2 older dump(s)" in _one_line(result.stderr)
    remaining = {p.name for p in tmp_path.iterdir()}
    assert remaining == {new.name, f"backups-{OLD[2]}.dump", *(p.name for p in kept_by_hand)}


def test_keep_zero_keeps_every_dump(cluster: PostgresCluster, tmp_path: Path) -> None:
    for stamp in OLD:
        (tmp_path / f"backups-{stamp}.dump").write_text("an old dump")
    result = _run(cluster, "backup", BACKUP_DIR=str(tmp_path), BACKUP_KEEP="0")
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("backups-*.dump"))) == len(OLD) + 1


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"BACKUP_KEEP": "a week"}, "BACKUP_KEEP must be a whole number"),
        ({"BACKUP_DIR": "/nonexistent/backups"}, "does not exist or is not writable"),
        ({"PGDATABASE": "backups; DROP"}, "PGDATABASE must be a plain lower-case name"),
    ],
    ids=["keep", "dir", "database"],
)
def test_bad_settings_fail_in_one_line(
    cluster: PostgresCluster, tmp_path: Path, env: dict[str, str], says: str
) -> None:
    result = _run(cluster, "backup", **{"BACKUP_DIR": str(tmp_path), **env})
    assert result.returncode == 1
    assert says in _one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_dump_leaves_no_file(cluster: PostgresCluster, tmp_path: Path) -> None:
    result = _run(cluster, "backup", password=OWNER_PASSWORD + "0", BACKUP_DIR=str(tmp_path))
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "pg_dump of backups as backups_owner failed" in line
    assert "password authentication failed" in line
    assert list(tmp_path.iterdir()) == [], "not even the hidden partial file"


@pytest.mark.parametrize(
    "args", [(), ("stage",), ("apply",), ("backup", "extra"), ("restore", "x.dump")]
)
def test_a_wrong_command_line_is_a_usage_error(
    cluster: PostgresCluster, args: tuple[str, ...]
) -> None:
    result = _run(cluster, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: pg-backup ")


def test_apply_without_stage_changes_nothing(cluster: PostgresCluster, tmp_path: Path) -> None:
    made = _run(cluster, "backup", BACKUP_DIR=str(tmp_path))
    assert made.returncode == 0, made.stderr
    result = _run(cluster, "apply", made.stdout.strip())
    assert result.returncode == 1
    assert "was not staged and checked (run stage first)" in _one_line(result.stderr)


def test_the_client_is_the_host_s_own_and_not_older_than_the_server(
    cluster: PostgresCluster,
) -> None:
    directory = client_bin(cluster)
    assert {"pg_dump", "pg_restore", "psql"} <= {p.name for p in directory.iterdir()}

    def major(program: Path) -> int:
        output = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        return int(output.split(")")[1].split()[0].split(".")[0])

    assert major(directory / "pg_dump") >= major(cluster.bin_dir / "postgres")


@pytest.mark.parametrize("command", [("backup",), ("restore", "backups/x.dump")])
def test_stackctl_without_a_running_stack_says_so_in_one_sentence(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "stackctl.cli", *command, "--state-dir", str(state),
         "--dir", str(tmp_path / "dumps")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PostgreSQL is not running" in lines[0]
    assert "Traceback" not in result.stderr

"""The one-shot database step: idempotent seed, a read-only role, the bottleneck and its fix."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import make_url

from api_svc.config import Settings
from api_svc.db_setup import _run_alembic, check_migrations, setup
from api_svc.statements import SEARCH


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
    )


@pytest.fixture
def reader(settings: Settings) -> Iterator[psycopg.Connection]:
    with _connect(settings.database_url) as conn:
        yield conn


@pytest.fixture
def owner(settings: Settings) -> Iterator[psycopg.Connection]:
    assert settings.migration_database_url
    with _connect(settings.migration_database_url) as conn:
        yield conn


def test_the_reader_can_select(reader: psycopg.Connection) -> None:
    row = reader.execute("SELECT count(*) FROM messages").fetchone()
    assert row is not None
    assert row[0] >= 100_010


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO messages (text) VALUES ('not allowed')",
        "UPDATE messages SET text = 'x' WHERE id = 1",
        "DELETE FROM messages WHERE id = 1",
        "TRUNCATE messages",
        "CREATE TABLE sneaky (id int)",
        "DROP TABLE messages",
    ],
)
def test_the_reader_cannot_write(reader: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute(statement)


def test_setup_is_idempotent(settings: Settings, owner: psycopg.Connection) -> None:
    query = "SELECT count(*), sum(length(text)) FROM messages"
    before = owner.execute(query).fetchone()
    setup(settings)
    assert owner.execute(query).fetchone() == before


def _plan(conn: psycopg.Connection, sql: str) -> str:
    rows = conn.execute(f"EXPLAIN {sql}").fetchall()
    return "\n".join(row[0] for row in rows)


def _search_plans(conn: psycopg.Connection) -> list[str]:
    """The plans of api-svc's own search statement: as a one-off with the pattern known, and
    as the generic plan its prepared statement may switch to (the pattern unknown)."""
    positional = SEARCH.sql.replace("%(pattern)s", "$1").replace("%(limit)s", "$2")
    arguments = "('%zulu tango%', 10)"
    conn.execute(f"PREPARE search AS {positional}")
    try:
        plans = []
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn.execute(f"SET plan_cache_mode = {mode}")
            plans.append(_plan(conn, f"EXECUTE search {arguments}"))
        return plans
    finally:
        conn.execute("DEALLOCATE search")
        conn.execute("RESET plan_cache_mode")


def test_search_scans_the_table_until_the_fix_adds_an_index(
    settings: Settings, reader: psycopg.Connection
) -> None:
    assert all("Seq Scan on messages" in plan for plan in _search_plans(reader))
    assert "Index Scan using messages_pkey" in _plan(reader, "SELECT * FROM messages WHERE id = 5")
    _run_alembic(settings, "upgrade", "search_index@head")
    try:
        for fixed in _search_plans(reader):
            assert "ix_messages_text_trgm" in fixed
            assert "Seq Scan" not in fixed
    finally:
        _run_alembic(settings, "downgrade", "search_index@base")
    assert all("Seq Scan on messages" in plan for plan in _search_plans(reader))


# --------------------------------------------------------------------------- api-svc-db check
# The migrations check a restore runs on its scratch database before it touches the real one
# (scripts/pg-backup stage, `api-svc-db check --staged`, apply).


def _check(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`api-svc-db check` as compose's migrate job and stackctl run it: a process of its own."""
    assert settings.migration_database_url
    return subprocess.run(
        [sys.executable, "-m", "api_svc.db_setup", "check", *args],
        env={
            **os.environ,
            "MIGRATION_DATABASE_URL": settings.migration_database_url,
            "DATABASE_URL": settings.database_url,
            "TRACING_ENABLED": "false",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def _recorded(owner: psycopg.Connection, *revisions: str) -> Iterator[None]:
    """alembic_version holding ``revisions`` for the block, then what it held before."""
    before = [row[0] for row in owner.execute("SELECT version_num FROM alembic_version")]
    with owner.transaction():
        owner.execute("DELETE FROM alembic_version")
        for revision in revisions:
            owner.execute("INSERT INTO alembic_version VALUES (%s)", (revision,))
    try:
        yield
    finally:
        with owner.transaction():
            owner.execute("DELETE FROM alembic_version")
            for revision in before:
                owner.execute("INSERT INTO alembic_version VALUES (%s)", (revision,))


def test_check_passes_on_a_database_at_the_code_s_head(settings: Settings) -> None:
    assert check_migrations(settings.migration_database_url or "") == ("0001",)
    result = _check(settings)
    assert result.returncode == 0, result.stderr
    assert '"event":"migrations_current"' in result.stdout.replace(" ", "")


def test_check_accepts_the_search_fix_either_way(settings: Settings) -> None:
    # After fix-search alembic records only 1001, whose dependency 0001 is applied too.
    _run_alembic(settings, "upgrade", "search_index@head")
    try:
        assert check_migrations(settings.migration_database_url or "") == ("1001",)
    finally:
        _run_alembic(settings, "downgrade", "search_index@base")


@pytest.mark.parametrize(
    ("revisions", "says"),
    [
        ((), "records no migrations (no alembic_version): not an api-svc database"),
        (("9999",), "is at revision 9999, which this code does not know"),
        (("0001", "abcdef"), "which this code does not know"),
    ],
    ids=["nothing-recorded", "unknown", "one-unknown"],
)
def test_check_refuses_other_migrations_in_one_sentence(
    settings: Settings, owner: psycopg.Connection, revisions: tuple[str, ...], says: str
) -> None:
    with _recorded(owner, *revisions):
        result = _check(settings)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("api-svc-db check: database messages ")
    assert says in lines[0]
    assert "Traceback" not in result.stderr


def test_check_staged_reads_the_scratch_database_of_a_restore(settings: Settings) -> None:
    assert settings.migration_database_url
    name = make_url(settings.migration_database_url).database
    result = _check(settings, "--staged")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot connect to database {name}_restore" in line
    assert f'database "{name}_restore" does not exist' in line

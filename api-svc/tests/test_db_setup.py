"""The one-shot database step: idempotent seed, a read-only role, the bottleneck and its fix."""

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import make_url

from api_svc.config import Settings
from api_svc.db_setup import _run_alembic, setup


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


SEARCH = (
    "SELECT id, text FROM messages WHERE text ILIKE '%zulu tango%' "
    "ORDER BY created_at DESC, id DESC LIMIT 10"
)


def test_search_scans_the_table_until_the_fix_adds_an_index(
    settings: Settings, reader: psycopg.Connection
) -> None:
    assert "Seq Scan on messages" in _plan(reader, SEARCH)
    assert "Index Scan using messages_pkey" in _plan(reader, "SELECT * FROM messages WHERE id = 5")
    _run_alembic(settings, "upgrade", "search_index@head")
    try:
        fixed = _plan(reader, SEARCH)
        assert "ix_messages_text_trgm" in fixed
        assert "Seq Scan" not in fixed
    finally:
        _run_alembic(settings, "downgrade", "search_index@base")
    assert "Seq Scan on messages" in _plan(reader, SEARCH)

"""SQL statements as CLIENT spans: attributes computed once per engine, errors marked."""

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import make_url, text
from sqlalchemy.exc import DataError

from api_svc.config import Settings
from api_svc.db import Database
from api_svc.sql_spans import trace_statements


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


def _run(settings: Settings, exporter: InMemorySpanExporter, *statements: str) -> None:
    """Run ``statements`` through a traced engine, then stop tracing and run them again."""
    provider = TracerProvider()  # our own: the process-wide one belongs to the app tests
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def run_all(database: Database) -> None:
        for statement in statements:
            async with database.session() as session:
                # The division by zero below fails: its span is what is checked.
                with contextlib.suppress(DataError):
                    await session.execute(text(statement))

    async def scenario() -> None:
        database = Database(settings)
        try:
            stop = trace_statements(database.engine.sync_engine, provider.get_tracer("test"))
            await run_all(database)
            stop()
            await run_all(database)  # no longer traced
        finally:
            await database.dispose()

    asyncio.run(scenario())


def test_each_statement_is_a_client_span_with_the_database_attributes(
    settings: Settings, exporter: InMemorySpanExporter
) -> None:
    _run(settings, exporter, "SELECT id FROM messages WHERE id = 1")
    spans: tuple[ReadableSpan, ...] = exporter.get_finished_spans()
    assert len(spans) == 1, "one span per statement, none after stop()"
    [span] = spans
    url = make_url(settings.database_url)
    assert span.name == f"SELECT {url.database}"
    assert span.kind == SpanKind.CLIENT
    assert span.attributes == {
        "db.system": "postgresql",
        "db.name": url.database,
        "db.user": url.username,
        "net.peer.name": url.host,
        "net.peer.port": url.port,
        "db.statement": "SELECT id FROM messages WHERE id = 1",
        "db.operation": "SELECT",
    }
    assert span.status.status_code == StatusCode.UNSET


def test_a_failing_statement_ends_its_span_as_an_error(
    settings: Settings, exporter: InMemorySpanExporter
) -> None:
    _run(settings, exporter, "SELECT 1 / 0")
    [span] = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "DivisionByZero"
    assert [event.name for event in span.events] == ["exception"]

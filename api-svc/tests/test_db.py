"""The way into the database: fair under contention, bounded, a span per statement, and one
retry after PostgreSQL dropped the pool's connections."""

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from psycopg_pool import PoolTimeout
from sqlalchemy import make_url

from api_svc.config import Settings
from api_svc.db import Database, libpq_conninfo
from api_svc.statements import MESSAGE_BY_ID, Statement

HOLD_SECONDS = 0.01
SLEEP = Statement(sql="SELECT pg_sleep(%(seconds)s)", operation="SELECT")
DIVIDE = Statement(sql="SELECT 1 / %(by)s", operation="SELECT")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


def _tracer(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()  # our own: the process-wide one belongs to the app tests
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def _opened(settings: Settings, exporter: InMemorySpanExporter | None = None) -> Database:
    tracer = _tracer(exporter).get_tracer("test") if exporter else None
    database = Database(settings, tracer)
    await database.pool.open(wait=True)
    return database


async def _arrivals(database: Database, count: int, every: float) -> list[int]:
    """``count`` requests arriving ``every`` seconds, each holding a connection for a while;
    returns the order in which they got one."""
    served: list[int] = []

    async def request(n: int) -> None:
        async with database.pool.connection() as conn:
            served.append(n)
            await conn.execute(SLEEP.sql, {"seconds": HOLD_SECONDS})

    tasks = []
    for n in range(count):
        tasks.append(asyncio.create_task(request(n)))
        await asyncio.sleep(every)
    await asyncio.gather(*tasks)
    return served


def test_connections_are_handed_out_first_come_first_served(settings: Settings) -> None:
    """Arrivals twice as fast as two connections can serve them: a queue builds up, and a
    returned connection goes to the oldest waiter, never to a newcomer."""

    async def scenario() -> list[int]:
        database = await _opened(settings.model_copy(update={"db_pool_size": 2}))
        try:
            return await _arrivals(database, count=60, every=HOLD_SECONDS / 4)
        finally:
            await database.close()

    served = asyncio.run(scenario())
    assert served == sorted(served)


def test_a_full_pool_answers_with_the_pool_timeout_error(settings: Settings) -> None:
    """Waiting for a connection is bounded by the pool timeout and ends in an error that
    api-svc answers with a 503 envelope (a psycopg OperationalError)."""
    narrow = settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout_seconds": 0.2})

    async def scenario() -> float:
        database = await _opened(narrow)
        try:
            async with database.pool.connection():
                loop = asyncio.get_running_loop()
                start = loop.time()
                with pytest.raises(PoolTimeout):
                    await database.fetch(MESSAGE_BY_ID, {"id": 1})
                return loop.time() - start
        finally:
            await database.close()

    waited = asyncio.run(scenario())
    assert 0.2 <= waited < 1.0
    assert issubclass(PoolTimeout, psycopg.OperationalError)


def test_each_statement_is_a_client_span_with_the_database_attributes(
    settings: Settings, exporter: InMemorySpanExporter
) -> None:
    async def scenario() -> list[tuple[int, str]]:
        database = await _opened(settings, exporter)
        try:
            rows = await database.fetch(MESSAGE_BY_ID, {"id": 1})
            await database.ping()  # readiness: no span
            return rows
        finally:
            await database.close()

    rows = asyncio.run(scenario())
    assert [id for id, _ in rows] == [1]
    [span] = exporter.get_finished_spans()
    url = make_url(settings.database_url)
    assert span.name == f"SELECT {url.database}"
    assert span.kind == SpanKind.CLIENT
    assert span.attributes == {
        "db.system": "postgresql",
        "db.name": url.database,
        "db.user": url.username,
        "net.peer.name": url.host,
        "net.peer.port": url.port,
        "db.statement": MESSAGE_BY_ID.sql,
        "db.operation": "SELECT",
    }
    assert span.status.status_code == StatusCode.UNSET


def test_a_failing_statement_ends_its_span_as_an_error(
    settings: Settings, exporter: InMemorySpanExporter
) -> None:
    async def scenario() -> None:
        database = await _opened(settings, exporter)
        try:
            with pytest.raises(psycopg.errors.DivisionByZero):
                await database.fetch(DIVIDE, {"by": 0})
        finally:
            await database.close()

    asyncio.run(scenario())
    [span] = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "DivisionByZero"
    assert [event.name for event in span.events] == ["exception"]


def _drop_connections(settings: Settings) -> int:
    """What a PostgreSQL restart does to api-svc's pooled connections: the server ends them."""
    with psycopg.connect(libpq_conninfo(settings.database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = current_user AND application_name = %s AND pid <> pg_backend_pid()",
            (settings.service_name,),
        ).fetchone()
    return row[0] if row else 0


def test_reads_after_the_server_dropped_every_connection_all_succeed(
    settings: Settings, exporter: InMemorySpanExporter
) -> None:
    """Every pooled connection ended by the server: the first read meets a dead one, the pool
    is checked once (the other dead ones go too), the read runs again; nobody sees an error.
    Then each connection was replaced exactly once."""
    size = 4

    async def scenario() -> tuple[int, list[list[tuple[int, str]]], dict[str, int]]:
        database = await _opened(settings.model_copy(update={"db_pool_size": size}), exporter)
        try:
            dropped = await asyncio.to_thread(_drop_connections, settings)
            await asyncio.sleep(0.1)  # the server has closed the sockets
            results = [await database.fetch(MESSAGE_BY_ID, {"id": n}) for n in range(1, 9)]
            return dropped, results, database.pool.get_stats()
        finally:
            await database.close()

    dropped, results, stats = asyncio.run(scenario())
    assert dropped == size
    assert [rows[0][0] for rows in results] == list(range(1, 9))
    retried = [s for s in exporter.get_finished_spans() if s.events]
    assert len(retried) == 1, "only the first read met a dead connection"
    assert retried[0].status.status_code == StatusCode.UNSET
    assert stats.get("connections_lost", 0) + stats.get("returns_bad", 0) == size

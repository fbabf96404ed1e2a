"""The database: psycopg's own pool, prepared statements, a span per statement, and one retry
of a read that met a connection PostgreSQL had dropped."""

import logging
from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import make_url

from api_svc.config import Settings
from api_svc.statements import Statement

Params = dict[str, Any]
Attributes = dict[str, str | int]

# The pool logs every checkout at INFO: one line per request under the root logger's level.
logging.getLogger("psycopg.pool").setLevel(logging.WARNING)


def libpq_conninfo(url: str) -> str:
    """``DATABASE_URL`` is SQLAlchemy's (``postgresql+psycopg://``); libpq wants no driver."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_pool(settings: Settings) -> AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]:
    return AsyncConnectionPool(
        libpq_conninfo(settings.database_url),
        min_size=settings.db_pool_size,
        max_size=settings.db_pool_size + settings.db_max_overflow,
        # Waiting for a connection is bounded; the pool hands a returned connection to the
        # oldest waiter, so nobody is overtaken while a queue stands.
        timeout=settings.db_pool_timeout_seconds,
        # A connection lost while PostgreSQL is down is given up after this long rather than
        # retried with a growing back-off; the next request that finds the pool empty makes a
        # new one, so the pool is whole again within a second of PostgreSQL's return.
        reconnect_timeout=settings.db_pool_timeout_seconds,
        # No `check`: a ping per checkout would cost a round trip on every request to save
        # one error after a rare restart. Disconnects are handled in Database.fetch.
        open=False,
        kwargs={
            # Read-only service: no BEGIN/ROLLBACK round trips around every single SELECT.
            "autocommit": True,
            "connect_timeout": settings.db_connect_timeout_seconds,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            "application_name": settings.service_name,
        },
    )


class Database:
    """Runs api-svc's statements: each prepared once per connection, each a CLIENT span that
    is a child of the request's server span (the attributes Tempo's service graph reads for
    database nodes are computed once, here)."""

    def __init__(self, settings: Settings, tracer: trace.Tracer | None = None) -> None:
        self.pool = create_pool(settings)
        self._tracer = tracer or trace.NoOpTracer()
        url = make_url(settings.database_url)
        self._database = url.database or ""
        self._span_shapes: dict[Statement, tuple[str, Attributes]] = {}
        self._attributes: Attributes = {"db.system": "postgresql"}
        self._attributes["db.name"] = self._database
        if url.host:
            self._attributes["net.peer.name"] = url.host
        if url.port:
            self._attributes["net.peer.port"] = url.port
        if url.username:
            self._attributes["db.user"] = url.username

    async def open(self) -> None:
        """Start connecting in the background: api-svc starts even while PostgreSQL is down."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def fetch(self, statement: Statement, params: Params) -> list[TupleRow]:
        """The rows of a read-only statement.

        A connection PostgreSQL dropped (it restarted) fails only when it is used. Then the
        pool is checked once, so that the connections that died with it go too, and the
        statement runs once more: a read has no effect to repeat. Any other error is raised.
        """
        name, attributes = self._span_shapes.get(statement) or self._shape(statement)
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        try:
            async with self.pool.connection() as conn:
                try:
                    return await _rows(conn, statement, params)
                except psycopg.OperationalError:
                    if not conn.broken:
                        raise
            span.add_event("connection dropped by the server; pool checked, statement retried")
            await self.pool.check()
            async with self.pool.connection() as conn:
                return await _rows(conn, statement, params)
        except Exception as error:
            span.record_exception(error)
            # The type only: the message may quote a parameter.
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            span.end()

    def _shape(self, statement: Statement) -> tuple[str, Attributes]:
        """A statement's span name and attributes, made on its first run and kept."""
        attributes: Attributes = {
            **self._attributes,
            "db.statement": statement.sql,
            "db.operation": statement.operation,
        }
        shape = self._span_shapes[statement] = (
            f"{statement.operation} {self._database}",
            attributes,
        )
        return shape

    async def ping(self) -> None:
        """One round trip on a pooled connection (readiness; never traced)."""
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")


async def _rows(
    conn: psycopg.AsyncConnection[TupleRow], statement: Statement, params: Params
) -> list[TupleRow]:
    cursor = await conn.execute(statement.sql, params, prepare=True)
    return await cursor.fetchall()

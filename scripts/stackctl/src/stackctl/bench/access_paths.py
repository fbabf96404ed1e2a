"""``make bench-db``: what one read by primary key costs on each way into PostgreSQL.

    uv run --frozen python -m stackctl.bench.access_paths

A throwaway cluster (testing/pgcluster) migrated and seeded by ``api-svc-db setup``; in this
one process, ``BENCH_DB_READS`` (3,000) sequential ``GET /message/{id}`` reads per path and
round, ``BENCH_DB_ROUNDS`` (3) rounds with the paths in rotated order; the client's CPU per read
(``time.process_time``; the server's own time is the same for all) as the median of the rounds,
printed as the Markdown table docs/performance.md shows.
"""

import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path

import psycopg
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from api_svc.config import Settings
from api_svc.db import Database, libpq_conninfo
from api_svc.db_setup import setup
from api_svc.models import Message
from api_svc.statements import MESSAGE_BY_ID
from pgcluster import create_cluster
from stackctl.bench.settings import say

READABLE_IDS = 10  # the seeded messages 1..10, read in turn
Read = Callable[[int], Awaitable[object]]


@asynccontextmanager
async def _engine(settings: Settings, *, ping: bool) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        settings.database_url, pool_pre_ping=ping, isolation_level="AUTOCOMMIT"
    )
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def _orm(settings: Settings, *, ping: bool) -> AsyncIterator[Read]:
    async with _engine(settings, ping=ping) as engine:

        async def read(id: int) -> object:
            async with AsyncSession(engine) as session:
                return await session.get(Message, id)

        yield read


@asynccontextmanager
async def _core(settings: Settings, *, ping: bool) -> AsyncIterator[Read]:
    columns = select(Message.id, Message.text)
    async with _engine(settings, ping=ping) as engine:

        async def read(id: int) -> object:
            async with engine.connect() as conn:
                return (await conn.execute(columns.where(Message.id == id))).one_or_none()

        yield read


@asynccontextmanager
async def _psycopg(settings: Settings) -> AsyncIterator[Read]:
    conn = await psycopg.AsyncConnection.connect(
        libpq_conninfo(settings.database_url), autocommit=True
    )

    async def read(id: int) -> object:
        cursor = await conn.execute(MESSAGE_BY_ID.sql, {"id": id}, prepare=True)
        return await cursor.fetchone()

    try:
        yield read
    finally:
        await conn.close()


@asynccontextmanager
async def _api_svc(settings: Settings, *, traced: bool) -> AsyncIterator[Read]:
    # Traced: the SDK's span with no processor, i.e. what making the SQL span costs; its export
    # runs in the exporter's thread and is in the benchmark's full variant, not here.
    tracer = TracerProvider().get_tracer("bench") if traced else None
    database = Database(settings, tracer)
    await database.pool.open(wait=True)

    async def read(id: int) -> object:
        return await database.fetch(MESSAGE_BY_ID, {"id": id})

    try:
        yield read
    finally:
        await database.close()


# (label, the path's set-up): each yields one read by id; the order is the table's.
PATHS: tuple[tuple[str, Callable[[Settings], AbstractAsyncContextManager[Read]]], ...] = (
    ("SQLAlchemy ORM `AsyncSession.get`, `pool_pre_ping`", partial(_orm, ping=True)),
    ("the same, no ping", partial(_orm, ping=False)),
    (
        "SQLAlchemy Core `select()` on `engine.connect()`, `pool_pre_ping`",
        partial(_core, ping=True),
    ),
    ("the same, no ping", partial(_core, ping=False)),
    ("psycopg 3 `AsyncConnection`, one connection, prepared statement", _psycopg),
    ("**api-svc**: psycopg_pool, prepared statement, untraced", partial(_api_svc, traced=False)),
    ("**api-svc**, with its SQL span", partial(_api_svc, traced=True)),
)


async def _cpu_per_read_ms(read: Read, reads: int) -> float:
    for id in range(1, READABLE_IDS + 1):  # warm: connections made, statements prepared
        await read(id)
    start = time.process_time()
    for n in range(reads):
        await read(n % READABLE_IDS + 1)
    return (time.process_time() - start) / reads * 1000


async def measure(settings: Settings, reads: int, rounds: int) -> list[tuple[str, float]]:
    """Each path's median CPU per read over ``rounds``, in PATHS order."""
    runs: dict[int, list[float]] = {index: [] for index in range(len(PATHS))}
    for number in range(rounds):
        shift = number % len(PATHS)  # each round starts with another path
        for index in [*range(shift, len(PATHS)), *range(shift)]:
            label, path = PATHS[index]
            async with path(settings) as read:
                runs[index].append(await _cpu_per_read_ms(read, reads))
            say(f"  round {number + 1}: {label}: {runs[index][-1]:.3f} ms")
    return [(label, statistics.median(runs[index])) for index, (label, _) in enumerate(PATHS)]


def table(results: list[tuple[str, float]], reads: int) -> str:
    lines = [
        f"| access path ({reads:,} sequential reads by id, one process) | CPU per read |",
        "|---|---:|",
    ]
    lines += [f"| {label} | {ms:.2f} ms |" for label, ms in results]
    return "\n".join(lines)


def main() -> None:
    reads = int(os.environ.get("BENCH_DB_READS", "3000"))
    rounds = int(os.environ.get("BENCH_DB_ROUNDS", "3"))
    cluster = create_cluster(Path(tempfile.mkdtemp(prefix="bench-db-")))
    try:
        owner = cluster.create_database("messages", "messages_owner", secrets.token_urlsafe(12))
        reader = secrets.token_urlsafe(12)
        settings = Settings(
            database_url=cluster.url("api_reader", reader, "messages"),
            migration_database_url=owner,
            seed_rows=10_000,
        )
        setup(settings)
        say(f"Access paths: {rounds} rounds of {reads:,} reads each")
        results = asyncio.run(measure(settings, reads, rounds))
    finally:
        cluster.destroy()
    say("\n" + table(results, reads))


if __name__ == "__main__":
    main()

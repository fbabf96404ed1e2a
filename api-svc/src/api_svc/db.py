"""The database: an async engine (psycopg 3, a bounded pool) and a fair way into it."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from api_svc.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        # A connection that died with a PostgreSQL restart is replaced before it is used. It costs
        # a round trip per checkout, but without it stale connections stayed in the pool after a
        # restart and answered 503 whenever a quiet service next picked one up (make test: three
        # 503s minutes after test_faults had restarted PostgreSQL).
        pool_pre_ping=True,
        pool_recycle=1800,
        # Read-only service: no BEGIN/ROLLBACK round trips around every single SELECT.
        isolation_level="AUTOCOMMIT",
        connect_args={
            "connect_timeout": settings.db_connect_timeout_seconds,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            "application_name": settings.service_name,
        },
    )


class Database:
    """The engine, and sessions handed out first come, first served.

    The pool's own queue is not fair under load: a connection given back wakes the oldest
    waiter, but a request that arrives in the meantime takes it first, and the woken waiter
    queues again at the end. On a saturated worker the unlucky ones wait out the pool timeout
    (a 503) while p50 stays low. A semaphore with one slot per pooled connection queues
    requests in order (asyncio's is fair), so the pool itself never has to make anyone wait.
    """

    def __init__(self, settings: Settings) -> None:
        self.engine = create_engine(settings)
        self._sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._slots = asyncio.Semaphore(settings.db_pool_size + settings.db_max_overflow)
        self._wait_seconds = settings.db_pool_timeout_seconds

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        if self._slots.locked():  # only a request that must queue pays for the timeout
            try:
                async with asyncio.timeout(self._wait_seconds):
                    await self._slots.acquire()
            except TimeoutError:
                # The same 503 as the pool's own timeout (api_svc.errors).
                raise PoolTimeoutError("no database connection within the pool timeout") from None
        else:
            await self._slots.acquire()  # returns at once
        try:
            async with self._sessionmaker() as session:
                yield session
        finally:
            self._slots.release()

    async def dispose(self) -> None:
        await self.engine.dispose()

"""The way into the database: fair under contention, bounded, the pool's own 503 when full."""

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api_svc.config import Settings
from api_svc.db import Database

HOLD_SECONDS = 0.01


async def _arrivals(database: Database, count: int, every: float) -> list[int]:
    """``count`` requests arriving ``every`` seconds, each holding a connection for a while;
    returns the order in which they got one."""
    served: list[int] = []

    async def request(n: int) -> None:
        async with database.session() as session:
            served.append(n)
            await session.execute(text(f"SELECT pg_sleep({HOLD_SECONDS})"))

    tasks = []
    for n in range(count):
        tasks.append(asyncio.create_task(request(n)))
        await asyncio.sleep(every)
    await asyncio.gather(*tasks)
    return served


def test_sessions_are_handed_out_first_come_first_served(settings: Settings) -> None:
    """Arrivals twice as fast as two connections can serve them: a queue builds up, and with
    the pool's own queue newcomers overtake woken waiters; here nobody is overtaken."""

    async def scenario() -> list[int]:
        database = Database(settings.model_copy(update={"db_pool_size": 2}))
        try:
            return await _arrivals(database, count=60, every=HOLD_SECONDS / 4)
        finally:
            await database.dispose()

    served = asyncio.run(scenario())
    assert served == sorted(served)


def test_a_full_pool_answers_with_the_pool_timeout_error(settings: Settings) -> None:
    """Waiting for a slot is bounded by the pool timeout and ends in the error that
    api-svc answers with a 503 envelope."""
    narrow = settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout_seconds": 0.2})

    async def scenario() -> float:
        database = Database(narrow)
        try:
            async with database.session() as holder:
                await holder.execute(text("SELECT 1"))
                loop = asyncio.get_running_loop()
                start = loop.time()
                with pytest.raises(PoolTimeoutError):
                    async with database.session():
                        pass
                return loop.time() - start
        finally:
            await database.dispose()

    waited = asyncio.run(scenario())
    assert 0.2 <= waited < 1.0

"""Dependency aliases that keep route signatures short.

All ``async``: a plain ``def`` dependency costs a hop to the thread pool on every request.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api_svc.db import Database
from api_svc.metrics import MessageMetrics


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.database
    async with database.session() as session:
        yield session


async def _metrics(request: Request) -> MessageMetrics:
    metrics: MessageMetrics = request.app.state.message_metrics
    return metrics


SessionDep = Annotated[AsyncSession, Depends(_session)]
MetricsDep = Annotated[MessageMetrics, Depends(_metrics)]

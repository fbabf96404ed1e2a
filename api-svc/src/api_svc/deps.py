"""Dependency aliases that keep route signatures short.

All ``async``: a plain ``def`` dependency costs a hop to the thread pool on every request.
"""

from typing import Annotated

from fastapi import Depends, Request

from api_svc.db import Database
from api_svc.metrics import MessageMetrics


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def _metrics(request: Request) -> MessageMetrics:
    metrics: MessageMetrics = request.app.state.message_metrics
    return metrics


DatabaseDep = Annotated[Database, Depends(_database)]
MetricsDep = Annotated[MessageMetrics, Depends(_metrics)]

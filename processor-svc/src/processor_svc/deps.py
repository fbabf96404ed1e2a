"""Dependency aliases that keep route signatures short.

All ``async``: a plain ``def`` dependency costs a hop to the thread pool on every request.
"""

from typing import Annotated

from fastapi import Depends, Request

from processor_svc.config import Settings
from processor_svc.metrics import ProcessorMetrics
from service_kit.errors import AppError, ErrorCode


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _metrics(request: Request) -> ProcessorMetrics:
    metrics: ProcessorMetrics = request.app.state.processor_metrics
    return metrics


async def _require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise AppError(
            415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json"
        )


SettingsDep = Annotated[Settings, Depends(_settings)]
MetricsDep = Annotated[ProcessorMetrics, Depends(_metrics)]
RequireJson = Depends(_require_json)

"""What a route needs besides its body: the JSON check, the settings, the metrics.

The check is a dependency (``async``: a plain ``def`` one costs a hop to the thread pool), so
that a body of another media type is answered 415 before it is validated. The settings and
metrics are read from the app's state by plain functions instead: each FastAPI dependency
costs its own solving on every request, several times what the read does.
"""

from fastapi import Depends, Request

from processor_svc.config import Settings
from processor_svc.metrics import ProcessorMetrics
from service_kit.errors import AppError, ErrorCode


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def metrics_of(request: Request) -> ProcessorMetrics:
    metrics: ProcessorMetrics = request.app.state.processor_metrics
    return metrics


async def _require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise AppError(
            415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json"
        )


RequireJson = Depends(_require_json)

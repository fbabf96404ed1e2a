"""api-svc: ``gunicorn api_svc.main:app -c python:service_kit.gunicorn_conf``."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry import trace

from api_svc.config import Settings, get_settings
from api_svc.db import Database
from api_svc.errors import install_database_error_handlers
from api_svc.metrics import MessageMetrics
from api_svc.routes import messages, ready
from service_kit.app import create_service_app
from service_kit.metrics import Metrics


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The pool belongs to the worker process: made after gunicorn forked.
        tracer = (
            trace.get_tracer("api_svc.sql", settings.service_version)
            if settings.tracing_enabled
            else None
        )
        database = Database(settings, tracer)
        await database.open()
        app.state.database = database
        try:
            yield
        finally:
            await database.close()

    def setup(app: FastAPI, metrics: Metrics) -> None:
        app.state.message_metrics = MessageMetrics(metrics)
        install_database_error_handlers(app)

    return create_service_app(
        settings,
        title="api-svc",
        description="Read-only messages from PostgreSQL.",
        routers=[ready.router, messages.router],
        lifespan=lifespan,
        setup=setup,
    )


app = create_app()

"""The benchmark's peer: the same two services, instrumented the usual way.

prometheus-fastapi-instrumentator, OpenTelemetry's FastAPIInstrumentor (BatchSpanProcessor, OTLP
exporter) and a logging middleware declared with ``@app.middleware("http")`` (Starlette's
BaseHTTPMiddleware) that writes one structlog JSON line per request: the stack the field notes
measured, and the usual way into the database: an ORM ``AsyncSession`` on SQLAlchemy's pool,
traced by opentelemetry-instrumentation-sqlalchemy. Everything else is the services' own:
routers, statements, settings, business metrics, error envelope. So the benchmark compares
implementations, not features.

To compare implementations and not configurations, the peer gets the same tracing choices as
ours (no spans for /health, /ready, /metrics; no per-message receive/send spans) and FastAPI's
own telemetry is off in both. With the libraries' defaults it would be slower still.

    gunicorn 'stackctl.bench_peer:create_api_app()' -c python:service_kit.gunicorn_conf
"""

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_fastapi_instrumentator import Instrumentator
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from starlette.middleware.base import RequestResponseEndpoint
from structlog.typing import EventDict, WrappedLogger

from api_svc.config import Settings as ApiSettings
from api_svc.errors import database_unavailable, install_database_error_handlers
from api_svc.metrics import MessageMetrics
from api_svc.routes import messages, ready
from api_svc.statements import Statement
from processor_svc.config import Settings as ProcessorSettings
from processor_svc.metrics import ProcessorMetrics
from processor_svc.routes import process
from service_kit import health
from service_kit.app import NATIVE_TELEMETRY_OFF, Lifespan
from service_kit.errors import install_error_handlers
from service_kit.metrics import Metrics
from service_kit.settings import ObservabilitySettings


def _add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The usual processor: the current span's ids on every line (as ours does)."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


def _configure_structlog() -> None:
    """structlog's documented JSON set-up: contextvars, level, ISO timestamp, JSON, print."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            _add_trace_ids,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )


def _start_tracing(settings: ObservabilitySettings) -> TracerProvider:
    """A TracerProvider per worker (called from the lifespan, i.e. after gunicorn forked)."""
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.otel_exporter_otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _add_logging_middleware(app: FastAPI, service: str) -> None:
    log = structlog.get_logger("access")

    @app.middleware("http")
    async def access_log(request: Request, call_next: RequestResponseEndpoint) -> Response:
        structlog.contextvars.clear_contextvars()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(service=service, request_id=request_id)
        start = perf_counter()
        response = await call_next(request)
        response.headers["X-Request-ID"] = request_id
        log.info(
            "request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            duration_ms=round((perf_counter() - start) * 1000, 3),
            client=request.client.host if request.client else None,
        )
        return response


def _peer_app(
    settings: ObservabilitySettings,
    *,
    title: str,
    routers: Sequence[APIRouter],
    lifespan: Lifespan,
) -> FastAPI:
    """The usual wiring: instrumentator, logging middleware, FastAPIInstrumentor."""
    _configure_structlog()
    app = FastAPI(title=title, lifespan=lifespan, telemetry=NATIVE_TELEMETRY_OFF)
    app.state.settings = settings
    install_error_handlers(app)
    for router in (health.router, *routers):
        app.include_router(router)
    # Reads PROMETHEUS_MULTIPROC_DIR itself: multiprocess metrics, merged per scrape.
    Instrumentator().instrument(app).expose(app, include_in_schema=False)
    _add_logging_middleware(app, settings.service_name)
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=settings.tracing_excluded_urls, exclude_spans=["receive", "send"]
    )
    return app


def _business_metrics(settings: ObservabilitySettings) -> Metrics:
    """The services' own counters (message lookups, payload bytes): the same work as ours."""
    return Metrics(
        namespace=settings.metrics_namespace,
        service=settings.service_name,
        version=settings.service_version,
        buckets=settings.metrics_buckets,
    )


class SessionDatabase:
    """The usual way into the database: an ``AsyncSession`` per statement on SQLAlchemy's
    pool, with ``pool_pre_ping`` as SQLAlchemy's docs advise against stale connections.
    It runs the same Core statements as api-svc's ``Database`` (api_svc.statements), with the
    same pool size, timeouts and server settings."""

    def __init__(self, settings: ApiSettings) -> None:
        self.engine = create_async_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
            pool_pre_ping=True,
            isolation_level="AUTOCOMMIT",
            connect_args={
                "connect_timeout": settings.db_connect_timeout_seconds,
                "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
                "application_name": f"{settings.service_name}-peer",
            },
        )

    async def fetch(self, statement: Statement, params: dict[str, Any]) -> list[Any]:
        if statement.query is None:
            raise ValueError(f"no Core statement to run: {statement.sql}")
        async with AsyncSession(self.engine) as session:
            return list((await session.execute(statement.query, params)).tuples())

    async def ping(self) -> None:
        async with AsyncSession(self.engine) as session:
            await session.execute(text("SELECT 1"))


def create_api_app() -> FastAPI:
    settings = ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        provider = _start_tracing(settings)
        database = SessionDatabase(settings)
        SQLAlchemyInstrumentor().instrument(engine=database.engine.sync_engine)
        app.state.database = database
        try:
            yield
        finally:
            await database.engine.dispose()
            provider.shutdown()

    app = _peer_app(
        settings, title="api-svc (peer)", routers=[ready.router, messages.router], lifespan=lifespan
    )
    app.state.message_metrics = MessageMetrics(_business_metrics(settings))
    install_database_error_handlers(app)
    # SQLAlchemy wraps the driver's errors in its own: the same 503 envelope for those.
    for error in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(error, database_unavailable)
    return app


def create_processor_app() -> FastAPI:
    settings = ProcessorSettings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        provider = _start_tracing(settings)
        try:
            yield
        finally:
            provider.shutdown()

    app = _peer_app(
        settings, title="processor-svc (peer)", routers=[process.router], lifespan=lifespan
    )
    app.state.processor_metrics = ProcessorMetrics(_business_metrics(settings))
    return app

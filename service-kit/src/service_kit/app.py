"""Build a service's FastAPI app with all of its observability in place."""

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from starlette.responses import Response

from service_kit import health
from service_kit.docs import install_swagger_ui
from service_kit.errors import (
    INTERNAL_ERROR_RESPONSE,
    VALIDATION_ERROR_RESPONSE,
    install_error_handlers,
)
from service_kit.logs import configure_logging, get_logger
from service_kit.metrics import METRICS_CONTENT_TYPE, Metrics
from service_kit.middleware import ObservabilityMiddleware
from service_kit.settings import ObservabilitySettings
from service_kit.tracing import server_tracer, start_tracing

NATIVE_TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def takes_input(router: APIRouter) -> bool:
    """Whether any of the router's routes has parameters or a body, i.e. can answer 422."""
    return any(
        isinstance(route, APIRoute) and bool(get_flat_params(route.dependant) or route.body_field)
        for route in router.routes
    )


def create_service_app(
    settings: ObservabilitySettings,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    lifespan: Lifespan | None = None,
    setup: Callable[[FastAPI, Metrics], None] | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """The app with ``/health``, error envelope, middleware, ``/metrics`` and tracing.

    ``setup`` runs once with the app and its metrics (to register the service's own metrics and
    exception handlers); ``lifespan`` runs inside the worker, after tracing started.
    """
    configure_logging(settings.service_name, settings.log_level)
    log = get_logger("app")

    @asynccontextmanager
    async def service_lifespan(app: FastAPI) -> AsyncIterator[None]:
        provider = start_tracing(settings) if settings.tracing_enabled else None
        log.info("startup", version=settings.service_version)
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            log.info("shutdown")
            if provider is not None:
                provider.shutdown()

    app = FastAPI(
        title=title,
        description=description,
        version=settings.service_version,
        # FastAPI's Swagger page needs a CDN and an inline script; ours (service_kit.docs)
        # neither. No OAuth2 redirect page: neither service has an OAuth2 security scheme.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        lifespan=service_lifespan,
        responses=INTERNAL_ERROR_RESPONSE,
        # FastAPI's own OpenTelemetry layer would add a second set of spans and metrics on top
        # of our middleware's: one of each is enough.
        telemetry=NATIVE_TELEMETRY_OFF,
        **fastapi_kwargs,
    )
    metrics = Metrics(
        namespace=settings.metrics_namespace,
        service=settings.service_name,
        version=settings.service_version,
        buckets=settings.metrics_buckets,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    if settings.docs_enabled:
        install_swagger_ui(app)
    app.include_router(health.router)
    for router in routers:
        # The 422 envelope replaces FastAPI's own validation error schema; a router of probes
        # without input (/ready) would only promise a 422 it can never send.
        app.include_router(
            router, responses=VALIDATION_ERROR_RESPONSE if takes_input(router) else None
        )
    if settings.metrics_enabled:
        # Sync on purpose: Starlette runs it in a thread, so merging the workers' files never
        # blocks the event loop.
        @app.get("/metrics", include_in_schema=False, response_class=Response)
        def metrics_endpoint() -> Response:
            return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    if setup is not None:
        setup(app, metrics)
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=metrics if settings.metrics_enabled else None,
        access_log=settings.access_log_enabled,
        tracer=server_tracer(settings) if settings.tracing_enabled else None,
        untraced_paths=settings.tracing_excluded_urls,
        root_path=settings.root_path,
    )
    return app

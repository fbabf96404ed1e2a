"""The one pure ASGI middleware: request id, server span, metrics, access log, last-resort
error envelope.

What to record is decided once, when the app is built; the per-request path does no lookups
that could be done at start-up.
"""

import re
from time import perf_counter

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service_kit.errors import JSON_CONTENT_TYPE, ErrorCode, error_body
from service_kit.logs import get_logger
from service_kit.metrics import UNMATCHED_ROUTE, Metrics, method_label
from service_kit.request_id import HEADER, request_id_from, request_id_var
from service_kit.tracing import end_server_span, start_server_span

_JSON = JSON_CONTENT_TYPE.encode("ascii")


def route_template(scope: Scope) -> str:
    """The matched route's template (``/message/{id}``), or one fixed value for no match.

    Starlette's router stores the matched route in the scope it was given, which is ours.
    """
    route = scope.get("route")
    path: str | None = getattr(route, "path", None)
    return path if path is not None else UNMATCHED_ROUTE


class ObservabilityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics | None,
        access_log: bool,
        tracer: Tracer | None = None,
        untraced_paths: str = "",
        root_path: str = "",
    ) -> None:
        self.app = app
        self.metrics = metrics
        # Taken per app, after its logging is configured: structlog caches a logger's
        # configuration on first use, and a module-level one would keep the first app's
        # (its service name, in a process that builds several apps, like the test suites).
        self.access_log = get_logger("access") if access_log else None
        self.error_log = get_logger("app")
        # One SERVER span per request (service_kit.tracing), None when tracing is off.
        self.tracer = tracer
        # Comma-separated regexes searched in the path (probes and scrapes are noise in traces).
        patterns = [pattern.strip() for pattern in untraced_paths.split(",") if pattern.strip()]
        self.untraced = re.compile("|".join(patterns)) if patterns else None
        # The prefix the gateway strips (/api): routing, the OpenAPI document's server and the
        # Swagger page read it from the scope. FastAPI's own root_path parameter is deprecated,
        # and uvicorn's would also prepend it to scope["path"], i.e. to every logged path.
        self.root_path = root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        if self.root_path:
            scope["root_path"] = self.root_path
        request_id = request_id_from(scope["headers"])
        token = request_id_var.set(request_id)
        request_id_header = (HEADER, request_id.encode("ascii"))
        status = 500
        started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), request_id_header]
            await send(message)

        server_span = None
        if self.tracer is not None and not (self.untraced and self.untraced.search(scope["path"])):
            server_span = start_server_span(self.tracer, scope)

        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight.inc()
        start = perf_counter()
        unhandled = False
        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            status = 500
            unhandled = True
            self._record_unhandled(exc, scope)
            if not started:
                body = error_body(ErrorCode.INTERNAL_ERROR, "Internal server error")
                await send_with_request_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", _JSON),
                            (b"content-length", str(len(body)).encode("ascii")),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            seconds = perf_counter() - start
            route = route_template(scope)
            if metrics is not None:
                metrics.in_flight.dec()
                metrics.observe_request(method_label(scope["method"]), route, status, seconds)
            if self.access_log is not None:
                client = scope.get("client")
                self.access_log.info(
                    "request",
                    method=scope["method"],
                    route=route,
                    path=scope["path"],
                    status=status,
                    duration_ms=round(seconds * 1000, 3),
                    client=client[0] if client else None,
                )
            if server_span is not None:
                end_server_span(server_span, route=route, status=status, unhandled=unhandled)
            request_id_var.reset(token)

    def _record_unhandled(self, exc: Exception, scope: Scope) -> None:
        if self.metrics is not None:
            self.metrics.count_exception(exc)
        span = trace.get_current_span()
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        # The traceback goes to the log (as a dict), never to the client.
        self.error_log.error(
            "unhandled_exception",
            exc_info=exc,
            exception_type=type(exc).__name__,
            method=scope["method"],
            route=route_template(scope),
        )

"""A CLIENT span per SQL statement, from two SQLAlchemy engine events.

Instead of opentelemetry-instrumentation-sqlalchemy, which recomputes the connection's
attributes from the URL and the cursor and parses the statement twice on every execution.
Here every attribute that depends on the engine only is computed once; per statement there
is the span and its text.

The attribute names are the ones Tempo's service graph reads for database nodes
(``db.system``, ``db.name``) and the ones the contrib instrumentation set.
"""

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext

_SPAN = "_otel_sql_span"  # where the span waits on the execution context


def trace_statements(engine: Engine, tracer: trace.Tracer) -> Callable[[], None]:
    """Start tracing ``engine``'s statements; returns the function that stops it."""
    url = engine.url
    database = url.database or ""
    static: dict[str, str | int] = {"db.system": "postgresql", "db.name": database}
    if url.host:
        static["net.peer.name"] = url.host
    if url.port:
        static["net.peer.port"] = url.port
    if url.username:
        static["db.user"] = url.username

    def before(
        _conn: Connection, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        operation = statement.split(None, 1)[0] if statement else "SQL"
        span = tracer.start_span(
            f"{operation} {database}",
            kind=SpanKind.CLIENT,
            attributes={**static, "db.statement": statement, "db.operation": operation},
        )
        setattr(context, _SPAN, span)

    def after(
        _conn: Connection, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        span = getattr(context, _SPAN, None)
        if span is not None:
            span.end()

    def failed(error: ExceptionContext) -> None:
        span = getattr(error.execution_context, _SPAN, None)
        if span is not None:
            span.record_exception(error.original_exception)
            span.set_status(Status(StatusCode.ERROR, type(error.original_exception).__name__))
            span.end()

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", before),
        ("after_cursor_execute", after),
        ("handle_error", failed),
    ]
    for name, listener in listeners:
        event.listen(engine, name, listener)

    def stop() -> None:
        for name, listener in listeners:
            event.remove(engine, name, listener)

    return stop

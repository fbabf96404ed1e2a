"""api-svc's traces: the server span of a request, with its SQL statement as a child span."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api_svc.statements import MESSAGE_BY_ID
from testkit import recorded_spans

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def spans(client: TestClient) -> Iterator[InMemorySpanExporter]:  # noqa: ARG001 - started app
    with recorded_spans() as exporter:
        yield exporter


def test_the_search_trace_shows_the_sql_statement(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    response = client.get(
        "/message/search",
        params={"q": "zulu"},
        headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"},
    )
    assert response.status_code == 200
    finished = [
        s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == TRACE_ID
    ]
    server = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    sql = [
        s
        for s in finished
        if s.kind == trace.SpanKind.CLIENT and "db.statement" in (s.attributes or {})
    ]
    assert len(server) == 1
    assert server[0].name == "GET /message/search"
    assert any("ILIKE" in str(s.attributes["db.statement"]) for s in sql)  # type: ignore[index]
    assert all(
        s.parent is not None and s.parent.trace_id == server[0].context.trace_id for s in sql
    )


def test_a_read_by_id_is_a_server_span_with_its_statement_as_the_child(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    response = client.get("/message/1")
    assert response.status_code == 200
    [server] = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    [sql] = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
    assert server.name == "GET /message/{id}"
    assert sql.attributes is not None
    assert sql.attributes["db.statement"] == MESSAGE_BY_ID.sql
    assert sql.parent is not None
    assert sql.parent.span_id == server.context.span_id


def test_probes_are_not_traced(client: TestClient, spans: InMemorySpanExporter) -> None:
    client.get("/health")
    client.get("/ready")
    assert not spans.get_finished_spans(), "no server span, and readiness's query has none"

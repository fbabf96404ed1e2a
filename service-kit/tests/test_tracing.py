"""The server span the middleware makes for each request."""

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from testkit import recorded_spans

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@pytest.fixture
def spans(client: TestClient) -> Iterator[InMemorySpanExporter]:  # noqa: ARG001 - started app
    with recorded_spans() as exporter:
        yield exporter


def _server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]


def test_one_server_span_named_by_the_route_template_child_of_the_traceparent(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    response = client.get("/items/42", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert response.status_code == 200
    [span] = _server_spans(spans)
    assert span.name == "GET /items/{item_id}"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote
    assert span.attributes == {
        "http.request.method": "GET",
        "url.path": "/items/42",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "client.address": "testclient",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
    }
    assert span.status.status_code == trace.StatusCode.UNSET


def test_without_a_traceparent_each_request_starts_a_trace(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    client.get("/items/1")
    client.get("/items/2")
    first, second = _server_spans(spans)
    assert first.parent is None
    assert second.parent is None
    assert first.context.trace_id != second.context.trace_id


def test_a_client_error_is_not_a_span_error_and_unmatched_paths_keep_the_method_name(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    client.get("/items/not-a-number")
    client.get("/no/such/path/123")
    invalid, unmatched = _server_spans(spans)
    assert invalid.attributes is not None
    assert unmatched.attributes is not None
    assert invalid.attributes["http.response.status_code"] == 422
    assert invalid.status.status_code == trace.StatusCode.UNSET
    # No route: the name stays bounded (never the path) and there is no http.route.
    assert unmatched.name == "GET"
    assert "http.route" not in unmatched.attributes
    assert unmatched.attributes["http.response.status_code"] == 404


def test_an_unhandled_exception_marks_the_span_with_its_type(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    assert client.get("/boom").status_code == 500
    [span] = _server_spans(spans)
    assert span.name == "GET /boom"
    assert span.status.status_code == trace.StatusCode.ERROR
    assert span.status.description == "BoomError"
    assert [event.name for event in span.events] == ["exception"]


def test_an_unsampled_parent_is_honoured(client: TestClient, spans: InMemorySpanExporter) -> None:
    response = client.get("/items/7", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"})
    assert response.status_code == 200
    assert not _server_spans(spans)


def test_probes_and_scrapes_are_not_traced(client: TestClient, spans: InMemorySpanExporter) -> None:
    client.get("/health")
    client.get("/metrics")
    client.get("/items/3")
    assert [s.name for s in _server_spans(spans)] == ["GET /items/{item_id}"]


def test_tracing_disabled_makes_no_span(
    client: TestClient,  # noqa: ARG001 - a traced app installed the provider
    make_client: Callable[..., TestClient],
) -> None:
    untraced = make_client(tracing_enabled=False)
    with recorded_spans() as exporter:
        assert untraced.get("/items/5").status_code == 200
        assert not exporter.get_finished_spans()

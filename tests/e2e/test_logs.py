"""Logs on the native twin: every line JSON; gateway and service lines share the request id."""

import uuid
from typing import Any

import httpx
import pytest

from stackctl.native import NativeStack
from testkit import json_lines, wait_for


@pytest.mark.parametrize(
    ("method", "path", "service"),
    [("GET", "/message/3", "api-svc"), ("POST", "/process", "processor-svc")],
)
def test_one_request_id_across_gateway_and_service(
    stack: NativeStack, gateway: httpx.Client, method: str, path: str, service: str
) -> None:
    request_id = f"logs-{uuid.uuid4().hex}"
    trace_id = uuid.uuid4().hex
    response = gateway.request(
        method,
        path,
        headers={"X-Request-ID": request_id, "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
        json={"data": "log me not"} if method == "POST" else None,
    )
    assert response.status_code == 200

    def lines_of(name: str) -> list[dict[str, Any]]:
        lines = json_lines((stack.state.logs / f"{name}.log").read_text())
        return [line for line in lines if line.get("request_id") == request_id]

    # nginx writes its access line after the response has left, so a fast client can read
    # the file first: wait for the line (a busy fresh-machine run did read too early).
    [edge] = wait_for(lambda: lines_of("gateway"), timeout=5, interval=0.05)
    [access] = wait_for(lambda: lines_of(service), timeout=5, interval=0.05)
    assert edge["service"] == "gateway"
    assert edge["status"] == 200
    assert edge["trace_id"] == trace_id
    assert access["service"] == service
    assert access["trace_id"] == trace_id
    assert "log me not" not in str(access)


@pytest.mark.parametrize("name", ["gateway", "api-svc", "processor-svc", "alert-webhook"])
def test_every_line_is_json(stack: NativeStack, gateway: httpx.Client, name: str) -> None:
    gateway.get("/health")
    lines = json_lines((stack.state.logs / f"{name}.log").read_text())
    assert lines or name == "alert-webhook"
    for line in lines:
        assert {"timestamp", "level", "service", "event"} <= line.keys() or (
            name == "gateway" and {"time", "level", "service", "event"} <= line.keys()
        )

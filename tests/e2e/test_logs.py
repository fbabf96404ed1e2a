"""Logs on the native twin: every line JSON; gateway and service lines share the request id."""

import uuid

import httpx
import pytest

from stackctl.native import NativeStack
from stackctl.testing import json_lines


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
    gateway_lines = json_lines((stack.state.logs / "gateway.log").read_text())
    service_lines = json_lines((stack.state.logs / f"{service}.log").read_text())
    [edge] = [line for line in gateway_lines if line.get("request_id") == request_id]
    [access] = [line for line in service_lines if line.get("request_id") == request_id]
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

"""Every public route through the gateway, the envelopes, the request id."""

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from stackctl.native import NativeStack
from testkit import pipelined_get

ENVELOPE_KEYS = {"code", "message", "request_id"}


def _envelope(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, str] = response.json()["error"]
    assert error.keys() >= ENVELOPE_KEYS
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def test_public_routes(gateway: httpx.Client) -> None:
    assert gateway.get("/health").json() == {"status": "healthy"}
    assert gateway.get("/message/1").json()["id"] == 1
    search = gateway.get("/message/search", params={"q": "trigram"}).json()
    assert search["results"][0]["id"] == 6
    processed = gateway.post("/process", json={"data": "through the gateway"})
    assert processed.status_code == 200
    assert processed.json()["echo"] == "through the gateway"


@pytest.mark.parametrize(
    ("prefix", "title"), [("/api", "api-svc"), ("/processor", "processor-svc")]
)
def test_swagger_pages_and_openapi_documents(
    gateway: httpx.Client, prefix: str, title: str
) -> None:
    page = gateway.get(f"{prefix}/docs")
    assert page.status_code == 200
    assert "swagger-ui" in page.text
    # Served by the stack alone: the page names no other host, and its CSP allows none.
    assert not re.search(r"https?://", page.text)
    assert "script-src 'self';" in page.headers["content-security-policy"]
    for name, content_type, compressed in (
        ("swagger-ui-bundle.js", "text/javascript", True),
        ("swagger-ui.css", "text/css", True),
        ("swagger-ui-init.js", "text/javascript", False),  # under gzip_min_length
        ("favicon-32x32.png", "image/png", False),
    ):
        asset = gateway.get(f"{prefix}/docs/{name}", headers={"Accept-Encoding": "gzip"})
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].split(";")[0] == content_type, name
        assert (asset.headers.get("content-encoding") == "gzip") == compressed, name
    spec = gateway.get(f"{prefix}/openapi.json").json()
    assert spec["info"]["title"] == title
    # "Try it out" goes through the gateway: the document names the prefix as its server.
    assert spec["servers"] == [{"url": prefix}]
    assert gateway.get(f"{prefix}/health").json() == {"status": "healthy"}


@pytest.mark.parametrize("path", ["/metrics", "/api/metrics", "/processor/metrics"])
def test_metrics_are_not_reachable_through_the_gateway(gateway: httpx.Client, path: str) -> None:
    response = gateway.get(path)
    _envelope(response, 404, "NOT_FOUND")
    assert "app_http_requests_total" not in response.text


def test_error_envelopes(gateway: httpx.Client) -> None:
    _envelope(gateway.get(f"/{uuid.uuid4().hex}"), 404, "NOT_FOUND")
    _envelope(gateway.get("/message/999999999"), 404, "NOT_FOUND")
    _envelope(gateway.get("/message/0"), 422, "VALIDATION_ERROR")
    _envelope(gateway.delete("/message/1"), 405, "METHOD_NOT_ALLOWED")
    _envelope(gateway.get("/process"), 405, "METHOD_NOT_ALLOWED")
    _envelope(gateway.post("/process", content=b"x" * 70_000), 413, "PAYLOAD_TOO_LARGE")
    _envelope(
        gateway.post("/process", content=b"data", headers={"content-type": "text/plain"}),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )


def test_the_rate_limit_answers_429_envelopes(stack: NativeStack, gateway: httpx.Client) -> None:
    # /processor/metrics shares /process's bucket (1000 r/s, burst 2000) and nginx answers it
    # alone, so five pipelined connections exceed the limit without loading processor-svc.
    with ThreadPoolExecutor(5) as pool:
        batches = pool.map(
            lambda _: pipelined_get(stack.port("gateway", 8080), "/processor/metrics", 1000),
            range(5),
        )
        responses = [response for batch in batches for response in batch]
    statuses = {response.status for response in responses}
    assert statuses == {404, 429}, statuses
    limited = next(response for response in responses if response.status == 429)
    error = json.loads(limited.body)["error"]
    assert error["code"] == "RATE_LIMITED"
    assert error["request_id"] == limited.headers["x-request-id"]
    time.sleep(3)  # let the bucket drain for the tests that follow
    assert gateway.post("/process", json={"data": "after the burst"}).status_code == 200


def test_request_id_in_and_out(gateway: httpx.Client) -> None:
    sent = f"e2e-{uuid.uuid4().hex}"
    response = gateway.get("/message/2", headers={"X-Request-ID": sent})
    assert response.headers["x-request-id"] == sent
    generated = gateway.get("/message/2").headers["x-request-id"]
    assert generated != sent
    assert len(generated) == 32
    unsafe = gateway.get("/message/2", headers={"X-Request-ID": "bad id with spaces"})
    assert unsafe.headers["x-request-id"] != "bad id with spaces"

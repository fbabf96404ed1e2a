import pytest
from fastapi.testclient import TestClient

from testkit import json_lines


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "NOT_FOUND"),
        ("POST", "/health", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/items/abc", 422, "VALIDATION_ERROR"),
        ("GET", "/boom", 500, "INTERNAL_ERROR"),
    ],
)
def test_every_error_uses_the_envelope(
    client: TestClient, method: str, path: str, status: int, code: str
) -> None:
    response = client.request(method, path, headers={"X-Request-ID": "rid-1"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == "rid-1"


def test_validation_details_never_echo_the_input(client: TestClient) -> None:
    response = client.get("/items/SECRET-VALUE")
    assert response.status_code == 422
    assert "SECRET-VALUE" not in response.text
    assert response.json()["error"]["details"][0]["loc"] == ["path", "item_id"]


def test_an_unhandled_exception_is_a_500_envelope_logged_with_its_traceback(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    response = client.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    lines = json_lines(capsys.readouterr().out)
    [error_line] = [line for line in lines if line["event"] == "unhandled_exception"]
    assert error_line["request_id"] == "boom-1"
    assert error_line["exception_type"] == "BoomError"
    frames = error_line["exception"][0]
    assert frames["exc_type"] == "BoomError"
    assert frames["frames"]
    # The service keeps serving after it.
    assert client.get("/health").status_code == 200


def test_unhandled_exceptions_are_counted_by_type(client: TestClient) -> None:
    client.get("/boom")
    client.get("/boom")
    metrics = client.get("/metrics").text
    assert 'app_exceptions_total{service="test-svc",type="BoomError"} 2.0' in metrics
    assert (
        'app_http_requests_total{method="GET",route="/boom",service="test-svc",status="500"} 2.0'
        in metrics
    )

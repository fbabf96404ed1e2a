import pytest
from fastapi.testclient import TestClient

from service_kit.request_id import request_id_from


def test_a_sane_client_request_id_is_kept(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "req-123.abc:9"})
    assert response.headers["x-request-id"] == "req-123.abc:9"


@pytest.mark.parametrize(
    "header",
    ["", "a" * 129, "with space", "new\nline", '{"json":1}', "ünïcode"],
)
def test_an_unsafe_request_id_is_replaced(header: str) -> None:
    generated = request_id_from([(b"x-request-id", header.encode())])
    assert generated != header
    assert len(generated) == 32
    int(generated, 16)


def test_a_request_id_is_generated_and_returned_on_errors_too(client: TestClient) -> None:
    response = client.get("/does-not-exist")
    assert response.status_code == 404
    rid = response.headers["x-request-id"]
    assert len(rid) == 32
    assert response.json()["error"]["request_id"] == rid


def test_each_request_gets_its_own_id(client: TestClient) -> None:
    ids = {client.get("/health").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5

import pytest
from fastapi.testclient import TestClient

from api_svc.db_setup import READABLE_MESSAGES
from testkit import metric_value


@pytest.mark.parametrize("message_id", range(1, 11))
def test_the_readable_messages_are_served(client: TestClient, message_id: int) -> None:
    response = client.get(f"/message/{message_id}")
    assert response.status_code == 200
    assert response.json() == {"id": message_id, "text": READABLE_MESSAGES[message_id - 1]}


def test_an_absent_message_is_a_404_envelope(client: TestClient) -> None:
    response = client.get("/message/2147483647", headers={"X-Request-ID": "absent-1"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "NOT_FOUND",
            "message": "Message 2147483647 not found",
            "request_id": "absent-1",
        }
    }


@pytest.mark.parametrize(
    "raw_id",
    ["0", "-1", "2147483648", str(2**63), str(2**64), "abc", "1.5", "1;DROP TABLE messages",
     "1%20OR%201=1", "%00", "\uff11"],  # the last one: a full-width digit one
)  # fmt: skip
def test_a_bad_id_is_a_422_envelope_never_a_500(client: TestClient, raw_id: str) -> None:
    response = client.get(f"/message/{raw_id}")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"][0]["loc"] == ["path", "id"]


def test_lookups_are_counted_found_and_not_found(client: TestClient) -> None:
    before = client.get("/metrics").text
    client.get("/message/1")
    client.get("/message/999999999")
    after = client.get("/metrics").text
    for result in ("found", "not_found"):
        delta = metric_value(after, "app_message_lookups_total", result=result) - metric_value(
            before, "app_message_lookups_total", result=result
        )
        assert delta == 1


def test_search_finds_substrings_case_insensitively(client: TestClient) -> None:
    response = client.get("/message/search", params={"q": "TRIGRAM INDEX", "limit": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == "TRIGRAM INDEX"
    assert body["count"] == 1
    assert body["results"] == [{"id": 6, "text": READABLE_MESSAGES[5]}]


def test_search_respects_the_limit_over_the_bulk_rows(client: TestClient) -> None:
    body = client.get("/message/search", params={"q": "zulu", "limit": 50}).json()
    assert body["count"] == 50
    assert all("zulu" in row["text"].lower() for row in body["results"])


@pytest.mark.parametrize("q", ["%", "_", "\\", "%%%", "'; DROP TABLE messages; --"])
def test_search_treats_wildcards_and_quotes_as_plain_text(client: TestClient, q: str) -> None:
    response = client.get("/message/search", params={"q": q})
    assert response.status_code == 200
    assert response.json()["count"] == 0


@pytest.mark.parametrize(
    "params",
    [{}, {"q": ""}, {"q": "x" * 65}, {"q": "a", "limit": 0}, {"q": "a", "limit": 51},
     {"q": "a", "limit": "ten"}, {"q": "\x00"}, {"q": "ab\x00cd"}],
)  # fmt: skip
def test_bad_search_parameters_are_422_envelopes(
    client: TestClient, params: dict[str, object]
) -> None:
    response = client.get("/message/search", params=params)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_search_duration_is_measured(client: TestClient) -> None:
    client.get("/message/search", params={"q": "alpha"})
    text = client.get("/metrics").text
    assert metric_value(text, "app_message_search_duration_seconds_count", service="api-svc") >= 1


def test_openapi_documents_the_routes_behind_the_prefix(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/health", "/ready", "/message/search", "/message/{id}"} <= set(spec["paths"])
    assert "/metrics" not in spec["paths"]
    assert client.get("/docs").status_code == 200

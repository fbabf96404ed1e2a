from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from service_kit.logs import iso_utc_timestamp
from testkit import json_lines

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_one_json_access_line_per_request(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    client.get("/items/7?x=1", headers={"X-Request-ID": "rid-7", "traceparent": TRACEPARENT})
    lines = json_lines(capsys.readouterr().out)
    access = [line for line in lines if line["event"] == "request"]
    assert len(access) == 1
    line = access[0]
    assert line["method"] == "GET"
    assert line["route"] == "/items/{item_id}"
    assert line["path"] == "/items/7"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    assert line["request_id"] == "rid-7"
    assert line["trace_id"] == TRACE_ID
    assert len(line["span_id"]) == 16
    assert line["client"]
    for key in ("timestamp", "level", "service", "event", "logger"):
        assert key in line
    assert line["service"] == "test-svc"


def test_log_injection_stays_inside_one_line(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    client.get('/x%0A{"level":"error","event":"forged"}')
    lines = json_lines(capsys.readouterr().out)
    assert not [line for line in lines if line.get("event") == "forged"]


def test_access_log_can_be_switched_off(
    make_client: Callable[..., TestClient], capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(access_log_enabled=False)
    capsys.readouterr()
    client.get("/health")
    assert not [line for line in json_lines(capsys.readouterr().out) if line["event"] == "request"]


def test_a_traceparent_is_continued_and_untraced_routes_stay_cheap(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    client.get("/health", headers={"traceparent": TRACEPARENT})
    [line] = [x for x in json_lines(capsys.readouterr().out) if x["event"] == "request"]
    # Probes are excluded from tracing: no span, so no trace id on their access line.
    assert "trace_id" not in line


def test_tracing_can_be_switched_off(
    make_client: Callable[..., TestClient], capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(tracing_enabled=False)
    capsys.readouterr()
    client.get("/items/1", headers={"traceparent": TRACEPARENT})
    [line] = [x for x in json_lines(capsys.readouterr().out) if x["event"] == "request"]
    assert "trace_id" not in line


@pytest.mark.parametrize(
    "time_ns",
    [
        0,
        1_764_693_142_340_886_123,
        1_764_693_142_000_000_999,
        1_764_693_142_000_001_000,
        951_782_400_999_999_999,
    ],
)
def test_the_timestamp_is_what_datetime_writes(time_ns: int) -> None:
    expected = datetime.fromtimestamp(time_ns // 10**9, UTC).replace(
        microsecond=time_ns // 1000 % 1_000_000
    )
    assert iso_utc_timestamp(time_ns) == expected.isoformat().replace("+00:00", "Z")
    assert iso_utc_timestamp(time_ns) == iso_utc_timestamp(time_ns)  # from the cached prefix

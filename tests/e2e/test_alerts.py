"""The alert path on the native twin: rule -> Prometheus -> Alertmanager -> webhook receiver."""

import asyncio
import json
import time
from typing import Any

import httpx

from stackctl.native import NativeStack
from stackctl.testing import drive, json_lines, query, until, wait_for


def _notifications(stack: NativeStack) -> list[dict[str, Any]]:
    lines = json_lines((stack.state.logs / "alert-webhook.log").read_text())
    return [line for line in lines if line["event"] == "alert_notification"]


def _notified(stack: NativeStack, alertname: str, **labels: str) -> dict[str, Any] | None:
    for notification in _notifications(stack):
        for alert in notification["alerts"]:
            alert_labels = alert["labels"]
            if alert_labels.get("alertname") == alertname and all(
                alert_labels.get(k) == v for k, v in labels.items()
            ):
                found: dict[str, Any] = alert
                return found
    return None


def _firing(prometheus: httpx.Client, alertname: str) -> list[dict[str, Any]]:
    alerts = prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def test_the_slow_search_fires_high_latency_up_to_the_webhook(
    stack: NativeStack, prometheus: httpx.Client
) -> None:
    """Drive GET /message/search (a full scan) until p99 > 1 s holds for the rule's 1 minute."""
    base = stack.gateway_url
    words = ["zulu", "tango", "alpha", "metric", "replica"]
    plan = [
        ("GET", "/message/search", {"params": {"q": f"{words[n % 5]} {words[(n + 2) % 5]}"}})
        for n in range(100_000)
    ]
    out_of_time = until(time.monotonic() + 240)
    notified = asyncio.Event()

    async def load_until_notified() -> list[int]:
        stop = lambda: notified.is_set() or out_of_time()  # noqa: E731
        task = asyncio.create_task(drive(base, plan, concurrency=24, stop=stop))
        while not task.done():
            if _notified(stack, "HighLatency", route="/message/search") is not None:
                notified.set()
            await asyncio.sleep(2)
        return await task

    statuses = asyncio.run(load_until_notified())
    alert = _notified(stack, "HighLatency", route="/message/search")
    assert alert is not None, f"no HighLatency notification; statuses: {set(statuses)}"
    assert alert["labels"]["service"] == "api-svc"
    assert alert["labels"]["severity"]
    assert alert["annotations"]["runbook_url"].endswith("#runbook-highlatency")
    assert _firing(prometheus, "HighLatency")
    p99 = query(
        prometheus,
        "histogram_quantile(0.99, sum by (le) (rate(app_http_request_duration_seconds_bucket"
        '{route="/message/search"}[1m])))',
    )
    assert float(p99[0]["value"][1]) > 1.0


def test_postgres_outage_is_503_fires_postgres_down_and_recovers(
    stack: NativeStack, gateway: httpx.Client, prometheus: httpx.Client
) -> None:
    assert gateway.get("/message/1").status_code == 200
    stack.stop_postgres()
    try:
        for path in ("/message/1", "/message/search?q=zulu", "/api/ready"):
            response = gateway.get(path)
            assert response.status_code == 503, path
            assert response.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
        assert gateway.get("/health").status_code == 200
        wait_for(lambda: _notified(stack, "PostgresDown"), timeout=180, interval=3)
        assert _firing(prometheus, "PostgresDown")
    finally:
        stack.start_postgres()
    # Back within 5 s, no service restarted.
    api_pid = stack.pid("api-svc")
    start = time.monotonic()
    wait_for(lambda: gateway.get("/message/1").status_code == 200, timeout=5, interval=0.2)
    assert time.monotonic() - start < 5
    assert gateway.get("/api/ready").json() == {"status": "ready"}
    assert stack.pid("api-svc") == api_pid
    assert json.dumps(_notified(stack, "PostgresDown"))

"""The alert path on the native twin: rule -> Prometheus -> Alertmanager -> webhook receiver."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from stackctl.native import NativeStack
from testkit import drive, json_lines, query, until, wait_for


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


# HighPostgresTPS on the twin: the threshold lowered through its documented setting (the
# environment of render-config.sh, here a restart of Prometheus with POSTGRES_TPS_THRESHOLD,
# as `docker compose up -d prometheus` after editing .env), then a steady load of database
# reads. The rule's `for: 10m` sets the length: about 11 minutes.
LOWERED_TPS_THRESHOLD = 5
# /message/{id} costs about two transactions (api-svc's pool ping and the query, both in
# autocommit): ~60 TPS, far above 5 and well under the default 100, so only the lowered
# threshold can fire it, while the idle twin (postgres-exporter's queries) stays near 1.
LOAD_REQUESTS_PER_SECOND = 30
TPS_ALERT_DEADLINE_S = 15 * 60
TPS = (
    'sum by (datname) (rate(pg_stat_database_xact_commit{datname="messages"}[5m])'
    ' + rate(pg_stat_database_xact_rollback{datname="messages"}[5m]))'
)


def _restart_prometheus(stack: NativeStack, prometheus: httpx.Client, threshold: str) -> None:
    stack.stop("prometheus")
    stack.respawn("prometheus", env={"POSTGRES_TPS_THRESHOLD": threshold})
    expected = float(threshold or 100)

    def in_force() -> bool:
        found = query(prometheus, "postgres:transactions_per_second:threshold")
        return bool(found) and float(found[0]["value"][1]) == expected

    wait_for(in_force, timeout=60, interval=1)


async def _paced_reads(base: str, rate: float, stop: Callable[[], bool], limit: int) -> list[int]:
    """GET /message/{id} at ``rate`` per second (not as fast as possible: the load must stay
    under the default threshold) until ``stop()`` or ``limit`` requests."""
    statuses: list[int] = []
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:

        async def read(n: int) -> None:
            try:
                statuses.append((await client.get(f"/message/{n % 10 + 1}")).status_code)
            except httpx.TransportError:
                statuses.append(0)

        tasks: set[asyncio.Task[None]] = set()
        start = loop.time()
        for n in range(limit):
            if stop():
                break
            task = asyncio.create_task(read(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, start + (n + 1) / rate - loop.time()))
        await asyncio.gather(*tasks)
    return statuses


@pytest.mark.long  # the rule's for: 10m: make soak runs it, make test does not
@pytest.mark.timeout(TPS_ALERT_DEADLINE_S + 180)  # the two restarts of Prometheus on top
def test_sustained_database_load_fires_high_postgres_tps_up_to_the_webhook(
    stack: NativeStack, prometheus: httpx.Client
) -> None:
    assert not _firing(prometheus, "HighPostgresTPS")
    assert _notified(stack, "HighPostgresTPS") is None
    lowered_at = time.monotonic()
    _restart_prometheus(stack, prometheus, str(LOWERED_TPS_THRESHOLD))
    try:
        out_of_time = until(time.monotonic() + TPS_ALERT_DEADLINE_S)
        notified = asyncio.Event()

        async def load_until_notified() -> list[int]:
            stop = lambda: notified.is_set() or out_of_time()  # noqa: E731
            task = asyncio.create_task(
                _paced_reads(
                    stack.gateway_url,
                    LOAD_REQUESTS_PER_SECOND,
                    stop,
                    limit=LOAD_REQUESTS_PER_SECOND * TPS_ALERT_DEADLINE_S,
                )
            )
            while not task.done():
                if _notified(stack, "HighPostgresTPS") is not None:
                    notified.set()
                await asyncio.sleep(2)
            return await task

        statuses = asyncio.run(load_until_notified())
        took = time.monotonic() - lowered_at
        alert = _notified(stack, "HighPostgresTPS")
        assert alert is not None, f"no HighPostgresTPS notification in {took:.0f} s"
        assert set(statuses) == {200}, set(statuses)
        # `for: 10m` held it back: nothing could be pending before the threshold was lowered.
        assert took >= 600, took
        assert alert["labels"] == {
            "alertname": "HighPostgresTPS",
            "datname": "messages",
            "service": "postgres",
            "severity": "warning",
        }
        assert alert["annotations"]["runbook_url"].endswith("#runbook-highpostgrestps")
        assert (
            f"above the threshold of {LOWERED_TPS_THRESHOLD} "
            in (alert["annotations"]["description"])
        )
        # The load was below the default threshold: the setting is what made it fire.
        (firing,) = _firing(prometheus, "HighPostgresTPS")
        assert LOWERED_TPS_THRESHOLD < float(firing["value"]) < 100
        (sample,) = query(prometheus, TPS)
        assert LOWERED_TPS_THRESHOLD < float(sample["value"][1]) < 100
    finally:
        _restart_prometheus(stack, prometheus, "")


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

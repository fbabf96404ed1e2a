"""processor-svc under real gunicorn with 2 workers: metrics, logs, graceful shutdown."""

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stackctl.ports import free_port
from stackctl.processes import ServiceProcess, start_service
from stackctl.testing import json_lines, metric_value, series_count

pytestmark = pytest.mark.integration

APP = "processor_svc.main:app"


def _start(tmp: Path, delay: float) -> ServiceProcess:
    metrics_dir = tmp / "metrics"
    metrics_dir.mkdir()
    return start_service(
        APP,
        name="processor-svc",
        port=free_port(),
        log_path=tmp / "processor.log",
        env={"PROCESS_DELAY_SECONDS": str(delay), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        workers=2,
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = _start(tmp_path_factory.mktemp("processor"), delay=0.02)
    yield service
    service.stop()


async def _post_many(base: str, count: int, concurrency: int = 20) -> list[int]:
    # A fresh connection per request lets the kernel spread them over both workers.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(n: int) -> int:
            async with semaphore:
                response = await client.post("/process", json={"data": f"item-{n}"})
                return response.status_code

        return list(await asyncio.gather(*(one(n) for n in range(count))))


def _scrape(service: ServiceProcess) -> str:
    return httpx.get(service.url("/metrics"), timeout=10).text


def test_counters_and_histogram_sum_both_workers_exactly(service: ServiceProcess) -> None:
    labels = {"service": "processor-svc", "method": "POST", "route": "/process"}
    before = _scrape(service)
    statuses = asyncio.run(_post_many(service.url(), 200))
    assert statuses == [200] * 200
    after = _scrape(service)

    def delta(name: str, **extra: str) -> float:
        return metric_value(after, name, **labels, **extra) - metric_value(
            before, name, **labels, **extra
        )

    assert delta("app_http_requests_total", status="200") == 200
    assert delta("app_http_request_duration_seconds_count") == 200
    assert delta("app_http_request_duration_seconds_bucket", le="+Inf") == 200
    # Both workers wrote samples: the scrape above merged two processes' files.
    pids = set(service.worker_pids())
    assert len(pids) == 2
    files = {p.name for p in (service.log_path.parent / "metrics").iterdir()}
    assert all(f"counter_{pid}.db" in files for pid in pids)


def test_ten_thousand_random_paths_add_no_series(service: ServiceProcess) -> None:
    async def hammer() -> list[int]:
        async with httpx.AsyncClient(base_url=service.url(), timeout=30) as client:
            semaphore = asyncio.Semaphore(50)

            async def one(n: int) -> int:
                async with semaphore:
                    path = f"/{uuid.uuid4().hex}/{n}"
                    return (await client.get(path)).status_code

            return list(await asyncio.gather(*(one(n) for n in range(10_000))))

    httpx.get(service.url("/nothing-here"))
    before = _scrape(service)
    statuses = asyncio.run(hammer())
    assert set(statuses) == {404}
    after = _scrape(service)
    assert series_count(after) == series_count(before)
    assert (
        metric_value(after, "app_http_requests_total", route="unmatched", status="404")
        - metric_value(before, "app_http_requests_total", route="unmatched", status="404")
        == 10_000
    )


def test_every_line_is_json_and_the_access_line_carries_the_trace(
    service: ServiceProcess,
) -> None:
    trace_id = uuid.uuid4().hex
    request_id = f"it-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        service.url("/process"),
        json={"data": "traced"},
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "X-Request-ID": request_id},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    lines = json_lines(service.log_path.read_text())
    # gunicorn's own lines (master and workers) are JSON with the common keys too.
    assert any(line.get("logger") == "gunicorn.error" for line in lines)
    # No control socket: it would be shared by every master on the host.
    assert not any("Control socket" in line["event"] for line in lines)
    for line in lines:
        assert {"timestamp", "level", "service", "event"} <= line.keys(), json.dumps(line)
        assert line["service"] == "processor-svc"
    [access] = [line for line in lines if line.get("request_id") == request_id]
    assert access["event"] == "request"
    assert access["trace_id"] == trace_id
    assert access["route"] == "/process"
    assert "traced" not in json.dumps(access)


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path) -> None:
    service = _start(tmp_path, delay=1.0)

    def in_flight() -> float:
        # The scrape itself is in flight too.
        return metric_value(_scrape(service), "app_http_requests_in_flight") - 1

    async def during_shutdown() -> list[int]:
        task = asyncio.create_task(_post_many(service.url(), 50, concurrency=50))
        # SIGTERM once all 50 are inside the workers (each sleeps 0.5 s there); a fixed
        # sleep is not enough on a busy machine, where some would still be queued.
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(in_flight) < 50:
            assert time.monotonic() < deadline, "the 50 requests never were in flight together"
        service.proc.send_signal(signal.SIGTERM)
        return await task

    try:
        statuses = asyncio.run(during_shutdown())
    finally:
        returncode = service.stop()
    assert statuses == [200] * 50
    assert returncode == 0
    lines = json_lines(service.log_path.read_text())
    assert any("Shutting down" in line["event"] for line in lines)

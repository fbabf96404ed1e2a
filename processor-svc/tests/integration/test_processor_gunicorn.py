"""processor-svc under real gunicorn with 2 workers: metrics, logs, graceful shutdown."""

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from testkit import (
    ServiceProcess,
    free_port,
    json_lines,
    metric_value,
    pipelined_gets,
    series_count,
    start_service,
    wait_for,
)

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
    # The scrape is the sum of both workers' own files (each has one from start-up).
    pids = set(service.worker_pids())
    assert len(pids) == 2
    metrics_dir = service.log_path.parent / "metrics"
    files = {p.name for p in metrics_dir.iterdir()}
    assert all(f"counter_{pid}.db" in files for pid in pids)
    scraped = metric_value(after, "app_http_requests_total", **labels, status="200")
    assert sum(_processed_by(metrics_dir, pid) for pid in pids) == scraped


def test_ten_thousand_random_paths_add_no_series(service: ServiceProcess) -> None:
    # Every series the test may rightly see exists before the count: one unmatched request's,
    # and the scrape route's own (a first scrape is counted only once it has answered).
    httpx.get(service.url("/nothing-here"))
    _scrape(service)
    before = _scrape(service)
    # Pipelined, 1,000 per connection: an HTTP client library spends most of the time here.
    statuses = [
        response.status
        for batch in range(10)
        for response in pipelined_gets(
            service.port, [f"/{uuid.uuid4().hex}/{batch}-{n}" for n in range(1000)]
        )
    ]
    assert len(statuses) == 10_000
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


def _listening_inode(port: int) -> str:
    """The socket inode listening on 127.0.0.1:``port`` (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and local == f"0100007F:{port:04X}":  # LISTEN on 127.0.0.1
            return inode
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _holds_socket(pid: int, inode: str) -> bool:
    target = f"socket:[{inode}]"
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == target:
                return True
        except FileNotFoundError:  # closed while we looked: a connection that just ended
            continue
    return False


def _processed_by(metrics_dir: Path, pid: int) -> float:
    """POST /process 200s one worker has counted, from its own multiprocess file (its
    counter file exists from start-up: the app creates its counters then)."""
    path = metrics_dir / f"counter_{pid}.db"
    if not path.exists():
        return 0
    total = 0.0
    for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
        _metric, sample, labels, _help = json.loads(key)
        served = labels.get("route") == "/process" and labels.get("status") == "200"
        if sample == "app_http_requests_total" and served:
            total += value
    return total


def test_the_master_serves_every_workers_metrics_while_the_workers_are_stuck(
    tmp_path: Path,
) -> None:
    """METRICS_PORT: the gunicorn master answers the scrape, so a worker that cannot get to it
    (here: stopped with SIGSTOP, as a saturated event loop would be) does not delay it."""
    metrics_port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    service = start_service(
        APP,
        name="processor-svc",
        port=free_port(),
        log_path=tmp_path / "processor.log",
        env={
            "PROCESS_DELAY_SECONDS": "0.01",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "METRICS_PORT": str(metrics_port),
        },
        workers=2,
    )
    workers = service.worker_pids()
    master_scrape = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        # Until each worker has served some (the kernel may hand one worker every connection
        # of a batch, on a busy machine often).
        sent, deadline = 0, time.monotonic() + 30
        while not all(_processed_by(metrics_dir, pid) for pid in workers):
            assert time.monotonic() < deadline, "one worker served every request"
            assert asyncio.run(_post_many(service.url(), 50)) == [200] * 50
            sent += 50
        # A client has its response before the middleware's `finally` counts the request done.
        in_flight = "app_http_requests_in_flight"
        wait_for(lambda: metric_value(httpx.get(master_scrape).text, in_flight) == 0, 10, 0.05)
        # Only the master holds the metrics port; the workers closed their inherited copy.
        inode = _listening_inode(metrics_port)
        assert _holds_socket(service.proc.pid, inode)
        assert not [pid for pid in workers if _holds_socket(pid, inode)]
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            response = httpx.get(master_scrape, timeout=10)
            seconds = time.monotonic() - start
            with pytest.raises(httpx.ReadTimeout):  # the workers' own /metrics cannot answer
                httpx.get(service.url("/metrics"), timeout=1)
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        assert response.status_code == 200
        assert seconds < 2
        labels = {
            "service": "processor-svc",
            "method": "POST",
            "route": "/process",
            "status": "200",
        }
        # Samples of both workers, merged; nothing is in flight (the scrape never reached one).
        assert metric_value(response.text, "app_http_requests_total", **labels) == sent
        assert metric_value(response.text, "app_http_requests_in_flight") == 0
    finally:
        service.stop()
    # The master closed it on exit.
    with pytest.raises(httpx.ConnectError):
        httpx.get(master_scrape, timeout=2)


def test_metrics_enabled_false_also_switches_the_master_server_off(tmp_path: Path) -> None:
    metrics_port = free_port()
    service = start_service(
        APP,
        name="processor-svc",
        port=free_port(),
        log_path=tmp_path / "processor.log",
        env={"METRICS_ENABLED": "false", "METRICS_PORT": str(metrics_port)},
        workers=1,
    )
    try:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)
    finally:
        service.stop()


def test_a_second_master_takes_the_metrics_port_when_the_first_one_leaves(
    tmp_path: Path,
) -> None:
    """A same-host rolling restart: the next instance starts while the old one still holds
    METRICS_PORT; it serves its own metrics there as soon as the old one has exited."""
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    instances = []
    for name in ("old", "new"):
        metrics_dir = tmp_path / f"{name}-metrics"
        metrics_dir.mkdir()
        instances.append(
            start_service(
                APP,
                name="processor-svc",
                port=free_port(),
                log_path=tmp_path / f"{name}.log",
                env={
                    "PROCESS_DELAY_SECONDS": "0",
                    "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                    "METRICS_PORT": str(metrics_port),
                },
                workers=1,
            )
        )
    old, new = instances
    labels = {"service": "processor-svc", "method": "POST", "route": "/process", "status": "200"}
    try:
        assert asyncio.run(_post_many(old.url(), 30)) == [200] * 30
        assert asyncio.run(_post_many(new.url(), 5)) == [200] * 5
        # Only the old instance answers the scrape while it runs ...
        for _ in range(5):
            assert (
                metric_value(
                    httpx.get(metrics_url, timeout=5).text, "app_http_requests_total", **labels
                )
                == 30
            )
        assert old.stop() == 0
        # ... then the new one, within its retry interval.
        deadline = time.monotonic() + 5
        while True:
            try:
                text = httpx.get(metrics_url, timeout=5).text
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the new master never took the port"
                time.sleep(0.1)
        assert metric_value(text, "app_http_requests_total", **labels) == 5
        waited = [
            line for line in json_lines(new.log_path.read_text()) if "metrics port" in line["event"]
        ]
        assert [line["level"] for line in waited] == ["warning", "info"]
    finally:
        for instance in instances:
            instance.stop()

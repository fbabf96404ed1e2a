"""Faults under load on the native twin, and a soak.

- PostgreSQL killed (SIGKILL to the postmaster and every backend, like a container kill) while
  api-svc is loaded: no request waits longer than api-svc's configured bound, every failure is
  a 503 DATABASE_UNAVAILABLE envelope, and all is well within 5 s of PostgreSQL's return.
- A gunicorn worker SIGKILLed under load: the master replaces it, only requests that were in
  flight fail (502 envelopes), and no counter goes backwards (scrapes and Prometheus).
- A rolling restart of processor-svc under load: a second gunicorn binds the same port
  (SO_REUSEPORT), the old one gets SIGTERM and drains: zero failed requests.
- The soak: mixed load at a steady rate for ``SOAK_SECONDS`` (a minute in ``make test``, ten
  in ``make soak``): zero 5xx, stable memory per worker, no new multiprocess metric files.
"""

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import statistics
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_svc.config import Settings as ApiSettings
from stackctl import procfs
from stackctl.native import NativeStack
from stackctl.processes import (
    ComponentFailedError,
    ServiceProcess,
    log_tail,
    spawn,
)
from testkit import json_lines, metric_value, query, wait_for

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))


# --------------------------------------------------------------------------- load helpers
@dataclass(frozen=True)
class Outcome:
    path: str
    started: float
    seconds: float
    status: int  # 0: transport error
    code: str | None  # the envelope's error code


class Load:
    """Closed-loop load through the gateway from ``concurrency`` tasks until stopped."""

    def __init__(self, base_url: str, plan: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.base_url = base_url
        self.plan = plan
        self.outcomes: list[Outcome] = []
        self.stopped = asyncio.Event()

    async def run(self, concurrency: int) -> None:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits) as c:
            await asyncio.gather(*(self._worker(c, n) for n in range(concurrency)))

    async def _worker(self, client: httpx.AsyncClient, offset: int) -> None:
        n = offset
        while not self.stopped.is_set():
            method, path, kwargs = self.plan[n % len(self.plan)]
            n += 1
            self.outcomes.append(await _timed(client, method, path, kwargs))


async def _timed(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any]
) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.TransportError:
        return Outcome(path, started, time.monotonic() - started, 0, None)
    seconds = time.monotonic() - started
    code = None
    if response.status_code >= 400:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "NOT_AN_ENVELOPE"
    return Outcome(path, started, seconds, response.status_code, code)


def _requests_total(stack: NativeStack, service: str, port: int) -> float:
    exposition = httpx.get(f"http://127.0.0.1:{stack.port(service, port)}/metrics", timeout=5).text
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "app_http_requests_total"
    )


# --------------------------------------------------------------------------- PostgreSQL
@pytest.mark.timeout(180)
def test_postgres_killed_under_load_answers_503_fast_and_recovers_within_5_s(
    stack: NativeStack,
) -> None:
    settings = ApiSettings()
    # The longest a request may wait for the database, from api-svc's configuration: a turn
    # at the pool (pool timeout), then a new connection (connect timeout), then its statement
    # (statement timeout). Each wait is bounded; in the worst case they add up.
    bound = (
        settings.db_pool_timeout_seconds
        + settings.db_connect_timeout_seconds
        + settings.db_statement_timeout_ms / 1000
    )
    plan: list[tuple[str, str, dict[str, Any]]] = [
        *[("GET", f"/message/{n}", {}) for n in range(1, 11)],
        ("GET", "/api/ready", {}),
        ("GET", "/health", {}),
    ]
    load = Load(stack.gateway_url, plan)
    api_pid = stack.pid("api-svc")
    marks: dict[str, float] = {}

    async def scenario() -> None:
        task = asyncio.create_task(load.run(concurrency=16))
        await asyncio.sleep(3)
        postmaster = stack.pid("postgres")
        backends = procfs.children(postmaster)
        marks["kill"] = time.monotonic()
        # Like `docker kill`: every process of the cluster at once, no shutdown.
        for pid in (postmaster, *backends):
            with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(5)
        await asyncio.to_thread(stack.start_postgres)
        marks["back"] = time.monotonic()
        await asyncio.sleep(8)
        load.stopped.set()
        await task

    asyncio.run(scenario())
    outcomes = load.outcomes
    kill, back = marks["kill"], marks["back"]
    statuses = Counter((o.status, o.code) for o in outcomes)
    assert set(statuses) <= {(200, None), (503, "DATABASE_UNAVAILABLE")}, statuses
    assert all(o.status == 200 for o in outcomes if o.path == "/health"), "liveness touched the DB"
    slowest = max(outcomes, key=lambda o: o.seconds)
    assert slowest.seconds < bound, f"{slowest} waited longer than {bound} s"
    during = [o for o in outcomes if kill + 0.5 < o.started < back]
    assert sum(o.status == 503 for o in during) > 10, "the outage was not seen"
    # Recovery: from PostgreSQL's return, every request started 5 s later succeeds, and
    # the first success comes sooner.
    assert not [o for o in outcomes if o.started > back + 5 and o.status != 200]
    first_ok = min(o.started + o.seconds for o in outcomes if o.started > back and o.status == 200)
    assert first_ok - back < 5
    assert stack.pid("api-svc") == api_pid, "api-svc was restarted"
    assert httpx.get(f"{stack.gateway_url}/api/ready", timeout=10).json() == {"status": "ready"}
    print(  # the measured numbers, shown with -s
        f"postgres kill: {statuses}, slowest {slowest.seconds:.2f} s (bound {bound} s), "
        f"first 200 {first_ok - back:.2f} s after the restart"
    )


# --------------------------------------------------------------------------- a worker killed
@pytest.mark.timeout(180)
def test_a_killed_worker_is_replaced_and_counters_never_go_backwards(
    stack: NativeStack, prometheus: httpx.Client
) -> None:
    test_start = time.time()
    master = stack.pid("api-svc")
    workers = procfs.children(master)
    assert len(workers) >= 2, workers
    plan: list[tuple[str, str, dict[str, Any]]] = [
        *[("GET", f"/message/{n}", {}) for n in range(1, 11)],
        ("GET", "/health", {}),
    ]
    concurrency = 16
    load = Load(stack.gateway_url, plan)
    totals: list[float] = []
    sampling = threading.Event()

    def sample_scrapes() -> None:
        while not sampling.is_set():
            # Where Prometheus scrapes: the master's port. A worker's own /metrics could be
            # served by the worker about to be killed (the scrape would die with it).
            totals.append(_requests_total(stack, "api-svc", 9000))
            time.sleep(0.25)

    marks: dict[str, float] = {}

    async def scenario() -> None:
        task = asyncio.create_task(load.run(concurrency=concurrency))
        await asyncio.sleep(6)
        marks["kill"] = time.monotonic()
        os.kill(workers[0], signal.SIGKILL)
        await asyncio.sleep(14)
        load.stopped.set()
        await task

    sampler = threading.Thread(target=sample_scrapes)
    sampler.start()
    try:
        asyncio.run(scenario())
    finally:
        sampling.set()
        sampler.join()

    # The master replaced the worker.
    def all_workers() -> list[int] | None:
        children = procfs.children(master)
        return children if len(children) == len(workers) else None

    replaced = wait_for(all_workers, 10, 0.2)
    assert workers[0] not in replaced
    assert stack.pid("api-svc") == master
    # Only requests in flight on that worker failed: a 502 envelope from the gateway, or, when
    # the worker died after its answer had begun (nginx cannot turn a started answer into a
    # 502), the connection closed mid-answer (status 0).
    kill = marks["kill"]
    failed = [o for o in load.outcomes if o.status != 200]
    assert all((o.status, o.code) in {(502, "BAD_GATEWAY"), (0, None)} for o in failed), Counter(
        (o.status, o.code) for o in failed
    )
    assert len(failed) <= concurrency, len(failed)
    late = [o for o in failed if not o.started < kill + 0.5 <= o.started + o.seconds + 0.5]
    assert not late, f"requests not in flight at the kill failed: {late}"
    # The service kept serving after the kill (13 s of load; a bound far below what even one
    # worker on a busy machine does, so it only fails when the service stopped answering).
    assert sum(o.status == 200 for o in load.outcomes if o.started > kill + 1) > 100
    _assert_counters_never_went_back(stack, prometheus, totals, since=test_start)
    print(  # the measured numbers, shown with -s
        f"worker kill: {len(load.outcomes)} requests, {len(failed)} failed (502), "
        f"{len(totals)} scrapes, none lower than the one before"
    )


def _assert_counters_never_went_back(
    stack: NativeStack, prometheus: httpx.Client, totals: list[float], since: float
) -> None:
    """Every scrape's total is at least the one before; the dead worker's in-flight gauge is
    gone (the master's scrape is no request: none is in flight); Prometheus saw no counter
    reset since ``since``."""
    assert len(totals) > 20
    assert all(b >= a for a, b in itertools.pairwise(totals)), "a counter went back"
    port = stack.port("api-svc", 9000)
    exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    in_flight = metric_value(exposition, "app_http_requests_in_flight", service="api-svc")
    assert in_flight == 0, in_flight
    time.sleep(11)  # two more scrapes (every 5 s)
    window = int(time.time() - since) + 1
    resets = query(prometheus, f'max(resets(app_http_requests_total{{job="api-svc"}}[{window}s]))')
    assert float(resets[0]["value"][1]) == 0


# --------------------------------------------------------------------------- rolling restart
def _started_workers(log: Path) -> int:
    text = log.read_text(errors="replace") if log.exists() else ""
    # Whole lines only (the last one may be half written); a traceback is not JSON, and
    # the caller reports the log when the process has died.
    lines = [line for line in text.split("\n")[:-1] if line.startswith("{")]
    return sum(1 for line in json_lines("\n".join(lines)) if line.get("event") == "startup")


@pytest.fixture
def reuse_port_processor(stack: NativeStack) -> Iterator[list[str]]:
    """processor-svc started with gunicorn's --reuse-port; the stack's own command after."""
    argv = [*stack.spec_argv("processor-svc"), "--reuse-port"]
    stack.stop("processor-svc")
    stack.respawn("processor-svc", argv=argv)
    try:
        yield argv
    finally:
        with contextlib.suppress(ComponentFailedError):  # gone after the rolling restart
            stack.stop("processor-svc")
        stack.respawn("processor-svc")


# Requests that must start after the old instance is gone, all served by the new one.
AFTER_GONE = 100


@pytest.mark.timeout(180)
def test_rolling_restart_of_processor_svc_under_load_fails_no_request(
    stack: NativeStack, reuse_port_processor: list[str]
) -> None:
    old = stack.pid("processor-svc")
    env = stack.spec_env("processor-svc")
    metrics_dir = stack.state.run / "processor-svc-next-metrics"
    metrics_dir.mkdir(exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # each instance wipes its own at start
    log = stack.state.logs / "processor-svc-next.log"
    log.unlink(missing_ok=True)
    workers = int(env.get("WEB_CONCURRENCY", "2"))
    plan = [("POST", "/process", {"json": {"data": f"rolling {n}"}}) for n in range(100)]
    load = Load(stack.gateway_url, plan)
    marks: dict[str, float] = {}
    successor: list[ServiceProcess] = []

    async def scenario() -> None:
        task = asyncio.create_task(load.run(concurrency=32))
        await asyncio.sleep(3)
        # 1. The new instance binds the same port beside the old one and starts its workers.
        successor.append(
            spawn(
                "processor-svc-next",
                reuse_port_processor,
                log_path=log,
                env=env,
                health_url=None,
                cwd=stack.state.root,
            )
        )
        deadline = time.monotonic() + 30
        while _started_workers(log) < workers:
            assert successor[0].proc.poll() is None, f"the new instance died:\n{log_tail(log)}"
            assert time.monotonic() < deadline, f"the new instance did not start:\n{log_tail(log)}"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        # 2. The old instance drains and exits (gunicorn's graceful SIGTERM).
        marks["term"] = time.monotonic()
        os.kill(old, signal.SIGTERM)
        await asyncio.to_thread(stack.wait_stopped, "processor-svc")
        marks["gone"] = time.monotonic()
        # Load on the new instance alone, counted rather than timed: a busy machine serves
        # fewer requests in any fixed window.
        deadline = time.monotonic() + 60
        while sum(1 for o in load.outcomes if o.started > marks["gone"]) <= AFTER_GONE:
            assert time.monotonic() < deadline, "too little load after the old instance left"
            await asyncio.sleep(0.1)
        load.stopped.set()
        await task

    try:
        asyncio.run(scenario())
        statuses = Counter((o.status, o.code) for o in load.outcomes)
        assert statuses == {(200, None): len(load.outcomes)}, statuses
        after = [o for o in load.outcomes if o.started > marks["gone"]]
        assert len(after) > AFTER_GONE, "no load after the old instance was gone"
        served_by_next = sum(
            1 for line in json_lines(log.read_text()) if line.get("route") == "/process"
        )
        assert served_by_next >= len(after)
        print(  # the measured numbers, shown with -s
            f"rolling restart: {len(load.outcomes)} requests, all 200; old instance drained in "
            f"{marks['gone'] - marks['term']:.2f} s; {served_by_next} served by the new one"
        )
    finally:
        for process in successor:
            process.stop()


# --------------------------------------------------------------------------- soak
def _rss_kib(pid: int) -> int:
    kib = procfs.rss_kb(pid)
    assert kib is not None, f"no VmRSS for {pid}"
    return kib


@dataclass
class Sample:
    at: float
    rss: dict[int, int]  # worker pid -> KiB
    files: dict[str, tuple[int, int]]  # service -> (file count, total bytes)


def _sample(stack: NativeStack, at: float) -> Sample:
    rss = {}
    files = {}
    for service in ("api-svc", "processor-svc"):
        for pid in procfs.children(stack.pid(service)):
            rss[pid] = _rss_kib(pid)
        entries = list(Path(stack.spec_env(service)["PROMETHEUS_MULTIPROC_DIR"]).iterdir())
        files[service] = (len(entries), sum(entry.stat().st_size for entry in entries))
    return Sample(at, rss, files)


class RawPool:
    """Keep-alive HTTP/1.1 connections to the gateway, requests written as bytes.

    httpx costs milliseconds of CPU per request: on a machine shared with other load the soak's
    own client fell behind its 50 req/s and its latencies were mostly its own queueing. This
    costs a fraction of that. An idle connection the gateway closed (keepalive_timeout,
    keepalive_requests) is noticed before any answer byte, and the request goes on a new one,
    as every HTTP client does; any other failure is an outcome with status 0."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(size)

    async def timed(self, method: str, path: str, kwargs: dict[str, Any]) -> Outcome:
        if params := kwargs.get("params"):
            path = f"{path}?{urllib.parse.urlencode(params)}"
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        body = b""
        if "json" in kwargs:
            body = json.dumps(kwargs["json"]).encode()
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = head.encode() + b"\r\n" + body
        started = time.monotonic()
        async with self.slots:
            status = await self._send(data)
        return Outcome(path, started, time.monotonic() - started, status, None)

    async def _send(self, data: bytes) -> int:
        while True:
            reused = bool(self.idle)
            if reused:
                reader, writer = self.idle.pop(0)  # the longest idle first: none idles long
            else:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                writer.write(data)
                status_line = await asyncio.wait_for(reader.readline(), 30)
            except TimeoutError:  # no answer in time: a failure, never sent again
                writer.close()
                return 0
            except OSError:  # reset: like a close
                status_line = b""
            if not status_line:
                writer.close()
                if reused:
                    continue  # closed while idle: the request was never read
                return 0
            try:
                status, keep = await asyncio.wait_for(_read_answer(reader, status_line), 30)
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
                writer.close()
                return 0
            if keep:
                self.idle.append((reader, writer))
            else:
                writer.close()
            return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _read_answer(reader: asyncio.StreamReader, status_line: bytes) -> tuple[int, bool]:
    """Read one answer after its status line; (status, whether the connection stays open)."""
    status = int(status_line.split(b" ", 2)[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection") != "close"


def _soak_plan(rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    """One block of 40 requests: mostly reads, /process, one search, 404s, 422s, readiness.

    One search in 40 (1.25/s at 50 req/s): each is a full scan of 200,000 rows (the deliberate
    bottleneck of docs/performance.md), and more would measure that bottleneck, not leaks."""
    words = ["zulu", "tango", "metric", "replica", "gateway", "latency"]
    block: list[tuple[str, str, dict[str, Any]]] = [
        *[("GET", f"/message/{rng.randint(1, 10)}", {}) for _ in range(16)],
        *[("GET", "/health", {}) for _ in range(8)],
        *[("POST", "/process", {"json": {"data": f"soak {rng.random()}"}}) for _ in range(6)],
        ("GET", "/message/search", {"params": {"q": rng.choice(words), "limit": 5}}),
        *[("GET", f"/message/{rng.randint(1_000_000, 2_000_000)}", {}) for _ in range(2)],
        *[("GET", "/message/not-a-number", {}) for _ in range(2)],
        *[("GET", "/api/ready", {}) for _ in range(2)],
        *[("GET", "/processor/health", {}) for _ in range(3)],
    ]
    rng.shuffle(block)
    return block


@pytest.mark.soak
@pytest.mark.timeout(int(SOAK_SECONDS) + 300)
def test_soak_of_mixed_load(stack: NativeStack) -> None:
    """THE SOAK: SOAK_SECONDS (default 60; `make soak`: 600) at 50 requests/s, gateway in front."""
    rate = 50.0
    warm_up = min(60.0, SOAK_SECONDS / 5)
    rng = random.Random(7)
    blocks = int(SOAK_SECONDS * rate / 40) + 10
    plan = [request for _ in range(blocks) for request in _soak_plan(rng)]
    outcomes: list[Outcome] = []
    samples: list[Sample] = []
    marks: dict[str, float] = {}

    async def soak() -> None:
        start = time.monotonic()
        pool = RawPool(stack.port("gateway", 8080), size=64)
        in_flight: set[asyncio.Task[None]] = set()
        next_sample = start

        async def one(method: str, path: str, kwargs: dict[str, Any]) -> None:
            outcomes.append(await pool.timed(method, path, kwargs))

        async def sample(at: float) -> None:
            samples.append(await asyncio.to_thread(_sample, stack, at))

        def spawn_task(coroutine: Any) -> None:
            task = asyncio.create_task(coroutine)
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

        for n, (method, path, kwargs) in enumerate(plan):
            due = start + n / rate  # open loop: a steady rate, whatever the latency
            if due > start + SOAK_SECONDS:
                break
            if (now := time.monotonic()) >= next_sample:
                spawn_task(sample(now - start))  # beside the load, never holding it up
                next_sample += 15
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            spawn_task(one(method, path, kwargs))
        marks["sent"] = time.monotonic() - start
        await asyncio.gather(*in_flight)
        pool.close()
        samples.append(await asyncio.to_thread(_sample, stack, time.monotonic() - start))

    asyncio.run(soak())

    statuses = Counter(o.status for o in outcomes)
    assert not {s for s in statuses if s >= 500 or s == 0}, statuses
    assert set(statuses) <= {200, 404, 422}, statuses
    assert len(outcomes) >= 0.95 * rate * SOAK_SECONDS, f"only {len(outcomes)} requests"
    # The same workers all along (none died or was recycled) ...
    samples.sort(key=lambda s: s.at)
    baseline = next(s for s in samples if s.at >= warm_up)
    last = samples[-1]
    assert set(last.rss) == set(samples[0].rss), "a worker was replaced during the soak"
    # ... and their memory is stable after the warm-up.
    grown = {
        pid: (baseline.rss[pid], last.rss[pid])
        for pid in last.rss
        if last.rss[pid] > baseline.rss[pid] * 1.10
    }
    assert not grown, f"RSS grew more than 10 % after the warm-up (KiB): {grown}"
    # Multiprocess metric files: no new file, no growth after the warm-up.
    assert last.files == baseline.files, (baseline.files, last.files)
    latencies = sorted(o.seconds for o in outcomes)
    print(  # the measured numbers, shown with -s
        f"soak {SOAK_SECONDS:.0f} s: {len(outcomes)} requests {dict(statuses)} sent in "
        f"{marks['sent']:.0f} s, "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms; "
        f"RSS KiB after warm-up {baseline.rss} -> end {last.rss}; metric files {last.files}"
    )

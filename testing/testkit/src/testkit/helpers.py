"""Small helpers the test suites share."""

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def tool(*names: str) -> str:
    """Path of the first of ``names`` on PATH; fails the test (never skips) when none is."""
    for name in names:
        if found := shutil.which(name):
            return found
    pytest.fail(f"required tool not installed: {' or '.join(names)} (see scripts/install-deps)")


def npm_dependencies(directory: Path, timeout: float = 300) -> None:
    """Make ``directory``/node_modules hold exactly the versions its package.json pins.

    `npm ci` (package-lock.json, nothing resolved anew) when a dependency is missing or at
    another version, e.g. after a bump; nothing when all are there, so runs stay offline.
    """
    manifest = json.loads((directory / "package.json").read_text(encoding="utf-8"))

    def installed(name: str) -> str | None:
        path = directory / "node_modules" / name / "package.json"
        if not path.is_file():
            return None
        version: str = json.loads(path.read_text(encoding="utf-8"))["version"]
        return version

    wanted: dict[str, str] = manifest.get("dependencies", {})
    if all(installed(name) == version for name, version in wanted.items()):
        return
    result = subprocess.run(  # noqa: S603 - fixed argv
        [tool("npm"), "ci", "--no-audit", "--no-fund"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"npm ci in {directory} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line, parsed; raises on a line that is not one JSON object.

    Split on "\n" only, like a log shipper: str.splitlines() would also split on U+2028,
    U+0085 and friends, which JSON allows raw inside a string (a logged value may hold them).
    """
    lines = []
    for line in text.split("\n"):
        if line.strip():
            parsed = json.loads(line)
            if not isinstance(parsed, dict):
                raise ValueError(f"not a JSON object: {line!r}")
            lines.append(parsed)
    return lines


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def series_count(exposition: str) -> int:
    """How many samples (series) an exposition holds."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    return sum(len(family.samples) for family in text_string_to_metric_families(exposition))


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def pipelined_get(port: int, path: str, count: int, timeout: float = 30) -> list[RawResponse]:
    """``count`` GETs of ``path`` written at once on one keep-alive connection (see below)."""
    return pipelined_gets(port, [path] * count, timeout)


def pipelined_gets(port: int, paths: Sequence[str], timeout: float = 30) -> list[RawResponse]:
    """A GET of each path, all written at once on one keep-alive connection, answers parsed
    in order.

    Faster than any client library (no round trip per request), so a rate limit can be
    exceeded from a single connection; send at most nginx's keepalive_requests (1000).
    """
    count = len(paths)
    requests = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for path in paths
    )
    responses: list[RawResponse] = []
    buffer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(requests)
        while len(responses) < count:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                continue
            lines = buffer[:head_end].decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:])
            }
            length = int(headers.get("content-length", "0"))
            while len(buffer) < head_end + 4 + length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed mid-response")
                buffer += chunk
            body = buffer[head_end + 4 : head_end + 4 + length]
            buffer = buffer[head_end + 4 + length :]
            responses.append(RawResponse(int(lines[0].split()[1]), headers, body))
    return responses


def query(prometheus: httpx.Client, expr: str) -> list[dict[str, Any]]:
    """An instant query; raises with Prometheus's message when it is not a success."""
    response = prometheus.get("/api/v1/query", params={"query": expr})
    body = response.json()
    if body.get("status") != "success":
        raise AssertionError(f"{expr!r}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    """Poll until ``predicate`` returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.0f} s")
        time.sleep(interval)


async def drive(
    base_url: str,
    requests: Iterable[tuple[str, str, dict[str, Any]]],
    concurrency: int,
    stop: Callable[[], bool],
) -> list[int]:
    """Send (method, path, kwargs) requests with ``concurrency`` in flight until they run out
    or ``stop()`` is true; returns the status codes (0 for a transport error)."""
    statuses: list[int] = []
    queue = iter(requests)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            for method, path, kwargs in queue:
                if stop():
                    return
                try:
                    statuses.append((await client.request(method, path, **kwargs)).status_code)
                except httpx.TransportError:
                    statuses.append(0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def until(deadline: float) -> Callable[[], bool]:
    """A ``stop`` for :func:`drive`: true once ``time.monotonic()`` passes ``deadline``."""
    return lambda: time.monotonic() > deadline


@contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Every span finished inside the block, taken from the process-wide TracerProvider (an
    app's lifespan installs it); detached afterwards, so the next test starts empty."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise TypeError("no SDK TracerProvider: start a traced app (its lifespan installs it)")
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    try:
        yield exporter
    finally:
        processor.shutdown()

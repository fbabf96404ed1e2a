"""End-to-end tests: the native twin of the stack, started once per session, through the gateway."""

import asyncio
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackctl.native import NativeStack, running_stack

# Every e2e test is bounded; the session fixture starts and stops everything itself.
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def stack() -> Iterator[NativeStack]:
    # Not under pytest's 0700 tmp dir: PostgreSQL and nginx's workers run as other users.
    state = Path(tempfile.mkdtemp(prefix="e2e-stack-"))
    state.chmod(0o711)
    env = {**os.environ, "SEED_ROWS": os.environ.get("SEED_ROWS", "200000")}
    with running_stack(state, env) as native:
        yield native


@pytest.fixture(scope="session")
def gateway(stack: NativeStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.ports.gateway}", timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def prometheus(stack: NativeStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.ports.prometheus}", timeout=30) as client:
        yield client


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
    requests: list[tuple[str, str, dict[str, Any]]],
    concurrency: int,
    deadline: float,
) -> list[int]:
    """Send (method, path, kwargs) requests with ``concurrency`` in flight, until done or the
    monotonic ``deadline``; returns the status codes (0 for a transport error)."""
    statuses: list[int] = []
    queue = iter(requests)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def worker() -> None:
            for method, path, kwargs in queue:
                if time.monotonic() > deadline:
                    return
                try:
                    statuses.append((await client.request(method, path, **kwargs)).status_code)
                except httpx.TransportError:
                    statuses.append(0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


@pytest.fixture(scope="session")
def mixed_load(stack: NativeStack) -> list[int]:
    """A short, bounded mixed load through the gateway so every dashboard query has data."""
    base = f"http://127.0.0.1:{stack.ports.gateway}"
    plan: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(600):
        plan.append(("GET", f"/message/{n % 10 + 1}", {}))
        plan.append(("GET", "/health", {}))
        if n % 10 == 0:
            plan.append(("GET", "/message/search", {"params": {"q": "zulu", "limit": 5}}))
            plan.append(("POST", "/process", {"json": {"data": f"load {n}"}}))
            plan.append(("GET", f"/message/{10_000_000 + n}", {}))  # 404s
            plan.append(("GET", "/message/abc", {}))  # 422s
    statuses = asyncio.run(drive(base, plan, concurrency=16, deadline=time.monotonic() + 60))
    # Two scrapes (5 s apart) after the load, so rate() over the last minute sees it.
    time.sleep(12)
    return statuses

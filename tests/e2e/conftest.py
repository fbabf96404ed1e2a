"""End-to-end tests: the native twin of the stack, started once per session, through the gateway."""

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackctl.addresses import PORT_OFFSET
from stackctl.native import NativeStack, free_stack_offset, running_stack
from testkit import drive, until

# Every e2e test is bounded; the session fixture starts and stops everything itself.
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def stack() -> Iterator[NativeStack]:
    # Not under pytest's 0700 tmp dir: PostgreSQL and nginx's workers run as other users.
    state = Path(tempfile.mkdtemp(prefix="e2e-stack-"))
    state.chmod(0o711)
    env = dict(os.environ)
    # Beside whatever holds the documented ports (a local PostgreSQL, a running twin).
    env.setdefault(PORT_OFFSET, str(free_stack_offset()))
    try:
        with running_stack(state, env) as native:
            yield native
    finally:
        if not os.environ.get("E2E_KEEP_STATE"):  # set it to read the logs after a failure
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def gateway(stack: NativeStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def prometheus(stack: NativeStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.prometheus_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def mixed_load(stack: NativeStack) -> list[int]:
    """A short, bounded mixed load through the gateway so every dashboard query has data."""
    base = stack.gateway_url
    plan: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(600):
        plan.append(("GET", f"/message/{n % 10 + 1}", {}))
        plan.append(("GET", "/health", {}))
        if n % 10 == 0:
            plan.append(("GET", "/message/search", {"params": {"q": "zulu", "limit": 5}}))
            plan.append(("POST", "/process", {"json": {"data": f"load {n}"}}))
            plan.append(("GET", f"/message/{10_000_000 + n}", {}))  # 404s
            plan.append(("GET", "/message/abc", {}))  # 422s
    # Bounded by count; the time cap only stops a stack that no longer answers (a starved
    # machine needs minutes for what an idle one does in seconds).
    statuses = asyncio.run(drive(base, plan, concurrency=16, stop=until(time.monotonic() + 180)))
    # Two scrapes (5 s apart) after the load, so rate() over the last minute sees it.
    time.sleep(12)
    return statuses

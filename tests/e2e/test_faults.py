"""Faults on the native twin: processor-svc stopped with requests in flight, and while down."""

import asyncio
import os
import signal
import time
from contextlib import suppress

import httpx

from stackctl.native import NativeStack
from stackctl.processes import ComponentFailedError
from testkit import drive, metric_value, until, wait_for


def _in_flight(stack: NativeStack) -> float:
    # Straight from processor-svc (the gateway hides /metrics); includes this scrape.
    port = stack.port("processor-svc", 8001)
    exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return metric_value(exposition, "app_http_requests_in_flight", service="processor-svc") - 1


# How long each request stays inside processor-svc here. The precondition (all 100 inside at
# once) must not depend on how fast this machine sends them: with 0.5 s of work, a busy
# machine that took longer than that to start 100 requests never saw them together.
HOLD_SECONDS = 15


def test_sigterm_with_100_requests_in_flight_loses_none(
    stack: NativeStack, gateway: httpx.Client
) -> None:
    base = stack.gateway_url
    plan = [("POST", "/process", {"json": {"data": f"in flight {n}"}}) for n in range(100)]

    async def terminate_mid_flight() -> list[int]:
        task = asyncio.create_task(drive(base, plan, 100, stop=until(time.monotonic() + 60)))
        # SIGTERM once all 100 are inside processor-svc; the first of them leaves after
        # HOLD_SECONDS, so that is as long as "together" can take.
        deadline = time.monotonic() + HOLD_SECONDS
        while await asyncio.to_thread(_in_flight, stack) < 100:
            assert time.monotonic() < deadline, "the 100 requests never were in flight together"
            await asyncio.sleep(0.05)
        os.kill(stack.pid("processor-svc"), signal.SIGTERM)
        return await task

    stack.stop("processor-svc")
    stack.respawn("processor-svc", env={"PROCESS_DELAY_SECONDS": str(HOLD_SECONDS)})
    try:
        statuses = asyncio.run(terminate_mid_flight())
        assert statuses == [200] * 100
        stack.wait_stopped("processor-svc")

        # Down: the gateway answers 502 in the envelope, fast.
        response = gateway.post("/process", json={"data": "nobody home"})
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "BAD_GATEWAY"
    finally:  # whatever failed above, later tests need processor-svc back, as it was
        with suppress(ComponentFailedError):
            stack.stop("processor-svc")
        stack.respawn("processor-svc")
    wait_for(lambda: gateway.post("/process", json={"data": "back"}).status_code == 200, 10, 0.2)

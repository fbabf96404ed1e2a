"""Logs carry no request data beyond what the access line names: tracebacks without locals.

An unhandled exception is logged with its traceback (as a dict) for the operator; the values of
the local variables of every frame must not come with it: they hold the request's scope (every
header, e.g. Authorization and Cookie), request bodies and whatever the handler held.
"""

import io
import logging
import uuid

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient

from service_kit.app import create_service_app
from service_kit.logs import stdlib_logging_config
from service_kit.settings import ObservabilitySettings
from testkit import json_lines

router = APIRouter()


class LeakError(Exception):
    pass


@router.post("/leak")
async def leak(request: Request) -> None:
    held_by_the_handler = (await request.body()).decode()  # noqa: F841 - a local to leak
    raise LeakError("boom")


def test_an_unhandled_exception_logs_no_locals(capsys: pytest.CaptureFixture[str]) -> None:
    canary = uuid.uuid4().hex
    app = create_service_app(
        ObservabilitySettings(service_name="leak-svc", tracing_enabled=False),
        title="t",
        description="d",
        routers=[router],
    )
    client = TestClient(app, raise_server_exceptions=False)
    capsys.readouterr()
    response = client.post(
        "/leak",
        content=f"body-{canary}",
        headers={"Authorization": f"Bearer header-{canary}", "Cookie": f"s=cookie-{canary}"},
    )
    assert response.status_code == 500
    assert canary not in response.text
    out = capsys.readouterr().out
    [logged] = [line for line in json_lines(out) if line["event"] == "unhandled_exception"]
    assert logged["exception"][0]["exc_type"] == "LeakError"  # the traceback is there ...
    leaked = canary in out
    assert not leaked, "a request's header or body reached the log via frame locals"


def _fail_holding(value: str) -> None:
    """Raise while a frame holds ``value`` in a local."""
    raise LeakError(value[:0])


def test_the_stdlib_side_logs_no_locals_either() -> None:
    """gunicorn's and uvicorn's own lines go through the stdlib formatter (logconfig_dict)."""
    canary = uuid.uuid4().hex
    spec = dict(stdlib_logging_config("leak-svc", "info")["formatters"]["json"])
    factory = spec.pop("()")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(factory(**spec))
    logger = logging.getLogger(f"leak-test-{uuid.uuid4().hex}")  # ours alone: nothing global
    logger.addHandler(handler)
    logger.propagate = False
    try:
        _fail_holding(f"local-{canary}")
    except LeakError:
        logger.exception("worker_error")
    finally:
        logger.removeHandler(handler)
    [line] = json_lines(stream.getvalue())
    assert line["exception"][0]["exc_type"] == "LeakError"
    leaked = canary in stream.getvalue()
    assert not leaked, "frame locals reached the log"

"""Both Swagger UI pages in a real browser, through the gateway, served by the stack alone.

A headless chromium (Debian's, or Chrome where that is what the machine has; never one
downloaded at install time) is driven by playwright-core from tests/e2e/browser/swagger-ui.mjs,
which prints what the browser saw as JSON; the assertions are here. It checks that each page
renders every operation of its OpenAPI document with no console error and no CSP violation,
loading nothing from anywhere but the gateway, and that "Try it out" -> Execute sends to the
prefixed URL and shows the service's answer. With DOCS_ENABLED=false the same URLs are the
404 envelope. The page screenshots are written to a temporary directory, or to
SWAGGER_SCREENSHOTS_DIR (`make screenshots`: docs/, shown in the README).
"""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from stackctl.native import NativeStack
from stackctl.processes import ComponentFailedError
from testkit import npm_dependencies, tool

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
# Debian: chromium. Ubuntu's chromium package is only a snap wrapper (no snapd in containers,
# CI images), so what else a machine may have instead is taken too, if it runs.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_TIMEOUT = 180
SERVICES = {"api-svc": "/api", "processor-svc": "/processor"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ECHO = "sent from Swagger UI"


def browser_executable() -> str:
    """The first browser on PATH that really starts; fail (never skip) when there is none."""
    tried = []
    for name in BROWSERS:
        path = shutil.which(name)
        if path is None:
            continue
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode == 0 and re.search(r"\d+\.\d+", result.stdout):
            return path
        tried.append(f"{path}: exit {result.returncode} {result.stdout}{result.stderr}".strip())
    pytest.fail(
        f"no working browser among {', '.join(BROWSERS)} (Debian: apt-get install chromium; "
        f"scripts/install-deps does it). Tried: {tried or 'none on PATH'}"
    )


def _browser_pids(user_data_dir: Path) -> list[int]:
    """Processes started with our own user-data-dir: this run's browser and nothing else."""
    marker = f"--user-data-dir={user_data_dir}".encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        with suppress(OSError):
            if marker in (proc / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
    return pids


def _stop(proc: subprocess.Popen[str], user_data_dir: Path) -> None:
    """Node first (playwright closes its browser on SIGTERM), then any browser left behind."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # playwright starts the browser in a process group of its own, led by the browser.
    for pid in _browser_pids(user_data_dir):
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _browser_pids(user_data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)


def run_browser(job: dict[str, Any]) -> dict[str, Any]:
    """Run swagger-ui.mjs on ``job`` in a fresh profile; its report, or a failure with its log."""
    executable = browser_executable()
    node = tool("node", "nodejs")
    npm_dependencies(BROWSER_DIR)
    user_data_dir = Path(tempfile.mkdtemp(prefix="swagger-ui-browser-"))
    proc = subprocess.Popen(
        [node, "swagger-ui.mjs"],
        cwd=BROWSER_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, so _stop reaches whatever it spawned
    )
    try:
        stdout, stderr = proc.communicate(
            json.dumps({**job, "executable": executable, "userDataDir": str(user_data_dir)}),
            timeout=BROWSER_TIMEOUT,
        )
    finally:
        _stop(proc, user_data_dir)
        shutil.rmtree(user_data_dir, ignore_errors=True)
    assert proc.returncode == 0, f"swagger-ui.mjs exited {proc.returncode}:\n{stderr}"
    report: dict[str, Any] = json.loads(stdout)
    return report


@pytest.fixture(scope="module")
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if target := os.environ.get("SWAGGER_SCREENSHOTS_DIR"):
        path = Path(target).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def report(stack: NativeStack, screenshots_dir: Path) -> dict[str, dict[str, Any]]:
    """One browser run over both pages; the page reports by name ("api-svc", ...)."""
    base = stack.gateway_url
    message_steps = [
        {"method": "get", "path": "/message/{id}", "params": {"id": "1"}},
        {"method": "get", "path": "/message/{id}", "params": {"id": "abc"}},
    ]
    process_steps = [
        {"method": "post", "path": "/process", "body": json.dumps({"data": ECHO})},
        {"method": "post", "path": "/process", "body": json.dumps({"data": ""})},
    ]
    pages: list[tuple[str, dict[str, Any]]] = [
        ("api-svc", {"url": f"{base}/api/docs", "tryItOut": message_steps}),
        # The same page, with Swagger UI's own parameter check left to the server (see the
        # test that uses it).
        (
            "api-svc, server checks only",
            {"url": f"{base}/api/docs", "serverChecksOnly": True, "tryItOut": message_steps[1:]},
        ),
        ("processor-svc", {"url": f"{base}/processor/docs", "tryItOut": process_steps}),
    ]
    for name, page in pages:
        if name in SERVICES:
            page["screenshot"] = str(screenshots_dir / f"swagger-ui-{name}.png")
    result = run_browser({"pages": [page for _, page in pages]})
    return {name: page for (name, _), page in zip(pages, result["pages"], strict=True)}


def _try(page: dict[str, Any], index: int) -> dict[str, Any]:
    attempt: dict[str, Any] = page["tries"][index]
    assert "error" not in attempt, f"{attempt['error']}\nthe operation showed:\n{attempt['page']}"
    return attempt


def _expected_console_errors(page: dict[str, Any]) -> set[tuple[str, str]]:
    """Chrome logs every 4xx answer a page fetches as a console error: those of the requests
    the test made on purpose (for a 422) are expected, nothing else is."""
    return {
        (attempt["sent"]["url"], f"status of {attempt['sent']['status']}")
        for attempt in page["tries"]
        if "sent" in attempt and attempt["sent"]["status"] >= 400
    }


@pytest.mark.parametrize(("service", "prefix"), SERVICES.items())
def test_the_page_lists_every_operation_of_the_openapi_document(
    report: dict[str, dict[str, Any]], gateway: httpx.Client, service: str, prefix: str
) -> None:
    page = report[service]
    assert page["status"] == 200
    assert page["title"] == f"{service} - Swagger UI"
    spec = gateway.get(f"{prefix}/openapi.json").json()
    documented = sorted((method, path) for path, item in spec["paths"].items() for method in item)
    assert sorted((op["method"], op["path"]) for op in page["operations"]) == documented


@pytest.mark.parametrize("page_name", ["api-svc", "processor-svc", "api-svc, server checks only"])
def test_nothing_is_loaded_from_elsewhere_and_the_console_has_no_error(
    report: dict[str, dict[str, Any]], stack: NativeStack, page_name: str
) -> None:
    page = report[page_name]
    gateway = urlsplit(stack.gateway_url)
    foreign = [r["url"] for r in page["requests"] if urlsplit(r["url"])[:2] != gateway[:2]]
    assert foreign == [], "requests that left the gateway"
    loaded = {urlsplit(r["url"]).path for r in page["requests"]}
    prefix = urlsplit(page["url"]).path.removesuffix("/docs")
    assert {f"{prefix}/docs/swagger-ui-bundle.js", f"{prefix}/openapi.json"} <= loaded
    assert page["failed"] == []
    assert page["cspViolations"] == []
    assert page["pageErrors"] == []
    expected = _expected_console_errors(page)
    unexpected = [
        entry
        for entry in page["console"]
        if entry["type"] == "error"
        and not any(entry["url"] == url and status in entry["text"] for url, status in expected)
    ]
    assert unexpected == []


def test_try_it_out_get_message_1_goes_to_the_prefixed_url(
    report: dict[str, dict[str, Any]], stack: NativeStack, gateway: httpx.Client
) -> None:
    attempt = _try(report["api-svc"], 0)
    url = f"{stack.gateway_url}/api/message/1"
    assert attempt["sent"] == {**attempt["sent"], "method": "GET", "url": url, "status": 200}
    assert attempt["shown"]["status"] == "200"
    assert attempt["shown"]["requestUrl"] == url
    assert json.loads(attempt["shown"]["body"]) == gateway.get("/message/1").json()


def test_try_it_out_get_message_abc_shows_the_422_envelope(
    report: dict[str, dict[str, Any]], stack: NativeStack
) -> None:
    # As shipped, Swagger UI checks the id against the schema (an integer) and sends nothing:
    # the person sees why, in the page.
    refused = _try(report["api-svc"], 1)
    assert "Value must be an integer" in refused["refused"]
    sent = [r["url"] for r in report["api-svc"]["requests"]]
    assert f"{stack.gateway_url}/api/message/abc" not in sent
    # With that check left to the server (swagger-ui's plugin API, in the test only), the
    # same Execute sends /api/message/abc and the page shows the service's 422 envelope.
    attempt = _try(report["api-svc, server checks only"], 0)
    url = f"{stack.gateway_url}/api/message/abc"
    assert attempt["sent"] == {**attempt["sent"], "method": "GET", "url": url, "status": 422}
    assert attempt["shown"]["status"] == "422"
    assert attempt["shown"]["requestUrl"] == url
    error = json.loads(attempt["shown"]["body"])["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["request_id"] == attempt["sent"]["requestId"]
    assert [detail["loc"] for detail in error["details"]] == [["path", "id"]]


def test_try_it_out_post_process_goes_to_the_prefixed_url(
    report: dict[str, dict[str, Any]], stack: NativeStack
) -> None:
    url = f"{stack.gateway_url}/processor/process"
    attempt = _try(report["processor-svc"], 0)
    assert attempt["sent"] == {**attempt["sent"], "method": "POST", "url": url, "status": 200}
    assert attempt["shown"]["status"] == "200"
    assert attempt["shown"]["requestUrl"] == url
    shown = json.loads(attempt["shown"]["body"])
    assert (shown["echo"], shown["length"]) == (ECHO, len(ECHO))
    # Swagger UI does not check a body against its schema: an empty `data` reaches the
    # service, and the page shows its 422 envelope.
    invalid = _try(report["processor-svc"], 1)
    assert invalid["sent"] == {**invalid["sent"], "url": url, "status": 422}
    error = json.loads(invalid["shown"]["body"])["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["request_id"] == invalid["sent"]["requestId"]
    assert [detail["loc"] for detail in error["details"]] == [["body", "data"]]


@pytest.mark.parametrize("service", SERVICES)
def test_screenshots_show_the_rendered_page(
    report: dict[str, dict[str, Any]], screenshots_dir: Path, service: str
) -> None:
    assert report[service]["operations"]  # taken once the operations were listed
    png = (screenshots_dir / f"swagger-ui-{service}.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])  # IHDR, right after the signature
    assert width == 1280  # the browser's viewport
    assert height >= 600
    assert len(png) > 20_000  # a rendered page, not a blank one


@pytest.fixture(scope="module")
def docs_switched_off(stack: NativeStack, gateway: httpx.Client) -> Iterator[None]:
    """Both services restarted with DOCS_ENABLED=false; as they were afterwards."""
    try:
        for service in SERVICES:
            stack.stop(service)
            stack.respawn(service, env={"DOCS_ENABLED": "false"})
        yield
    finally:  # whatever failed, later tests need the documents back
        for service in SERVICES:
            with suppress(ComponentFailedError):
                stack.stop(service)
            stack.respawn(service)
        assert gateway.get("/api/openapi.json").status_code == 200


@pytest.mark.usefixtures("docs_switched_off")
def test_with_docs_switched_off_the_page_and_document_are_404_envelopes(
    stack: NativeStack,
) -> None:
    urls = [
        f"{stack.gateway_url}{prefix}{path}"
        for prefix in SERVICES.values()
        for path in ("/docs", "/openapi.json", "/docs/swagger-ui-bundle.js")
    ]
    visits = run_browser({"visits": urls})["visits"]
    assert [visit["url"] for visit in visits] == urls
    for visit in visits:
        assert visit["status"] == 404, visit["url"]
        assert visit["headers"]["content-type"] == "application/json", visit["url"]
        error = json.loads(visit["body"])["error"]
        assert error["code"] == "NOT_FOUND"
        assert error["request_id"] == visit["headers"]["x-request-id"]

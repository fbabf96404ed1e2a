"""Validation of the Nginx gateway (gateway/): `nginx -t` and a functional run.

The functional tests start the real nginx (Debian's /usr/sbin/nginx) on free ports of
127.0.0.1, in a temporary prefix, in front of two tiny stub upstreams that echo what they
received as JSON. The config is rendered the way the native twin renders it: compose
`name:port` addresses replaced (here by the stubs' addresses) plus, for the test only, the
two listen ports. When the tests run as root, nginx runs as `nobody` (setpriv), like an
unprivileged native run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
GATEWAY_DIR = REPO / "gateway"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# The contract's address table for the gateway's upstreams (compose name:port).
COMPOSE_ADDRESSES = {"api-svc:8000": "127.0.0.1:8000", "processor-svc:8001": "127.0.0.1:8001"}
NOBODY = 65534
ENVELOPE_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    414: "BAD_REQUEST",
    429: "RATE_LIMITED",
    502: "BAD_GATEWAY",
    504: "GATEWAY_TIMEOUT",
}
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
ACCESS_LOG_FIELDS = {
    "time",
    "service",
    "level",
    "request_id",
    "method",
    "uri",
    "status",
    "bytes",
    "request_time",
    "upstream_addr",
    "upstream_response_time",
    "remote_addr",
    "user_agent",
}


# --------------------------------------------------------------------------- rendering


def render(dst: Path, addresses: dict[str, str], listen: dict[int, str] | None = None) -> Path:
    """Copy gateway/*.conf to dst, replacing `name:port` addresses and `listen <port>`."""
    for src in GATEWAY_DIR.rglob("*.conf"):
        text = src.read_text()
        for old, new in addresses.items():
            text = text.replace(old, new)
        for port, new in (listen or {}).items():
            text = re.sub(rf"\blisten {port}\b", f"listen {new}", text)
        out = dst / src.relative_to(GATEWAY_DIR)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return dst / "nginx.conf"


def _config_text() -> str:
    """All gateway config files, comments removed."""
    parts = [p.read_text() for p in sorted(GATEWAY_DIR.rglob("*.conf"))]
    return "\n".join(re.sub(r"(?m)^\s*#.*$|\s+#.*$", "", part) for part in parts)


def _unprivileged(cmd: list[str]) -> list[str]:
    """Run as `nobody` when we are root, to prove no root-owned path is needed."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *cmd]


def _workdir() -> Path:
    """A temporary directory nginx can use when it runs as `nobody` (world-traversable)."""
    work = Path(tempfile.mkdtemp(prefix="gw-test-"))
    work.chmod(0o755)
    (work / "prefix").mkdir()
    if os.geteuid() == 0:
        os.chown(work / "prefix", NOBODY, NOBODY)
    return work


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    # A missing nginx must fail the suite, not skip it.
    assert Path(NGINX).exists(), "nginx is not installed (Debian: apt-get install nginx)"
    return NGINX


# --------------------------------------------------------------------------- stub upstreams


class Stub:
    """A tiny HTTP/1.1 keep-alive upstream in its own thread; answers with what it received.

    `stopping=True` plays a replica that is shutting down: it answers the first request of
    each connection and closes the connection, unanswered, when another request arrives on it
    (the request nginx sends on an idle connection at the moment the replica closes it).
    """

    def __init__(self, name: str, *, stopping: bool = False) -> None:
        self.name = name
        self.stopping = stopping
        self.requests: list[dict[str, Any]] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(5), "stub upstream did not start"

    def _run(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._handle, sock=self._sock)
            ready.set()
            async with server:
                await self._stop.wait()

        self._loop.run_until_complete(main())
        self._loop.close()

    def close(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def find(self, request_id: str) -> dict[str, Any] | None:
        return next(
            (r for r in self.requests if r["headers"].get("x-request-id") == request_id), None
        )

    def _respond(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        record = {
            "service": self.name,
            "method": method,
            "target": target,
            "headers": headers,
            "body_len": len(body),
        }
        self.requests.append(record)
        request_id = headers.get("x-request-id")
        if target == "/message/404":
            return 404, {
                "error": {
                    "code": "NOT_FOUND",
                    "message": "stub: no such message",
                    "request_id": request_id,
                }
            }
        if target == "/message/503":
            error = {
                "code": "DATABASE_UNAVAILABLE",
                "message": "stub: database down",
                "request_id": request_id,
            }
            return 503, {"error": error}
        if target == "/message/405":
            # Like FastAPI for a known method on a route without it (its Allow: see _handle).
            error = {
                "code": "METHOD_NOT_ALLOWED",
                "message": "stub: method not allowed",
                "request_id": request_id,
            }
            return 405, {"error": error}
        if target.startswith("/message/search"):
            return 200, {
                **record,
                "items": [{"id": i, "text": f"message number {i}"} for i in range(200)],
            }
        return 200, record

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for served in range(1_000_000):
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *lines = head.rstrip("\r\n").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                status, payload = self._respond(method, target, headers, body)
                if self.stopping and served:
                    return
                data = json.dumps(payload).encode()
                writer.write(
                    (
                        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                        "Content-Type: application/json\r\n"
                        f"Content-Length: {len(data)}\r\n"
                        + ("Allow: GET\r\n" if status == HTTPStatus.METHOD_NOT_ALLOWED else "")
                        # Like the services: the request id comes back (the gateway must not
                        # repeat it).
                        + f"X-Request-ID: {headers.get('x-request-id', '')}\r\n\r\n"
                    ).encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
def stubs() -> Iterator[dict[str, Stub]]:
    started = {"api-svc": Stub("api-svc"), "processor-svc": Stub("processor-svc")}
    yield started
    for stub in started.values():
        stub.close()


# --------------------------------------------------------------------------- nginx instances


class Gateway:
    """nginx from the rendered config, on free ports of 127.0.0.1, stopped by stop()."""

    def __init__(self, nginx: str, upstreams: dict[str, int]) -> None:
        self.work = _workdir()
        self.port, self.status_port = _free_port(), _free_port()
        addresses = {
            name_port: f"127.0.0.1:{upstreams[name_port.split(':')[0]]}"
            for name_port in COMPOSE_ADDRESSES
        }
        listen = {8080: f"127.0.0.1:{self.port}", 8081: f"127.0.0.1:{self.status_port}"}
        conf = render(self.work / "conf", addresses, listen)
        self.access_log = self.work / "prefix" / "stdout.log"
        self.error_log = self.work / "prefix" / "stderr.log"
        self.access_log.touch()
        if os.geteuid() == 0:  # /dev/stdout is reopened by the (unprivileged) master
            os.chown(self.access_log, NOBODY, NOBODY)
        cmd = [
            nginx,
            "-p",
            f"{self.work / 'prefix'}/",
            "-c",
            str(conf),
            "-e",
            "stderr",
            "-g",
            "daemon off;",
        ]
        with self.access_log.open("ab") as out, self.error_log.open("ab") as err:
            self.proc = subprocess.Popen(
                _unprivileged(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
        self._wait_listening()
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", timeout=15, trust_env=False
        )

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(
                    f"nginx exited with {self.proc.returncode}: {self.error_log.read_text()}"
                )
            try:
                for port in (self.port, self.status_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
            else:
                return
        self.stop()
        pytest.fail("nginx did not start listening within 10 s")

    def log_lines(self) -> list[dict[str, Any]]:
        return [
            json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()
        ]

    def stop(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful stop
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture(scope="module")
def gw(nginx_bin: str, stubs: dict[str, Stub]) -> Iterator[Gateway]:
    gateway = Gateway(nginx_bin, {name: stub.port for name, stub in stubs.items()})
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def broken_gw(nginx_bin: str) -> Iterator[Gateway]:
    """api-svc: nothing listens (connection refused). processor-svc: a listener whose accept
    queue is full, so connecting hangs until proxy_connect_timeout."""
    stalled = socket.create_server(("127.0.0.1", 0), backlog=0)
    stalled_port = int(stalled.getsockname()[1])
    fillers = []
    for _ in range(2):  # the first fills the queue, the second keeps a SYN pending
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", stalled_port))
        fillers.append(filler)
    gateway = Gateway(nginx_bin, {"api-svc": _free_port(), "processor-svc": stalled_port})
    yield gateway
    gateway.stop()
    for sock in [*fillers, stalled]:
        sock.close()


def call(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request with a fresh X-Request-ID unless one is given."""
    headers = {"X-Request-ID": uuid.uuid4().hex, **kwargs.pop("headers", {})}
    return gateway.client.request(method, path, headers=headers, **kwargs)


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert error["code"] == ENVELOPE_CODES[status]
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


# --------------------------------------------------------------------------- static checks


def test_nginx_t_passes_on_the_native_rendering(nginx_bin: str) -> None:
    """The native twin's rendering (name:port -> 127.0.0.1:port, nothing else) passes
    `nginx -t`, without root and without warnings."""
    work = _workdir()
    try:
        conf = render(work / "conf", COMPOSE_ADDRESSES)
        cmd = [nginx_bin, "-p", f"{work / 'prefix'}/", "-c", str(conf), "-e", "stderr", "-t"]
        # stdout: /dev/stdout is reopened by nginx, so it must be openable by the nginx user.
        result = subprocess.run(
            _unprivileged(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "test is successful" in result.stderr
        assert "[warn]" not in result.stderr, result.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_config_addresses_only_compose_names() -> None:
    """Every `host:port` in the config is a compose address of the contract's table."""
    found = set(re.findall(r"\b[a-z0-9.-]+:\d{2,5}\b", _config_text()))
    assert found == set(COMPOSE_ADDRESSES), found


def test_config_portable_and_tuned() -> None:
    """Directives the functional run cannot show (timeouts, pool sizes) or that must stay
    portable (nginx 1.22, unprivileged): asserted on the text."""
    text = _config_text()
    assert not re.search(r"^\s*user\s", text, re.M), "no `user`: unprivileged runs ignore it"
    assert re.search(r"^\s*pid\s+[^/\s][^;]*;", text, re.M), "pid must be relative to the prefix"
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert re.search(rf"^\s*{temp}_temp_path\s+[^/\s]", text, re.M), (
            f"{temp}_temp_path must be relative"
        )
    assert not re.search(r"^\s*server\s+\S+.*\bresolve\b", text, re.M), (
        "`resolve` needs nginx >= 1.27.3"
    )
    # 504 GATEWAY_TIMEOUT when a service is slower than this (the /process ~0.5 s fits easily).
    assert re.search(r"^\s*proxy_read_timeout\s+30s;", text, re.M)
    assert re.search(r"^\s*proxy_connect_timeout\s+3s;", text, re.M)
    assert re.search(r"^\s*proxy_http_version\s+1\.1;", text, re.M)
    assert re.search(r'^\s*proxy_set_header\s+Connection\s+"";', text, re.M)
    assert len(re.findall(r"^\s*keepalive\s+\d+;", text, re.M)) == 2, (
        "a keep-alive pool per upstream"
    )
    assert not re.search(r"^\s*proxy_intercept_errors\s+on", text, re.M), (
        "services' envelopes pass through"
    )
    assert re.search(r"^\s*server_tokens\s+off;", text, re.M)
    assert re.search(r"^\s*client_max_body_size\s+64k;", text, re.M)
    assert re.search(
        r"^\s*limit_req_zone\s+\$binary_remote_addr\s+zone=process_per_ip:\S+\s+rate=1000r/s;",
        text,
        re.M,
    )
    assert (
        len(re.findall(r"^\s*limit_req\s+zone=process_per_ip\s+burst=2000\s+nodelay;", text, re.M))
        == 3
    )
    assert re.search(r"^\s*error_page\s+504\s+@gateway_timeout;", text, re.M)
    # Swagger UI's own files come through the gateway (1.5 MB of script): compressed too.
    gzip_types = re.search(r"^\s*gzip_types\s+([^;]+);", text, re.M)
    assert gzip_types is not None
    assert {"text/javascript", "text/css"} <= set(gzip_types[1].split())


# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("method", "path", "service", "target"),
    [
        ("GET", "/health", "api-svc", "/health"),
        ("GET", "/message/1", "api-svc", "/message/1"),
        (
            "GET",
            "/message/search?q=hello%20world&limit=5",
            "api-svc",
            "/message/search?q=hello%20world&limit=5",
        ),
        ("POST", "/process", "processor-svc", "/process"),
        ("GET", "/api/docs", "api-svc", "/docs"),
        ("GET", "/api/docs/swagger-ui-bundle.js", "api-svc", "/docs/swagger-ui-bundle.js"),
        ("GET", "/api/openapi.json", "api-svc", "/openapi.json"),
        ("GET", "/api/message/1", "api-svc", "/message/1"),
        ("GET", "/api/message/search?q=x", "api-svc", "/message/search?q=x"),
        ("GET", "/processor/docs", "processor-svc", "/docs"),
        ("GET", "/processor/openapi.json", "processor-svc", "/openapi.json"),
        ("POST", "/processor/process", "processor-svc", "/process"),
    ],
)
def test_routes(gw: Gateway, method: str, path: str, service: str, target: str) -> None:
    response = call(gw, method, path, json={"data": "x"} if method == "POST" else None)
    assert response.status_code == 200, response.text
    echo = response.json()
    assert (echo["service"], echo["method"], echo["target"]) == (service, method, target)


@pytest.mark.parametrize(
    "path", ["/", "/nope", "/docs", "/openapi.json", "/ready", "/messages", "/process/x"]
)
def test_unknown_paths_get_404_envelope(gw: Gateway, stubs: dict[str, Stub], path: str) -> None:
    response = call(gw, "GET", path)
    assert_envelope(response, 404)
    assert all(stub.find(response.headers["x-request-id"]) is None for stub in stubs.values())


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/api/metrics",
        "/api/metrics/",
        "/processor/metrics",
        "/processor/metrics?x=1",
        "/api//metrics",
    ],
)
def test_metrics_not_reachable(gw: Gateway, stubs: dict[str, Stub], path: str) -> None:
    response = call(gw, "GET", path)
    assert_envelope(response, 404)
    assert all(stub.find(response.headers["x-request-id"]) is None for stub in stubs.values())


def test_trace_method_gets_405_envelope(gw: Gateway) -> None:
    assert_envelope(call(gw, "TRACE", "/health"), 405)


# The methods the gateway passes on to the services (conf.d/00-maps.conf, $unknown_method).
FORWARDED_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def test_the_allow_header_lists_the_methods_the_gateway_passes_on() -> None:
    text = _config_text()
    passed_on = re.search(r'"~\^\(([A-Z|]+)\):"\s+0;', text)
    assert passed_on, "the $unknown_method map changed shape"
    allow = re.search(r'map "\$status:\$upstream_status" \$allow \{[^}]*"405:"\s+"([^"]+)"', text)
    assert allow, "no Allow for the gateway's own 405"
    assert set(passed_on[1].split("|")) == FORWARDED_METHODS
    assert {m.strip() for m in allow[1].split(",")} == FORWARDED_METHODS


def allowed(response: httpx.Response) -> set[str]:
    values = response.headers.get_list("allow")
    assert len(values) == 1, values
    return {method.strip() for method in values[0].split(",")}


@pytest.mark.parametrize(
    ("method", "path"),
    [("TRACE", "/health"), ("TRACE", "/api/health"), ("PROPFIND", "/message/1"),
     ("FOO", "/process"), ("CONNECT", "/nope")],
)  # fmt: skip
def test_the_gateways_405_says_which_methods_it_allows(
    gw: Gateway, stubs: dict[str, Stub], method: str, path: str
) -> None:
    # RFC 9110 15.5.6: a 405 must carry Allow. The gateway refuses any method it does not
    # pass on, before routing: its Allow lists those it does.
    response = call(gw, method, path)
    assert_envelope(response, 405)
    assert allowed(response) == FORWARDED_METHODS
    # The named location of the envelope keeps the server's security headers.
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert all(stub.find(response.headers["x-request-id"]) is None for stub in stubs.values())


def test_a_services_own_405_keeps_its_own_allow(gw: Gateway) -> None:
    # A method the gateway passes on but the route lacks: the service answers, and its
    # Allow (the route's methods) is the true one; the gateway adds none of its own.
    response = call(gw, "POST", "/message/405")
    assert response.status_code == 405
    assert response.json()["error"]["message"].startswith("stub:")
    assert allowed(response) == {"GET"}


def test_the_status_listeners_405_allows_get_and_head(gw: Gateway) -> None:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{gw.status_port}", timeout=10, trust_env=False
    ) as status:
        response = status.post("/stub_status")
    assert_envelope(response, 405)
    assert allowed(response) == {"GET", "HEAD"}


def _raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client library would send these), read until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _assert_envelope(gw: Gateway, data: bytes, status: int) -> dict[str, str]:
    """Send ``data``: the answer is ``status`` as the JSON envelope; returns its headers."""
    got, headers, body = _raw(gw.port, data)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == ENVELOPE_CODES[status]
    assert error["request_id"] == headers["x-request-id"]
    return headers


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", 400),  # no Host
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 400),
        (
            b"POST /process HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + b"%x\r\n" % 70000 + b"a" * 70000 + b"\r\n0\r\n\r\n",
            413,
        ),
    ],
    ids=["garbage", "no-host", "uri-too-long", "header-too-large", "chunked-too-large"],
)
def test_malformed_requests_get_envelopes(gw: Gateway, data: bytes, status: int) -> None:
    _assert_envelope(gw, data, status)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /message/\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
        (b"GET /health?q=\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
        (b"POST /process HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 400),
        (b"FOO /message/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
        (b"BREW /message/\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
    ],
    ids=["raw-utf8-target", "raw-byte-query", "unknown-te", "http-2.0-line", "unknown-method",
         "unknown-method-and-raw-byte"],
)  # fmt: skip
def test_what_the_services_cannot_parse_gets_envelopes(
    gw: Gateway, stubs: dict[str, Stub], data: bytes, status: int
) -> None:
    """Raw non-ASCII bytes in the target and methods no service knows are refused by the
    gateway (the services' parser would answer plain text); 501/505 become a 400 envelope."""
    headers = _assert_envelope(gw, data, status)
    assert all(stub.find(headers["x-request-id"]) is None for stub in stubs.values())


def test_access_log_stays_utf8_json_whatever_the_bytes(gw: Gateway) -> None:
    """escape=json passes bytes >= 0x80 as they are: values that are not UTF-8 are cut there."""
    marker = uuid.uuid4().hex
    _raw(
        gw.port,
        b"GET /message/a\xff" + marker.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"X-Request-ID: " + marker.encode() + b"-1\r\nConnection: close\r\n\r\n",
    )
    _raw(
        gw.port,
        b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: \xc3\xa9\xe2\x82\r\n"
        b"X-Request-ID: " + marker.encode() + b"-2\r\nConnection: close\r\n\r\n",
    )
    call(
        gw,
        "GET",
        "/health",
        headers={"X-Request-ID": f"{marker}-3", "User-Agent": "\u00e9t\u00e9".encode()},
    )
    deadline = time.monotonic() + 5
    lines: dict[str, dict[str, Any]] = {}
    while len(lines) < 3 and time.monotonic() < deadline:
        raw = gw.access_log.read_bytes().decode("utf-8")  # raises on a byte that is not UTF-8
        lines = {
            entry["request_id"]: entry
            for entry in map(json.loads, filter(str.strip, raw.split("\n")))
            if entry["request_id"].startswith(marker)
        }
        time.sleep(0.05)
    assert lines[f"{marker}-1"]["uri"] == "/message/a(not UTF-8)"
    assert lines[f"{marker}-2"]["user_agent"] == "\u00e9(not UTF-8)"
    assert lines[f"{marker}-3"]["user_agent"] == "\u00e9t\u00e9"  # valid UTF-8 is kept


def test_prefix_without_slash_redirects_relative(gw: Gateway) -> None:
    response = call(gw, "GET", "/api")
    assert response.status_code == 301
    assert response.headers["location"] == "/api/"  # relative: the published port may differ


def test_service_errors_pass_through_unchanged(gw: Gateway) -> None:
    """The services' own envelopes (here 404 and 503) are not replaced by the gateway's."""
    for path, status, code in (
        ("/message/404", 404, "NOT_FOUND"),
        ("/message/503", 503, "DATABASE_UNAVAILABLE"),
    ):
        response = call(gw, "GET", path)
        assert response.status_code == status
        error = response.json()["error"]
        assert (error["code"], error["message"][:5]) == (code, "stub:")
        assert error["request_id"] == response.headers["x-request-id"]


# --------------------------------------------------------------------------- headers


def test_request_id_kept_from_client(gw: Gateway) -> None:
    response = call(gw, "GET", "/health", headers={"X-Request-ID": "client-id.1:2_3"})
    assert response.headers.get_list("x-request-id") == ["client-id.1:2_3"]
    assert response.json()["headers"]["x-request-id"] == "client-id.1:2_3"


@pytest.mark.parametrize("sent", [None, "", "bad id with spaces", "x" * 129, "<script>"])
def test_request_id_generated_when_missing_or_insane(gw: Gateway, sent: str | None) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent}
    response = gw.client.get("/health", headers=headers)
    generated = response.headers.get_list("x-request-id")
    assert len(generated) == 1, generated
    assert re.fullmatch(r"[0-9a-f]{32}", generated[0]), generated
    assert response.json()["headers"]["x-request-id"] == generated[0]


def test_trace_context_passes_through(gw: Gateway) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    response = call(
        gw,
        "POST",
        "/process",
        json={},
        headers={"traceparent": traceparent, "tracestate": tracestate},
    )
    received = response.json()["headers"]
    assert (received["traceparent"], received["tracestate"]) == (traceparent, tracestate)


def test_forwarded_headers(gw: Gateway) -> None:
    received = call(gw, "GET", "/api/message/1", headers={"X-Forwarded-For": "6.6.6.6"}).json()[
        "headers"
    ]
    assert received["x-forwarded-for"] == "127.0.0.1"  # the edge does not trust client claims
    assert received["x-real-ip"] == "127.0.0.1"
    assert received["x-forwarded-proto"] == "http"
    assert received["x-forwarded-prefix"] == "/api"
    assert "connection" not in received  # Connection "": keep-alive to the upstream
    assert "x-forwarded-prefix" not in call(gw, "GET", "/health").json()["headers"]


def test_security_headers(gw: Gateway) -> None:
    for response in (
        call(gw, "GET", "/health"),
        call(gw, "GET", "/nope"),
        call(gw, "GET", "/api/openapi.json"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["content-security-policy"] == DEFAULT_CSP
        assert response.headers["server"] == "nginx"  # server_tokens off: no version
    # The Swagger UI pages and their files: the same origin only, no inline script or style,
    # data: images (swagger-ui's CSS icons). The browser test (tests/e2e/test_swagger_ui.py)
    # proves the page works under exactly this with no violation.
    for path in ("/api/docs", "/processor/docs", "/api/docs/swagger-ui-init.js"):
        csp = call(gw, "GET", path).headers["content-security-policy"]
        assert csp == DOCS_CSP, (path, csp)
    for path in ("/api/docsx", "/api/openapi.json", "/docs", "/api/message/docs"):
        assert call(gw, "GET", path).headers["content-security-policy"] == DEFAULT_CSP, path


def test_the_docs_csp_allows_no_inline_script_and_no_other_host() -> None:
    directives = dict(d.strip().split(" ", 1) for d in DOCS_CSP.split(";"))
    assert directives["script-src"] == "'self'"
    assert "'unsafe-inline'" not in DOCS_CSP
    assert "'unsafe-eval'" not in DOCS_CSP
    assert not re.search(r"https?:|\*", DOCS_CSP)
    assert directives["default-src"] == "'none'"  # nothing that is not named below


def test_gzip_for_json(gw: Gateway) -> None:
    response = call(gw, "GET", "/message/search?q=x", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["vary"]
    assert len(response.json()["items"]) == 200  # httpx decompressed it
    assert (
        "content-encoding"
        not in call(
            gw, "GET", "/message/search?q=x", headers={"Accept-Encoding": "identity"}
        ).headers
    )


# --------------------------------------------------------------------------- limits and failures


def test_body_up_to_64_kib_passes_and_larger_gets_413(gw: Gateway, stubs: dict[str, Stub]) -> None:
    ok = call(
        gw, "POST", "/process", content=b"x" * 65536, headers={"Content-Type": "application/json"}
    )
    assert ok.status_code == 200
    assert ok.json()["body_len"] == 65536
    too_big = call(
        gw,
        "POST",
        "/process",
        content=b"x" * 65 * 1024,
        headers={"Content-Type": "application/json"},
    )
    assert_envelope(too_big, 413)
    assert stubs["processor-svc"].find(too_big.headers["x-request-id"]) is None


def test_upstream_down_gets_502_envelope(broken_gw: Gateway) -> None:
    assert_envelope(call(broken_gw, "GET", "/health"), 502)
    assert_envelope(call(broken_gw, "GET", "/api/docs"), 502)


@pytest.mark.parametrize(
    ("method", "path", "sent_again"),
    [
        ("POST", "/process", True),
        ("POST", "/processor/process", True),
        ("GET", "/health", True),
        # A POST route that has not opted in: nginx never sends it twice.
        ("POST", "/message", False),
    ],
)
def test_a_request_on_a_connection_the_service_closes_is_sent_again_where_safe(
    nginx_bin: str, method: str, path: str, *, sent_again: bool
) -> None:
    """A stopping replica closes its idle kept-alive connections (a rolling restart). A
    request nginx sends on one as it closes goes out again on a new connection when the
    route allows it, with the same X-Request-ID; otherwise the client gets a 502 envelope."""
    stopping = Stub("stopping", stopping=True)
    gateway = Gateway(nginx_bin, {"api-svc": stopping.port, "processor-svc": stopping.port})
    try:
        # One client connection, so one nginx worker and its one pool: the first request
        # opens the upstream connection, the second one finds it kept alive.
        first = call(gateway, method, path, json={"data": "first"})
        assert first.status_code == 200, first.text
        second = call(gateway, method, path, json={"data": "second"})
        request_id = second.headers["x-request-id"]
        seen = [r for r in stopping.requests if r["headers"].get("x-request-id") == request_id]
        if sent_again:
            assert second.status_code == 200, second.text
            assert len(seen) == 2, seen
        else:
            assert_envelope(second, 502)
            assert len(seen) == 1, seen
    finally:
        gateway.stop()
        stopping.close()


def test_upstream_not_answering_gets_504_envelope(broken_gw: Gateway) -> None:
    """A connection the upstream never accepts: 504 after proxy_connect_timeout (3 s).

    A read past proxy_read_timeout (30 s) gives the same 504; that value is asserted in
    test_config_portable_and_tuned rather than waited for.
    """
    started = time.monotonic()
    response = call(broken_gw, "POST", "/process", json={"data": "x"})
    elapsed = time.monotonic() - started
    assert_envelope(response, 504)
    assert 2.5 < elapsed < 10, elapsed


async def _burst(
    port: int, request: bytes, connections: int, per_connection: int
) -> list[tuple[int, dict[str, str], bytes]]:
    """The same request pipelined on keep-alive connections; returns (status, headers, body)."""

    async def one_connection() -> list[tuple[int, dict[str, str], bytes]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request * per_connection)
        await writer.drain()
        answers = []
        for _ in range(per_connection):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, *lines = head.rstrip("\r\n").split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)
            }
            body = await reader.readexactly(int(headers["content-length"]))
            answers.append((int(status_line.split()[1]), headers, body))
        writer.close()
        return answers

    results = await asyncio.wait_for(
        asyncio.gather(*(one_connection() for _ in range(connections))), 60
    )
    return [answer for answers in results for answer in answers]


@pytest.mark.parametrize(
    ("request_bytes", "admitted_status"),
    [
        # processor-svc points at a closed port: nginx answers each admitted request at once
        # (502), so the burst's pace depends on nginx alone, not on a Python upstream.
        (
            b"POST /process HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            502,
        ),
        # The end-to-end recipe: the blocked metrics path counts in the same bucket and is
        # answered by nginx (404), so a burst never loads processor-svc.
        (b"GET /processor/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404),
    ],
    ids=["process", "processor-metrics"],
)
def test_rate_limit_gives_429_envelope(
    nginx_bin: str, stubs: dict[str, Stub], request_bytes: bytes, admitted_status: int
) -> None:
    """1000 req/s + burst 2000 per address: 5000 back-to-back requests exceed it."""
    upstreams = {"api-svc": stubs["api-svc"].port, "processor-svc": _free_port()}
    gateway = Gateway(nginx_bin, upstreams)  # a fresh, empty bucket
    try:
        # In a thread of its own: never touch the event loop of the test session (pytest-asyncio).
        with ThreadPoolExecutor(max_workers=1) as pool:
            burst = _burst(gateway.port, request_bytes, connections=40, per_connection=125)
            answers = pool.submit(asyncio.run, burst).result(90)
    finally:
        gateway.stop()
    statuses = [status for status, _, _ in answers]
    assert len(statuses) == 5000
    assert set(statuses) <= {admitted_status, 429}, set(statuses)
    assert statuses.count(admitted_status) >= 2000, "the burst of 2000 must pass the limiter"
    limited = [(headers, body) for status, headers, body in answers if status == 429]
    assert limited, "no 429 after 5000 back-to-back requests"
    headers, body = limited[0]
    error = json.loads(body)["error"]
    assert error["code"] == "RATE_LIMITED"
    assert error["request_id"] == headers["x-request-id"]
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "1"


# --------------------------------------------------------------------------- logs and status


def test_access_log_is_json_with_the_fields(gw: Gateway) -> None:
    request_id = uuid.uuid4().hex
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    call(
        gw,
        "GET",
        "/message/1?x=1",
        headers={"X-Request-ID": request_id, "traceparent": traceparent, "User-Agent": "gw-test"},
    )
    deadline = time.monotonic() + 5
    line = None
    while line is None and time.monotonic() < deadline:
        line = next((entry for entry in gw.log_lines() if entry["request_id"] == request_id), None)
        time.sleep(0.05)
    assert line is not None, "no access log line for the request"
    assert set(line) >= ACCESS_LOG_FIELDS
    assert (line["service"], line["level"], line["method"], line["uri"]) == (
        "gateway",
        "info",
        "GET",
        "/message/1?x=1",
    )
    assert line["status"] == 200
    assert isinstance(line["bytes"], int)
    assert isinstance(line["request_time"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", line["time"])
    assert line["upstream_addr"].startswith("127.0.0.1:")
    assert line["upstream_response_time"] != "-"
    assert (line["remote_addr"], line["user_agent"]) == ("127.0.0.1", "gw-test")
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_status_listener(gw: Gateway) -> None:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{gw.status_port}", timeout=10, trust_env=False
    ) as status:
        stub_status = status.get("/stub_status")
        assert stub_status.status_code == 200
        assert "Active connections:" in stub_status.text
        assert status.get("/health").json() == {"status": "healthy"}
        assert_envelope(status.get("/other"), 404)

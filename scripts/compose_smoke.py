#!/usr/bin/env python3
"""Smoke test of the running compose stack: requests through the gateway, then their traces.

Run after `docker compose up -d --build --wait` (CI job `compose-smoke`, or by hand after
`make up`). Standard library only: any python3 >= 3.11 runs it, no virtualenv needed.

Checks, in order (the first failure stops the run with exit status 1):
  gateway     /health, /message/1, /message/search, POST /process, both Swagger UIs with
              swagger-ui's files (the images must ship them) and both OpenAPI documents
              answer; /metrics, /api/metrics, /processor/metrics are 404.
  probe       GET /message/1 and POST /process with one known W3C `traceparent` (sampled)
              and known X-Request-IDs, echoed back by the gateway.
  grafana     /api/health, the four provisioned data sources, the `services-overview`
              dashboard found by /api/search.
  prometheus  every target of every scrape job is up; the probe's requests are counted in
              app_http_requests_total.
  loki        the probe's access lines (api-svc, processor-svc, gateway) found by request id,
              the services' lines carrying the probe's trace id.
  tempo       the probe's trace, with spans of both api-svc and processor-svc.

Prometheus, Loki and Tempo are not published on the host. They are queried through Grafana's
data source proxy (/api/datasources/proxy/uid/<uid>/..., as the admin from .env), which also
proves the data sources point at the right places; `--via exec` instead runs busybox wget
inside the prometheus container (`docker compose exec -T prometheus wget ...`).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol, TypeVar

ROOT = Path(__file__).resolve().parents[1]

# Every scrape job of observability/prometheus/prometheus.yml; in compose all of them run.
SCRAPE_JOBS = (
    "api-svc",
    "processor-svc",
    "node",
    "postgres",
    "nginx",
    "prometheus",
    "alertmanager",
    "tempo",
    "loki",
    "grafana",
    "alloy",
)
# observability/grafana/provisioning/datasources/datasources.yml: uid -> type.
DATASOURCES = {
    "prometheus": "prometheus",
    "loki": "loki",
    "tempo": "tempo",
    "alertmanager": "alertmanager",
}
DASHBOARD_UID = "services-overview"
DASHBOARD_QUERY = "Services"
TRACED_SERVICES = frozenset({"api-svc", "processor-svc"})

HTTP_TIMEOUT = 10.0
POLL_INTERVAL = 3.0
# docker compose exec -T prometheus wget ...: addresses as seen from inside that container.
EXEC_CONTAINER = "prometheus"
EXEC_URLS = {
    "prometheus": "http://127.0.0.1:9090",
    "loki": "http://loki:3100",
    "tempo": "http://tempo:3200",
}

T = TypeVar("T")

# Every address is local (published ports on the host): never through an HTTP(S)_PROXY.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SmokeError(Exception):
    """A check failed (or, inside `poll`, is not satisfied yet); the message says why."""


# --------------------------------------------------------------------------- HTTP
@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def snippet(self, limit: int = 300) -> str:
        text = self.body[:limit].decode("utf-8", "replace").replace("\n", " ")
        return text + ("..." if len(self.body) > limit else "")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise SmokeError(f"response is not JSON: {self.snippet()!r}") from exc

    def expect(self, status: int, what: str) -> Response:
        if self.status != status:
            raise SmokeError(f"{what}: HTTP {self.status}, expected {status}: {self.snippet()!r}")
        return self


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = HTTP_TIMEOUT,
) -> Response:
    """One HTTP exchange. Any status is a Response; only transport errors raise SmokeError."""
    if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
        raise SmokeError(f"refusing a non-HTTP URL: {url}")
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))  # noqa: S310 (scheme checked above)
    try:
        with _OPENER.open(request, timeout=timeout) as reply:
            return Response(reply.status, _lower(reply.headers.items()), reply.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, _lower(exc.headers.items()), exc.read())
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
        reason = getattr(exc, "reason", exc)
        raise SmokeError(f"{method} {url}: {reason}") from exc


def _lower(items: Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in items}


def with_query(url: str, params: Mapping[str, str] | None) -> str:
    return f"{url}?{urllib.parse.urlencode(params)}" if params else url


class Client:
    """A base URL plus default headers."""

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})

    def get(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        url = with_query(self.base_url + path, params)
        return http_request("GET", url, headers={**self.headers, **(headers or {})})

    def post_json(
        self, path: str, payload: Any, headers: Mapping[str, str] | None = None
    ) -> Response:
        all_headers = {**self.headers, "Content-Type": "application/json", **(headers or {})}
        body = json.dumps(payload).encode()
        return http_request("POST", self.base_url + path, headers=all_headers, body=body)


# --------------------------------------------------------------------------- backends
class Backends(Protocol):
    """GET on Prometheus, Loki or Tempo (by data source uid), however they are reached."""

    def get(self, datasource: str, path: str, params: Mapping[str, str] | None = None) -> Response:
        """`path` is relative to the backend's root, without a leading slash."""
        ...


class GrafanaProxy:
    def __init__(self, grafana: Client) -> None:
        self.grafana = grafana

    def get(self, datasource: str, path: str, params: Mapping[str, str] | None = None) -> Response:
        return self.grafana.get(f"/api/datasources/proxy/uid/{datasource}/{path}", params)


class ComposeExec:
    """busybox wget in the prometheus container (the observability network, no host port)."""

    def get(self, datasource: str, path: str, params: Mapping[str, str] | None = None) -> Response:
        url = with_query(f"{EXEC_URLS[datasource]}/{path}", params)
        command = ["docker", "compose", "exec", "-T", EXEC_CONTAINER]
        command += ["wget", "-q", "-T", str(int(HTTP_TIMEOUT)), "-O", "-", url]
        try:
            done = subprocess.run(  # noqa: S603 (fixed argv, no shell)
                command, cwd=ROOT, capture_output=True, timeout=HTTP_TIMEOUT + 10, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SmokeError(f"{' '.join(command)}: {exc}") from exc
        if done.returncode != 0:
            # busybox wget exits 1 on any HTTP error and says which on stderr.
            stderr = done.stderr.decode("utf-8", "replace").strip()
            raise SmokeError(f"wget {url} in {EXEC_CONTAINER}: exit {done.returncode}: {stderr}")
        return Response(HTTPStatus.OK, {}, done.stdout)


# --------------------------------------------------------------------------- running checks
class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()


def poll(what: str, attempt: Callable[[], T], *, limit: float, deadline: Deadline) -> T:
    """Call `attempt` until it returns; each SmokeError it raises means "not yet"."""
    budget = max(0.0, min(limit, deadline.remaining()))
    stop = time.monotonic() + budget
    while True:
        try:
            return attempt()
        except SmokeError as exc:
            last = str(exc)
        if time.monotonic() + POLL_INTERVAL > stop:
            raise SmokeError(f"{what}: still failing after {budget:.0f} s; last error: {last}")
        time.sleep(POLL_INTERVAL)


class Runner:
    def __init__(self) -> None:
        self.passed = 0
        self.started = time.monotonic()

    def check(self, name: str, run: Callable[[], str]) -> None:
        try:
            detail = run()
        except SmokeError as exc:
            print(f"compose-smoke: FAIL {name}: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        self.passed += 1
        print(f"  ok  {name}" + (f": {detail}" if detail else ""), flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


# --------------------------------------------------------------------------- JSON helpers
def as_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SmokeError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise SmokeError(f"{what}: expected a JSON array, got {type(value).__name__}")
    return value


def error_code(response: Response) -> str:
    """The `error.code` of the JSON error envelope."""
    envelope = as_dict(response.json(), "error envelope")
    return str(as_dict(envelope.get("error"), "error envelope's `error`").get("code"))


# --------------------------------------------------------------------------- gateway
def check_gateway(runner: Runner, gateway: Client, deadline: Deadline) -> None:
    def health() -> str:
        def attempt() -> str:
            body = gateway.get("/health").expect(HTTPStatus.OK, "GET /health").json()
            if body != {"status": "healthy"}:
                raise SmokeError(f"GET /health: unexpected body {body!r}")
            return '200 {"status": "healthy"}'

        return poll("GET /health", attempt, limit=60, deadline=deadline)

    def message() -> str:
        body = as_dict(
            gateway.get("/message/1").expect(HTTPStatus.OK, "GET /message/1").json(), "message"
        )
        if body.get("id") != 1 or not isinstance(body.get("text"), str):
            raise SmokeError(f"GET /message/1: unexpected body {body!r}")
        return f"200 {body['text']!r}"

    def search() -> str:
        response = gateway.get("/message/search", {"q": "zulu"})
        body = as_dict(response.expect(HTTPStatus.OK, "GET /message/search").json(), "search")
        results = as_list(body.get("results"), "search results")
        return f"200, {len(results)} result(s) for q=zulu"

    def process() -> str:
        response = gateway.post_json("/process", {"data": "smoke"})
        body = as_dict(response.expect(HTTPStatus.OK, "POST /process").json(), "process")
        if body.get("echo") != "smoke" or body.get("length") != len("smoke"):
            raise SmokeError(f"POST /process: unexpected body {body!r}")
        return '200 echo "smoke"'

    def docs(prefix: str) -> Callable[[], str]:
        def run() -> str:
            page = gateway.get(f"{prefix}/docs").expect(HTTPStatus.OK, f"GET {prefix}/docs")
            if "swagger" not in page.body.decode("utf-8", "replace").lower():
                raise SmokeError(f"GET {prefix}/docs: no Swagger UI in {page.snippet()!r}")
            # The image must ship swagger-ui's files (the page loads nothing from elsewhere).
            for name in ("swagger-ui-bundle.js", "swagger-ui-init.js"):
                path = f"{prefix}/docs/{name}"
                asset = gateway.get(path).expect(HTTPStatus.OK, f"GET {path}")
                content_type = asset.headers.get("content-type", "")
                if not content_type.startswith("text/javascript"):
                    raise SmokeError(f"GET {path}: content-type {content_type!r}")
            spec = gateway.get(f"{prefix}/openapi.json")
            paths = as_dict(spec.expect(HTTPStatus.OK, f"{prefix}/openapi.json").json(), "spec")
            if not paths.get("paths"):
                raise SmokeError(f"GET {prefix}/openapi.json: no paths")
            return f"Swagger UI, its files and openapi.json ({len(paths['paths'])} paths)"

        return run

    def metrics_hidden() -> str:
        for path in ("/metrics", "/api/metrics", "/processor/metrics"):
            response = gateway.get(path).expect(HTTPStatus.NOT_FOUND, f"GET {path}")
            if (code := error_code(response)) != "NOT_FOUND":
                raise SmokeError(f"GET {path}: error code {code!r}, expected 'NOT_FOUND'")
        return "404 NOT_FOUND on /metrics, /api/metrics, /processor/metrics"

    runner.check("gateway GET /health", health)
    runner.check("gateway GET /message/1", message)
    runner.check("gateway GET /message/search?q=zulu", search)
    runner.check("gateway POST /process", process)
    runner.check("gateway /api/docs", docs("/api"))
    runner.check("gateway /processor/docs", docs("/processor"))
    runner.check("gateway hides the metrics", metrics_hidden)


# --------------------------------------------------------------------------- the traced probe
@dataclass(frozen=True)
class Probe:
    trace_id: str
    api_request_id: str
    processor_request_id: str
    since_ns: int


def send_probe(runner: Runner, gateway: Client) -> Probe:
    tag = secrets.token_hex(6)
    probe = Probe(
        trace_id=secrets.token_hex(16),
        api_request_id=f"smoke-{tag}-api",
        processor_request_id=f"smoke-{tag}-processor",
        since_ns=time.time_ns() - 300 * 10**9,
    )

    def headers(request_id: str) -> dict[str, str]:
        # A new parent span id per request, one trace id for all; 01 = sampled.
        return {
            "traceparent": f"00-{probe.trace_id}-{secrets.token_hex(8)}-01",
            "X-Request-ID": request_id,
        }

    def echoed(response: Response, request_id: str, what: str) -> None:
        response.expect(HTTPStatus.OK, what)
        if response.headers.get("x-request-id") != request_id:
            got = response.headers.get("x-request-id")
            raise SmokeError(f"{what}: X-Request-ID {got!r}, expected {request_id!r}")

    def send() -> str:
        for _ in range(3):
            response = gateway.get("/message/1", headers=headers(probe.api_request_id))
            echoed(response, probe.api_request_id, "traced GET /message/1")
        response = gateway.post_json(
            "/process", {"data": "smoke"}, headers=headers(probe.processor_request_id)
        )
        echoed(response, probe.processor_request_id, "traced POST /process")
        return (
            f"trace {probe.trace_id}, request ids {probe.api_request_id} (3x GET /message/1),"
            f" {probe.processor_request_id} (POST /process)"
        )

    runner.check("traced requests through the gateway", send)
    return probe


# --------------------------------------------------------------------------- grafana
def check_grafana(runner: Runner, grafana: Client, deadline: Deadline, limit: float) -> None:
    def health() -> str:
        def attempt() -> str:
            body = as_dict(
                grafana.get("/api/health").expect(HTTPStatus.OK, "/api/health").json(), "health"
            )
            if body.get("database") != "ok":
                raise SmokeError(f"/api/health: {body!r}")
            return f"version {body.get('version')}, database ok"

        return poll("Grafana /api/health", attempt, limit=60, deadline=deadline)

    def datasources() -> str:
        for uid, kind in DATASOURCES.items():
            response = grafana.get(f"/api/datasources/uid/{uid}")
            body = as_dict(response.expect(HTTPStatus.OK, f"data source {uid}").json(), uid)
            if body.get("type") != kind:
                raise SmokeError(f"data source {uid}: type {body.get('type')!r}, expected {kind!r}")
        return ", ".join(DATASOURCES)

    def dashboard() -> str:
        def attempt() -> str:
            response = grafana.get("/api/search", {"query": DASHBOARD_QUERY, "type": "dash-db"})
            hits = as_list(response.expect(HTTPStatus.OK, "/api/search").json(), "search")
            for hit in hits:
                if isinstance(hit, dict) and hit.get("uid") == DASHBOARD_UID:
                    return (
                        f"{hit.get('title')!r} (uid {DASHBOARD_UID}) in {hit.get('folderTitle')!r}"
                    )
            uids = [hit.get("uid") for hit in hits if isinstance(hit, dict)]
            raise SmokeError(
                f"/api/search?query={DASHBOARD_QUERY}: uid {DASHBOARD_UID} not in {uids}"
            )

        return poll("dashboard search", attempt, limit=limit, deadline=deadline)

    runner.check("grafana /api/health", health)
    runner.check("grafana data sources (admin basic auth)", datasources)
    runner.check("grafana dashboard listed", dashboard)


# --------------------------------------------------------------------------- prometheus
def check_prometheus(runner: Runner, backends: Backends, deadline: Deadline, limit: float) -> None:
    def targets() -> str:
        def attempt() -> str:
            response = backends.get("prometheus", "api/v1/targets", {"state": "active"})
            data = as_dict(response.expect(HTTPStatus.OK, "/api/v1/targets").json(), "targets")
            active = as_list(as_dict(data.get("data"), "data").get("activeTargets"), "targets")
            by_job: dict[str, list[dict[str, Any]]] = {}
            for item in active:
                target = as_dict(item, "target")
                job = str(as_dict(target.get("labels"), "labels").get("job"))
                by_job.setdefault(job, []).append(target)
            problems = []
            for job in SCRAPE_JOBS:
                if not by_job.get(job):
                    problems.append(f"{job}: no target")
                problems.extend(
                    f"{job} {t.get('scrapeUrl')}: {t.get('health')} {t.get('lastError')!r}"
                    for t in by_job.get(job, [])
                    if t.get("health") != "up"
                )
            if problems:
                raise SmokeError("targets not up: " + "; ".join(problems))
            count = sum(len(by_job[job]) for job in SCRAPE_JOBS)
            return f"{count} targets of {len(SCRAPE_JOBS)} jobs up"

        return poll("Prometheus targets", attempt, limit=limit, deadline=deadline)

    def counted() -> str:
        queries = {
            "api-svc": 'app_http_requests_total{service="api-svc",route="/message/{id}"}',
            "processor-svc": 'app_http_requests_total{service="processor-svc",route="/process"}',
        }

        def attempt() -> str:
            found = []
            for service, query in queries.items():
                response = backends.get("prometheus", "api/v1/query", {"query": query})
                data = as_dict(response.expect(HTTPStatus.OK, "/api/v1/query").json(), "query")
                result = as_list(as_dict(data.get("data"), "data").get("result"), "result")
                if not result:
                    raise SmokeError(f"no series yet for {query}")
                total = sum(float(as_dict(r, "sample")["value"][1]) for r in result)
                found.append(f"{service} {total:.0f}")
            return "app_http_requests_total: " + ", ".join(found)

        return poll("app_http_requests_total", attempt, limit=limit, deadline=deadline)

    runner.check("prometheus targets up", targets)
    runner.check("prometheus counts the requests", counted)


# --------------------------------------------------------------------------- loki
def find_log_line(
    backends: Backends,
    probe: Probe,
    service: str,
    request_id: str,
    *,
    with_trace: bool,
) -> dict[str, Any]:
    query = f'{{service="{service}"}} |= "{request_id}"'
    params = {
        "query": query,
        "start": str(probe.since_ns),
        "end": str(time.time_ns() + 60 * 10**9),
        "limit": "50",
        "direction": "backward",
    }
    response = backends.get("loki", "loki/api/v1/query_range", params)
    data = as_dict(response.expect(HTTPStatus.OK, "query_range").json(), "query_range")
    lines = []
    for stream in as_list(as_dict(data.get("data"), "data").get("result"), "result"):
        # Each value is [timestamp, line] (plus metadata with categorize-labels encoding).
        for value in as_list(as_dict(stream, "stream").get("values"), "values"):
            try:
                record = json.loads(as_list(value, "value")[1])
            except (ValueError, TypeError, IndexError):
                continue
            if isinstance(record, dict) and record.get("request_id") == request_id:
                lines.append(record)
    if not lines:
        raise SmokeError(f"no line yet for {query}")
    if not with_trace:
        return lines[0]
    access = [r for r in lines if r.get("event") == "request"]
    if not access:
        raise SmokeError(f"{query}: {len(lines)} line(s) but no access line (event=request)")
    if not any(r.get("trace_id") == probe.trace_id for r in access):
        ids = sorted({str(r.get("trace_id")) for r in access})
        raise SmokeError(f"{query}: access lines carry trace ids {ids}, not {probe.trace_id}")
    return access[0]


def check_loki(
    runner: Runner, backends: Backends, probe: Probe, deadline: Deadline, limit: float
) -> None:
    wanted = (
        ("api-svc", probe.api_request_id, True),
        ("processor-svc", probe.processor_request_id, True),
        ("gateway", probe.api_request_id, False),
    )

    def line_check(service: str, request_id: str, with_trace: bool) -> Callable[[], str]:
        def attempt() -> str:
            record = find_log_line(backends, probe, service, request_id, with_trace=with_trace)
            shown = {k: record.get(k) for k in ("level", "method", "route", "uri", "status")}
            return ", ".join(f"{k}={v}" for k, v in shown.items() if v is not None)

        return lambda: poll(f"Loki {service} line", attempt, limit=limit, deadline=deadline)

    for service, request_id, with_trace in wanted:
        runner.check(
            f"loki has the {service} access line", line_check(service, request_id, with_trace)
        )


# --------------------------------------------------------------------------- tempo
def trace_services(document: Any) -> tuple[set[str], int]:
    """Service names and span count of a Tempo trace (v1 `batches` or OTLP `resourceSpans`)."""
    doc = as_dict(document, "trace")
    if isinstance(doc.get("trace"), dict):  # /api/v2/traces wraps it
        doc = doc["trace"]
    services: set[str] = set()
    spans = 0
    for item in as_list(doc.get("batches") or doc.get("resourceSpans") or [], "batches"):
        batch = as_dict(item, "batch")
        resource = as_dict(batch.get("resource") or {}, "resource")
        for entry in as_list(resource.get("attributes") or [], "attributes"):
            attribute = as_dict(entry, "attribute")
            if attribute.get("key") == "service.name":
                services.add(str(as_dict(attribute.get("value"), "value").get("stringValue")))
        scopes = batch.get("scopeSpans") or batch.get("instrumentationLibrarySpans") or []
        for scope in as_list(scopes, "scopeSpans"):
            spans += len(as_list(as_dict(scope, "scope").get("spans") or [], "spans"))
    return services, spans


def check_tempo(
    runner: Runner, backends: Backends, probe: Probe, deadline: Deadline, limit: float
) -> None:
    def attempt() -> str:
        response = backends.get("tempo", f"api/traces/{probe.trace_id}")
        if response.status == HTTPStatus.NOT_FOUND:
            raise SmokeError(f"trace {probe.trace_id} not found (yet)")
        services, spans = trace_services(response.expect(HTTPStatus.OK, "api/traces").json())
        if missing := TRACED_SERVICES - services:
            raise SmokeError(
                f"trace has spans of {sorted(services)}, none yet of {sorted(missing)}"
            )
        return f"trace {probe.trace_id}: {spans} spans of {', '.join(sorted(services))}"

    runner.check(
        "tempo has the trace",
        lambda: poll("Tempo trace", attempt, limit=limit, deadline=deadline),
    )


# --------------------------------------------------------------------------- configuration
def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":  # noqa: PLR2004
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


def host_address(bind: str) -> str:
    """Where the published ports answer: BIND_ADDRESS, or loopback when it is a wildcard."""
    try:
        address = ipaddress.ip_address(bind.strip("[]"))
    except ValueError:
        return bind or "127.0.0.1"
    if address.is_unspecified:
        return "127.0.0.1"
    return f"[{address}]" if address.version == 6 else str(address)  # noqa: PLR2004


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="compose_smoke.py",
        description="Smoke-test the running compose stack through the gateway and Grafana "
        "(Prometheus targets, Loki logs, Tempo traces, the dashboard).",
        epilog="Settings come from the environment, then the env file (GATEWAY_PORT, "
        "GRAFANA_PORT, BIND_ADDRESS, GRAFANA_ADMIN_USER, GRAFANA_ADMIN_PASSWORD).",
    )
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env", help="default: .env")
    parser.add_argument("--gateway-url", help="default: http://<BIND_ADDRESS>:<GATEWAY_PORT>")
    parser.add_argument("--grafana-url", help="default: http://<BIND_ADDRESS>:<GRAFANA_PORT>")
    parser.add_argument(
        "--via",
        choices=("grafana", "exec"),
        default="grafana",
        help="reach Prometheus/Loki/Tempo through Grafana's data source proxy (default) or "
        "with `docker compose exec -T prometheus wget`",
    )
    parser.add_argument(
        "--timeout", type=float, default=330, help="overall bound in seconds (default 330)"
    )
    parser.add_argument(
        "--poll-timeout",
        type=float,
        default=90,
        help="bound of each wait for data to show up, in seconds (default 90)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = {**read_env_file(args.env_file), **os.environ}
    host = host_address(settings.get("BIND_ADDRESS", "127.0.0.1"))
    gateway_url = args.gateway_url or f"http://{host}:{settings.get('GATEWAY_PORT') or 8080}"
    grafana_url = args.grafana_url or f"http://{host}:{settings.get('GRAFANA_PORT') or 3000}"
    password = settings.get("GRAFANA_ADMIN_PASSWORD", "")
    if not password:
        print(
            f"compose-smoke: GRAFANA_ADMIN_PASSWORD is not set (environment or {args.env_file})",
            file=sys.stderr,
        )
        return 2
    user = settings.get("GRAFANA_ADMIN_USER") or "admin"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    grafana = Client(grafana_url, {"Authorization": f"Basic {token}", "Accept": "application/json"})
    gateway = Client(gateway_url, {"Accept": "application/json"})
    backends: Backends = GrafanaProxy(grafana) if args.via == "grafana" else ComposeExec()

    deadline = Deadline(args.timeout)
    runner = Runner()
    print(
        f"compose-smoke: gateway {gateway_url}, grafana {grafana_url}, "
        f"backends via {args.via}, at most {args.timeout:.0f} s",
        flush=True,
    )
    check_gateway(runner, gateway, deadline)
    probe = send_probe(runner, gateway)
    check_grafana(runner, grafana, deadline, args.poll_timeout)
    check_prometheus(runner, backends, deadline, args.poll_timeout)
    check_loki(runner, backends, probe, deadline, args.poll_timeout)
    check_tempo(runner, backends, probe, deadline, args.poll_timeout)
    print(f"compose-smoke: all {runner.passed} checks passed in {runner.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

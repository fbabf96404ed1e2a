"""``make bench``: what full observability costs, measured on the native twin.

    uv run --frozen python -m stackctl.bench

One native stack (temporary STACK_DIR, ports as the environment says: STACK_PORT_OFFSET) whose
own api-svc and processor-svc are the **full** variant, exporting spans to a local OTLP/HTTP
sink; beside it the **bare** variant (the same services, instrumentation switched off by
settings) and the **peer** (the same services instrumented the usual way, stackctl.bench_peer),
each a gunicorn pair with 2 workers on ports of its own, bare with its own gateway too. Load is
wrk (and hey for /metrics scrapes), one measurement at a time, variants alternating in rotated
order, ``BENCH_ROUNDS`` rounds, medians reported. bench/README.md explains the method; the
result goes to bench/results.json and a Markdown table on stdout.
"""

import json
import operator
import os
import platform
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from math import ceil
from pathlib import Path
from types import FrameType
from typing import Any

from stackctl.addresses import REPO, render_tree
from stackctl.native import NativeStack, running_stack
from stackctl.ports import port_is_free
from stackctl.processes import ComponentFailedError, ServiceProcess, gunicorn_argv, spawn

VARIANTS = ("bare", "full", "peer")
# Through the gateway too (the hop's cost, and the ratio as a client sees it).
GATEWAY_VARIANTS = ("bare", "full")
SERVICES = ("api-svc", "processor-svc")
COMPOSE_PORTS = {"api-svc": 8000, "processor-svc": 8001, "gateway": 8080, "gateway-status": 8081}
BARE_ENV = {"METRICS_ENABLED": "false", "ACCESS_LOG_ENABLED": "false", "TRACING_ENABLED": "false"}
SERVICE_APPS = {"api-svc": "api_svc.main:app", "processor-svc": "processor_svc.main:app"}
PEER_APPS = {
    "api-svc": "stackctl.bench_peer:create_api_app()",
    "processor-svc": "stackctl.bench_peer:create_processor_app()",
}
CONNECTIONS = 64
PROCESS_CONNECTIONS = 400
# processor-svc's default simulated work: the ideal /process rate is connections / this.
PROCESS_SECONDS = 0.5
SCRAPES_PER_SECOND = 3.0
# (route name, wrk script, path): GET /message/{id} cycles through the ten readable ids.
ROUTES = (("health", "get", "/health"), ("message", "message", "/message/1"))
MEMORY_METRIC = "app_http_requests_total{"
# (results key, comparison, threshold): the targets, evaluated, never asserted.
TARGETS = (
    ("health.full_over_bare", ">=", 0.5),
    ("message.full_over_bare", ">=", 0.9),
    ("process.fraction_of_ideal", ">=", 0.95),
    ("process.p99_s", "<=", 0.6),
    ("metrics.scrape_p99_ms", "<", 25.0),
    ("memory.growth_ratio", "<", 0.10),
    ("gateway.hop_ratio", ">=", 0.85),
)
TIME_BUDGET_S = 600.0


@dataclass(frozen=True)
class BenchConfig:
    rounds: int = 3
    duration: float = 8.0  # seconds measured per run
    warmup: float = 2.0  # seconds of the same load, discarded, before each run
    soak: float = 300.0  # the full variant's memory is sampled at least this far apart
    results: Path = REPO / "bench" / "results.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "BenchConfig":
        return cls(
            rounds=int(env.get("BENCH_ROUNDS", cls.rounds)),
            duration=float(env.get("BENCH_DURATION", cls.duration)),
            warmup=float(env.get("BENCH_WARMUP", cls.warmup)),
            soak=float(env.get("BENCH_SOAK", cls.soak)),
            results=Path(env.get("BENCH_RESULTS", str(cls.results))),
        )

    def estimate_s(self) -> float:
        """Measurement time: startup and teardown (~1.5 min) come on top."""
        runs = len(ROUTES) * (len(VARIANTS) + len(GATEWAY_VARIANTS))
        runs += 1  # the /metrics scrape run
        per_round = runs * (self.warmup + self.duration + 0.5) + self.warmup + self.duration + 3
        return max(self.rounds * per_round, self.soak) + 4 * self.warmup * len(VARIANTS)


def say(message: str) -> None:
    print(message, flush=True)


# --- the OTLP/HTTP receiver the full and peer variants export to ------------------------------
class _SinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0


class _SinkHandler(BaseHTTPRequestHandler):
    # HTTP/1.1: the exporters keep their connection, as they would to a real collector.
    protocol_version = "HTTP/1.1"
    server: _SinkServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests += 1
            self.server.bytes += len(body)
        # An empty 200 is a complete success for the OTLP/HTTP exporter.
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def otlp_sink() -> Iterator[_SinkServer]:
    """Answers 200 to every span export and counts them (a collector that keeps nothing)."""
    server = _SinkServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sink_endpoint(server: _SinkServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


# --- load: wrk for throughput and latency, hey for /metrics scrapes ----------------------------
# Every script ends with this: wrk's own numbers as one JSON line (no text parsing).
_REPORT_LUA = """
threads = {}
function setup(thread) table.insert(threads, thread) end
function window_count() return 0, 0 end
function done(summary, latency, requests)
  local counted, seconds = window_count()
  local e = summary.errors
  io.write(string.format('BENCH_RESULT {"requests":%d,"duration_us":%.0f,"p50_us":%.0f,' ..
    '"p99_us":%.0f,"errors":%d,"status_errors":%d,"window_requests":%d,"window_s":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, counted, seconds))
end
"""
_MESSAGE_LUA = """
n = 0
function request()
  n = n % 10 + 1
  return wrk.format("GET", "/message/" .. n)
end
"""
# /process: wrk runs warm-up + window + slack in one go (no reconnect of 400 connections) and
# counts the 200s answered within whole wall-clock seconds of the window. A plain
# requests/duration would include the first 0.5 s, when nothing can have completed yet, and so
# could never reach the ideal.
_PROCESS_LUA = """
wrk.method = "POST"
wrk.body = '{"data": "benchmark payload"}'
wrk.headers["Content-Type"] = "application/json"
window_start, window_end, counted = 0, 0, 0
function init(args)
  window_start = os.time() + tonumber(args[1]) + 1
  window_end = window_start + tonumber(args[2])
end
function response(status, headers, body)
  local now = os.time()
  if status == 200 and now >= window_start and now < window_end then counted = counted + 1 end
end
function window_count()
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("counted") end
  local first = threads[1]
  return total, first:get("window_end") - first:get("window_start")
end
"""
SCRIPTS = {"get": "", "message": _MESSAGE_LUA, "process": _PROCESS_LUA}


def write_scripts(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, body in SCRIPTS.items():
        # The report goes first so that a script's own window_count() overrides the default.
        paths[name] = directory / f"{name}.lua"
        paths[name].write_text(_REPORT_LUA + body)
    return paths


@dataclass(frozen=True)
class Load:
    """One wrk run: completed requests per second, latency percentiles, failures."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    # CPU time of the serving gunicorn (master and workers) per request: unlike req/s, barely
    # moved by other processes competing for the cores of a shared machine.
    cpu_ms_per_request: float | None = None
    gateway_cpu_ms_per_request: float | None = None  # nginx's (master and workers), if in path
    load_average: float | None = None  # the machine's 1-minute load average at the start


@dataclass(frozen=True)
class Scrapes:
    """GET /metrics timings taken while a load ran (milliseconds)."""

    times_ms: list[float]
    failed: int


def wrk_argv(url: str, script: Path, connections: int, seconds: float, *args: str) -> list[str]:
    # One thread: the load generator takes at most one of the two cores, the same in every run.
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{ceil(seconds)}s", "--timeout", "10s"]
    return [*argv, "-s", str(script), url, *(["--", *args] if args else [])]


def parse_wrk(stdout: str) -> dict[str, float]:
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            parsed: dict[str, float] = json.loads(line.removeprefix("BENCH_RESULT "))
            return parsed
    raise ComponentFailedError(f"wrk printed no result:\n{stdout[-2000:]}")


def to_load(raw: Mapping[str, float]) -> Load:
    if raw["window_s"] > 0:  # /process: only the steady-state window counts
        rps = raw["window_requests"] / raw["window_s"]
    else:
        rps = raw["requests"] / (raw["duration_us"] / 1e6)
    return Load(
        rps=round(rps, 1),
        p50_ms=round(raw["p50_us"] / 1000, 3),
        p99_ms=round(raw["p99_us"] / 1000, 3),
        requests=int(raw["requests"]),
        errors=int(raw["errors"] + raw["status_errors"]),
    )


def scrape_count(seconds: float) -> int:
    return max(20, round(seconds * SCRAPES_PER_SECOND))


def hey_argv(url: str, seconds: float) -> list[str]:
    count = scrape_count(seconds)
    # One scraper at a steady rate, as Prometheus scrapes: a latency sample, not a load.
    return [
        "hey",
        "-n",
        str(count),
        "-c",
        "1",
        "-q",
        f"{count / seconds:.2f}",
        "-t",
        "10",
        "-o",
        "csv",
        url,
    ]


def parse_hey_csv(stdout: str, expected: int) -> Scrapes:
    """hey's CSV has one row per answered request (seconds, status); failures have no row."""
    times, failed = [], 0
    for line in stdout.splitlines()[1:]:
        fields = line.split(",")
        if len(fields) < 7:  # noqa: PLR2004 - response-time .. status-code
            continue
        if fields[6] == "200":
            times.append(round(float(fields[0]) * 1000, 3))
        else:
            failed += 1
    return Scrapes(times_ms=times, failed=failed + max(0, expected - len(times) - failed))


def run_load(
    wrk: list[str], timeout: float, scrape_url: str | None = None, scrape_after: float = 0.0
) -> tuple[Load, Scrapes | None]:
    """Run wrk; with ``scrape_url``, scrape it with hey during the run (from ``scrape_after``)."""
    proc = subprocess.Popen(wrk, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
    scraper: subprocess.Popen[str] | None = None
    try:
        scrape_seconds = 0.0
        if scrape_url is not None:
            time.sleep(scrape_after)
            # Scrape while the load runs, ending a second before it does.
            scrape_seconds = max(1.0, _wrk_seconds(wrk) - scrape_after - 1.0)
            scraper = subprocess.Popen(  # noqa: S603
                hey_argv(scrape_url, scrape_seconds),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        stdout, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise ComponentFailedError(f"wrk failed ({proc.returncode}): {stderr.strip()}")
        scrapes = None
        if scraper is not None:
            hey_out, _ = scraper.communicate(timeout=timeout)
            scrapes = parse_hey_csv(hey_out, scrape_count(scrape_seconds))
        return to_load(parse_wrk(stdout)), scrapes
    finally:
        for child in (proc, scraper):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()


def _wrk_seconds(argv: Sequence[str]) -> float:
    return float(next(a for a in argv if a.startswith("-d"))[2:].removesuffix("s"))


# --- variants: where each one listens --------------------------------------------------------
@dataclass
class Deployment:
    """One variant: api-svc and processor-svc (gunicorn, 2 workers), maybe a gateway."""

    variant: str
    ports: dict[str, int]
    masters: dict[str, int] = field(default_factory=dict)  # service -> gunicorn master pid

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def gateway_url(self, path: str) -> str:
        return self.url("gateway", path)

    def metrics_url(self, service: str) -> str:
        return self.url(f"{service}-metrics", "/metrics")


def full_deployment(stack: NativeStack, sink: str) -> Deployment:
    """The stack's own services, restarted once to export spans to the sink, then kept
    running to the end: their memory is the one that must not grow."""
    for name in SERVICES:
        stack.stop(name)
        stack.respawn(name, env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink})
    ports = {
        "api-svc": stack.port("api-svc", 8000),
        "processor-svc": stack.port("processor-svc", 8001),
        "gateway": stack.port("gateway", 8080),
        "gateway-status": stack.port("gateway", 8081),
        # Where Prometheus scrapes: the gunicorn master's own port.
        "api-svc-metrics": stack.port("api-svc", 9000),
        "processor-svc-metrics": stack.port("processor-svc", 9001),
    }
    masters = {name: stack.pid(name) for name in (*SERVICES, "gateway")}
    return Deployment("full", ports, masters)


def side_offset(stack: NativeStack, start: int) -> int:
    """A port offset (from the stack's own + ``start``) whose four ports are all free."""
    base = stack.port("api-svc", 8000) - 8000
    for offset in range(base + start, base + start + 5000, 100):
        if all(port_is_free(port + offset) for port in COMPOSE_PORTS.values()):
            return offset
    raise ComponentFailedError("no free ports for a benchmark variant")


class SideDeployments:
    """The bare and peer variants beside the stack, started once and stopped at the end."""

    def __init__(self, stack: NativeStack, root: Path, sink: str) -> None:
        self.stack = stack
        self.root = root
        self.sink = sink
        self.processes: list[ServiceProcess] = []

    def start(self, variant: str, start_offset: int) -> Deployment:
        offset = side_offset(self.stack, start_offset)
        ports = {name: port + offset for name, port in COMPOSE_PORTS.items()}
        deployment = Deployment(variant, ports)
        directory = self.root / variant
        directory.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            service = self._start_service(variant, name, ports[name], directory)
            deployment.masters[name] = service.proc.pid
        if variant in GATEWAY_VARIANTS:
            gateway = self._start_gateway(variant, offset, ports["gateway-status"], directory)
            deployment.masters["gateway"] = gateway.proc.pid
        return deployment

    def _start_service(self, variant: str, name: str, port: int, directory: Path) -> ServiceProcess:
        metrics_dir = directory / f"{name}-metrics"
        metrics_dir.mkdir(exist_ok=True)
        env = {
            **self.stack.spec_env(name),
            "PORT": str(port),
            # Never the stack's directory: gunicorn wipes it at start.
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.sink,
            "METRICS_PORT": "",  # not the stack's port; only the full variant is scraped
            **(BARE_ENV if variant == "bare" else {}),
        }
        argv = gunicorn_argv((PEER_APPS if variant == "peer" else SERVICE_APPS)[name])
        return self._spawn(
            f"{variant}-{name}", argv, env, f"http://127.0.0.1:{port}/health", directory
        )

    def _start_gateway(
        self, variant: str, offset: int, status_port: int, directory: Path
    ) -> ServiceProcess:
        """nginx with the repository's gateway config, rendered for this variant's ports."""
        config = directory / "gateway-config"
        render_tree(REPO / "gateway", config, {"STACK_PORT_OFFSET": str(offset)})
        prefix = directory / "gateway-prefix"
        prefix.mkdir(exist_ok=True)
        log_path = directory / "gateway.log"
        log_path.touch()
        if os.geteuid() == 0:
            # As in stackctl.native: a root master's workers run as nobody and reopen
            # /dev/stdout (the log file) and the prefix's temp dirs.
            nobody = pwd.getpwnam("nobody")
            for path in (prefix, log_path):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        argv = [nginx, "-p", f"{prefix}/", "-c", str(config / "nginx.conf"), "-e", "stderr",
                "-g", "daemon off;"]  # fmt: skip
        health = f"http://127.0.0.1:{status_port}/health"
        return self._spawn(f"{variant}-gateway", argv, {}, health, directory)

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], health: str, directory: Path
    ) -> ServiceProcess:
        process = spawn(
            name,
            argv,
            log_path=directory / f"{name}.log",
            env=env,
            health_url=health,
            timeout=self.stack.timeout,
            cwd=directory,
        )
        self.processes.append(process)
        say(f"  started {name} (port {process.port})")
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


# --- what is measured ------------------------------------------------------------------------
@dataclass
class Measurements:
    loads: dict[tuple[str, str, str], list[Load]] = field(default_factory=dict)
    scrapes: dict[tuple[str, str], list[Scrapes]] = field(default_factory=dict)

    def add_load(self, key: tuple[str, str, str], load: Load) -> None:
        self.loads.setdefault(key, []).append(load)

    def add_scrapes(self, key: tuple[str, str], scrapes: Scrapes | None) -> None:
        if scrapes is not None:
            self.scrapes.setdefault(key, []).append(scrapes)


@dataclass
class Memory:
    """Resident memory (kB) of each gunicorn worker, by variant, service and pid."""

    taken_at: float
    workers: dict[str, dict[str, dict[int, int]]]
    requests_served: float


def workers(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def cpu_seconds(master: int) -> float:
    """User + system CPU time of a gunicorn master and its live workers."""
    return processes_cpu_seconds((master, *workers(master)))


def processes_cpu_seconds(pids: Iterable[int]) -> float:
    ticks = 0
    for pid in pids:
        with suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_rss_kb(master: int) -> dict[int, int]:
    """VmRSS of each child of a gunicorn master (its workers)."""
    rss = {}
    for pid in workers(master):
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss[pid] = int(line.split()[1])
    return rss


def requests_total(url: str) -> float:
    """The sum of app_http_requests_total in one scrape (how much the full variant served)."""
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own URL
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(MEMORY_METRIC)
    )


def take_memory(deployments: Mapping[str, Deployment]) -> Memory:
    workers = {
        variant: {name: worker_rss_kb(deployment.masters[name]) for name in SERVICES}
        for variant, deployment in deployments.items()
    }
    full = deployments["full"]
    served = sum(requests_total(full.metrics_url(name)) for name in SERVICES)
    return Memory(time.monotonic(), workers, served)


class Runner:
    """Runs the measurements; each one is warm-up then measured run, one at a time."""

    def __init__(
        self, config: BenchConfig, scripts: dict[str, Path], deployments: dict[str, Deployment]
    ) -> None:
        self.config = config
        self.scripts = scripts
        self.deployments = deployments
        self.results = Measurements()

    def measure(self, key: tuple[str, str, str], script: str, path: str) -> None:
        """Warm-up, then the measured run of one (route, where, variant)."""
        route, where, variant = key
        deployment = self.deployments[variant]
        url = (
            deployment.gateway_url(path) if where == "gateway" else deployment.url("api-svc", path)
        )
        wrk_script = self.scripts[script]
        run_load(
            wrk_argv(url, wrk_script, CONNECTIONS, self.config.warmup), self.config.warmup + 30
        )
        wrk = wrk_argv(url, wrk_script, CONNECTIONS, self.config.duration)
        load, _ = self.accounted(deployment, "api-svc", wrk, via_gateway=where == "gateway")
        self.results.add_load(key, load)
        report(f"{route:<8} {where:<8} {variant:<5}", load)

    def accounted(
        self,
        deployment: Deployment,
        service: str,
        wrk: list[str],
        *,
        via_gateway: bool,
        scrape: str | None = None,
        scrape_after: float = 0.0,
    ) -> tuple[Load, Scrapes | None]:
        """run_load, plus CPU per request of the serving gunicorn (and of nginx when the
        requests go through it) and the machine's load average."""
        masters = {"service": deployment.masters[service]}
        if via_gateway:
            masters["gateway"] = deployment.masters["gateway"]
        load_average = os.getloadavg()[0]
        before = {name: cpu_seconds(pid) for name, pid in masters.items()}
        load, scrapes = run_load(wrk, _wrk_seconds(wrk) + 40, scrape, scrape_after)
        per_request = {
            name: round((cpu_seconds(pid) - before[name]) * 1000 / max(1, load.requests), 3)
            for name, pid in masters.items()
        }
        load = replace(
            load,
            cpu_ms_per_request=per_request["service"],
            gateway_cpu_ms_per_request=per_request.get("gateway"),
            load_average=round(load_average, 2),
        )
        return load, scrapes

    def scrapes(self) -> None:
        """/metrics of the full api-svc, scraped while GET /message/{id} loads it (direct).

        A run of its own: scraping during the ratio runs would load the variants unequally
        (bare has no /metrics), at 15 times Prometheus' rate."""
        full = self.deployments["full"]
        url = full.url("api-svc", "/message/1")
        run_load(wrk_argv(url, self.scripts["message"], CONNECTIONS, self.config.warmup), 60)
        wrk = wrk_argv(url, self.scripts["message"], CONNECTIONS, self.config.duration)
        metrics = full.metrics_url("api-svc")
        load, scrapes = self.accounted(full, "api-svc", wrk, via_gateway=False, scrape=metrics)
        self.results.add_load(("message", "scraped", "full"), load)
        self.results.add_scrapes(("full", "api-svc"), scrapes)
        report("message  scraped  full ", load)

    def process(self) -> None:
        """POST /process through the full variant's gateway, processor-svc scraped meanwhile."""
        full = self.deployments["full"]
        warmup, seconds = self.config.warmup, self.config.duration
        wrk = wrk_argv(
            full.gateway_url("/process"),
            self.scripts["process"],
            PROCESS_CONNECTIONS,
            warmup + seconds + 3,
            str(ceil(warmup)),
            str(ceil(seconds)),
        )
        metrics = full.metrics_url("processor-svc")
        load, scrapes = self.accounted(
            full, "processor-svc", wrk, via_gateway=True, scrape=metrics, scrape_after=warmup + 1
        )
        self.results.add_load(("process", "gateway", "full"), load)
        self.results.add_scrapes(("full", "processor-svc"), scrapes)
        report("process  gateway  full ", load)

    def round(self, number: int) -> None:
        say(f"  round {number + 1}/{self.config.rounds}")
        for route, script, path in ROUTES:
            for variant in rotated(VARIANTS, number):
                self.measure((route, "direct", variant), script, path)
        for route, script, path in ROUTES:
            for variant in rotated(GATEWAY_VARIANTS, number):
                self.measure((route, "gateway", variant), script, path)
        self.scrapes()
        self.process()

    def warm_up(self) -> None:
        """Each variant's first requests (imports, pools, caches) before memory is sampled."""
        seconds = self.config.warmup
        for variant, deployment in self.deployments.items():
            for _, script, path in ROUTES:
                url = deployment.url("api-svc", path)
                run_load(wrk_argv(url, self.scripts[script], CONNECTIONS, seconds), seconds + 30)
            # /process is measured on full only (through its gateway), but every variant's
            # processor-svc serves some, so that all workers are sampled in the same state.
            process = (
                deployment.gateway_url("/process")
                if variant == "full"
                else deployment.url("processor-svc", "/process")
            )
            wrk = wrk_argv(process, self.scripts["process"], PROCESS_CONNECTIONS, seconds, "0", "0")
            run_load(wrk, seconds + 30)

    def soak(self, since: float) -> None:
        """Keep the full variant under load until ``config.soak`` seconds since ``since``."""
        remaining = self.config.soak - (time.monotonic() - since)
        if remaining <= 1:
            return
        say(f"  soak: {remaining:.0f} s more of GET /message/{{id}} through the gateway")
        url = self.deployments["full"].gateway_url("/message/1")
        run_load(wrk_argv(url, self.scripts["message"], CONNECTIONS, remaining), remaining + 30)


def report(label: str, load: Load) -> None:
    say(
        f"    {label} {load.rps:>8.1f} req/s  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms"
        f"  cpu {load.cpu_ms_per_request} ms/req  errors {load.errors}  load {load.load_average}"
    )


def rotated(items: Sequence[str], by: int) -> list[str]:
    """Each round starts with another variant, so none always runs first (or last)."""
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


# --- results ---------------------------------------------------------------------------------
def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest rank: the smallest value with at least ``pct`` % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, ceil(pct / 100 * len(ordered)) - 1)]


def summarize(loads: Sequence[Load]) -> dict[str, Any]:
    return {
        "rps": round(statistics.median(x.rps for x in loads), 1),
        "p50_ms": round(statistics.median(x.p50_ms for x in loads), 3),
        "p99_ms": round(statistics.median(x.p99_ms for x in loads), 3),
        "cpu_ms_per_request": _median_or_none([x.cpu_ms_per_request for x in loads]),
        "gateway_cpu_ms_per_request": _median_or_none(
            [x.gateway_cpu_ms_per_request for x in loads]
        ),
        "errors": sum(x.errors for x in loads),
        "rounds": [asdict(x) for x in loads],
    }


def _median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def ratio(m: Measurements, route: str, where: str, top: str, bottom: str) -> float:
    """The median of the per-round ratios: each pair ran minutes apart at most."""
    pairs = zip(m.loads[(route, where, top)], m.loads[(route, where, bottom)], strict=True)
    return round(statistics.median(a.rps / b.rps for a, b in pairs), 3)


def cpu_ratio(m: Measurements, route: str, top: str, bottom: str) -> float | None:
    """What the throughput ratio would be if the service's own CPU were all that limits it:
    bottom's CPU per request over top's (direct runs)."""
    pairs = zip(m.loads[(route, "direct", top)], m.loads[(route, "direct", bottom)], strict=True)
    ratios = [
        b.cpu_ms_per_request / a.cpu_ms_per_request
        for a, b in pairs
        if a.cpu_ms_per_request and b.cpu_ms_per_request
    ]
    return round(statistics.median(ratios), 3) if ratios else None


def route_results(m: Measurements, route: str) -> dict[str, Any]:
    return {
        "full_over_bare": ratio(m, route, "direct", "full", "bare"),
        "full_over_peer": ratio(m, route, "direct", "full", "peer"),
        "gateway_full_over_bare": ratio(m, route, "gateway", "full", "bare"),
        "cpu_full_over_bare": cpu_ratio(m, route, "full", "bare"),
        "cpu_full_over_peer": cpu_ratio(m, route, "full", "peer"),
        "direct": {v: summarize(m.loads[(route, "direct", v)]) for v in VARIANTS},
        "gateway": {v: summarize(m.loads[(route, "gateway", v)]) for v in GATEWAY_VARIANTS},
    }


def process_results(m: Measurements) -> dict[str, Any]:
    loads = m.loads[("process", "gateway", "full")]
    ideal = PROCESS_CONNECTIONS / PROCESS_SECONDS
    summary = summarize(loads)
    return {
        "connections": PROCESS_CONNECTIONS,
        "ideal_rps": ideal,
        "fraction_of_ideal": round(summary["rps"] / ideal, 3),
        "p50_s": round(summary["p50_ms"] / 1000, 4),
        "p99_s": round(summary["p99_ms"] / 1000, 4),
        **summary,
    }


def scrape_results(m: Measurements) -> dict[str, Any]:
    per_service: dict[str, Any] = {}
    for (variant, service), runs in sorted(m.scrapes.items()):
        times = [t for run in runs for t in run.times_ms]
        failed = sum(run.failed for run in runs)
        if variant == "bare" or not times:  # bare has no /metrics: only the load is the same
            continue
        per_service.setdefault(variant, {})[service] = {
            "scrapes": len(times),
            "failed": failed,
            "p50_ms": round(percentile(times, 50), 2),
            "p99_ms": round(percentile(times, 99), 2),
            "max_ms": round(max(times), 2),
        }
    full = per_service.get("full", {})
    return {
        "scrape_p99_ms": max((s["p99_ms"] for s in full.values()), default=None),
        "by_variant": per_service,
        "load_while_scraping_api_svc": summarize(m.loads[("message", "scraped", "full")]),
    }


def memory_results(before: Memory, after: Memory) -> dict[str, Any]:
    workers: list[dict[str, Any]] = []
    for variant, services in before.workers.items():
        for service, pids in services.items():
            now = after.workers[variant][service]
            for pid, kb in pids.items():
                grown = now.get(pid)  # None: the worker died and was replaced (reported)
                workers.append(
                    {
                        "variant": variant,
                        "service": service,
                        "pid": pid,
                        "before_kb": kb,
                        "after_kb": grown,
                        "growth_ratio": None if grown is None else round(grown / kb - 1, 4),
                    }
                )
    full = [w["growth_ratio"] for w in workers if w["variant"] == "full"]
    return {
        # The largest relative growth of any full-variant worker: (after - before) / before;
        # null if one was replaced meanwhile (a crash: then it is no number to trust).
        "growth_ratio": None if None in full else max(full),
        "span_s": round(after.taken_at - before.taken_at, 1),
        "full_requests_served_between": int(after.requests_served - before.requests_served),
        "workers": workers,
    }


def gateway_results(m: Measurements) -> dict[str, Any]:
    return {
        # The same variant (full), route (/health) and concurrency, through nginx vs direct.
        "hop_ratio": ratio_across(m, "health", "full"),
        "hop_ratio_bare": ratio_across(m, "health", "bare"),
        "hop_ratio_message": ratio_across(m, "message", "full"),
    }


def ratio_across(m: Measurements, route: str, variant: str) -> float:
    pairs = zip(
        m.loads[(route, "gateway", variant)], m.loads[(route, "direct", variant)], strict=True
    )
    return round(statistics.median(a.rps / b.rps for a, b in pairs), 3)


def lookup(results: Mapping[str, Any], dotted: str) -> float | None:
    value: Any = results
    for part in dotted.split("."):
        value = value[part]
    return None if value is None else float(value)


def evaluate_targets(results: Mapping[str, Any]) -> dict[str, Any]:
    checks = {">=": operator.ge, "<=": operator.le, "<": operator.lt}
    evaluated = {}
    for key, op, limit in TARGETS:
        value = lookup(results, key)
        met = value is not None and bool(checks[op](value, limit))
        evaluated[key] = {"value": value, "target": f"{op} {limit:g}", "met": met}
    return evaluated


def first_line(argv: list[str]) -> str:
    with suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
        return (done.stdout + done.stderr).strip().splitlines()[0]
    return "unknown"


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "wrk": first_line(["wrk", "-v"]),
        "hey": "hey (Debian)",
        "nginx": first_line(["nginx", "-v"]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_start": list(os.getloadavg()),
    }


def _os_name() -> str:
    with suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.system()


def build_results(
    config: BenchConfig, m: Measurements, memory: tuple[Memory, Memory], spans: _SinkServer
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "health": route_results(m, "health"),
        "message": route_results(m, "message"),
        "process": process_results(m),
        "metrics": scrape_results(m),
        "gateway": gateway_results(m),
        "memory": memory_results(*memory),
        "traces": {"exports": spans.requests, "bytes": spans.bytes},
        "settings": {
            "rounds": config.rounds,
            "duration_s": config.duration,
            "warmup_s": config.warmup,
            "connections": CONNECTIONS,
            "process_connections": PROCESS_CONNECTIONS,
            "workers_per_service": 2,
            "load_generator": "wrk -t1 (scrapes: hey -c1)",
        },
    }
    results["targets"] = evaluate_targets(results)
    return results


REPORTED = (
    "health.full_over_peer",
    "message.full_over_peer",
    "health.gateway_full_over_bare",
    "message.gateway_full_over_bare",
    "gateway.hop_ratio_bare",
    "health.cpu_full_over_bare",
    "message.cpu_full_over_bare",
    "health.cpu_full_over_peer",
    "message.cpu_full_over_peer",
)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cpu(summary: Mapping[str, Any]) -> str:
    """The service's CPU per request, plus nginx's when the requests went through it."""
    service = _number(summary["cpu_ms_per_request"])
    nginx = summary.get("gateway_cpu_ms_per_request")
    return service if nginx is None else f"{service} + {nginx:.3f} nginx"


def table(results: Mapping[str, Any]) -> str:
    """The Markdown table README's Performance section shows."""
    lines = [
        "| route | where | variant | req/s | p50 ms | p99 ms | CPU ms/req |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for route, label in (("health", "GET /health"), ("message", "GET /message/{id}")):
        for where in ("direct", "gateway"):
            for variant, s in results[route][where].items():
                lines.append(
                    f"| {label} | {where} | {variant} | {s['rps']:,.0f} | "
                    f"{s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {_cpu(s)} |"
                )
    p = results["process"]
    lines.append(
        f"| POST /process ({p['connections']} conns) | gateway | full | {p['rps']:,.0f} | "
        f"{p['p50_ms']:.0f} | {p['p99_ms']:.0f} | {_cpu(p)} |"
    )
    lines += ["", "| measure | value | target | met |", "|---|---:|---|---|"]
    for key, t in results["targets"].items():
        met = "yes" if t["met"] else "NO"
        lines.append(f"| `{key}` | {_number(t['value'])} | {t['target']} | {met} |")
    for key in REPORTED:
        lines.append(f"| `{key}` | {_number(lookup(results, key))} | (reported) | |")
    return "\n".join([*lines, "", memory_line(results["memory"])])


def memory_line(memory: Mapping[str, Any]) -> str:
    full = [w for w in memory["workers"] if w["variant"] == "full"]
    sizes = [w["before_kb"] / 1024 for w in full]
    return (
        f"Full variant: {len(full)} workers, {min(sizes):.0f}-{max(sizes):.0f} MiB after warm-up; "
        f"the largest growth {_number(memory['growth_ratio'])} over {memory['span_s']:.0f} s "
        f"and {memory['full_requests_served_between']:,} requests."
    )


# --- the run ---------------------------------------------------------------------------------
def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM (e.g. make interrupted) unwinds like Ctrl-C, so everything started is stopped.
    raise SystemExit(128 + signum)


def busy(load_average: float) -> bool:
    return load_average > (os.cpu_count() or 1) / 2


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "hey", "nginx") if shutil.which(tool) is None]
    if missing:
        raise ComponentFailedError(f"not installed: {', '.join(missing)} (scripts/install-deps)")


def run(config: BenchConfig, state: Path) -> dict[str, Any]:
    scripts = write_scripts(state / "bench" / "wrk")
    with otlp_sink() as sink, running_stack(state) as stack:
        say("Variants (each api-svc + processor-svc, gunicorn with 2 workers):")
        side = SideDeployments(stack, state / "bench", sink_endpoint(sink))
        try:
            deployments = {
                "full": full_deployment(stack, sink_endpoint(sink)),
                "bare": side.start("bare", 100),
                "peer": side.start("peer", 200),
            }
            runner = Runner(config, scripts, deployments)
            say("Warm-up")
            runner.warm_up()
            before = take_memory(deployments)
            for number in range(config.rounds):
                runner.round(number)
            runner.soak(before.taken_at)
            after = take_memory(deployments)
        finally:
            side.stop()
        return build_results(config, runner.results, (before, after), sink)


def main() -> None:
    signal.signal(signal.SIGTERM, _raise_exit)
    started = time.monotonic()
    config = BenchConfig.from_env(os.environ)
    check_tools()
    machine = machine_info()
    if busy(machine["load_average_start"][0]):
        say("warning: this machine is already busy (load average above half its cores): "
            "other processes will compete with every run; the CPU ms/request columns are "
            "the least affected numbers")  # fmt: skip
    say(
        f"Benchmark: {config.rounds} rounds, {config.duration:g} s per run after "
        f"{config.warmup:g} s warm-up; about {config.estimate_s() / 60:.0f} min of load"
    )
    # Not the user's .stack/: a throwaway state directory, readable by PostgreSQL's and
    # nginx's unprivileged users (mkdtemp makes it 0700).
    state = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    state.chmod(0o711)
    try:
        results = run(config, state)
    except ComponentFailedError as exc:
        say(f"bench: {exc}")
        if "ports already in use" in str(exc):
            say("(another native stack runs on these ports: set STACK_PORT_OFFSET=10000)")
        sys.exit(1)
    finally:
        if os.environ.get("BENCH_KEEP_STATE"):
            say(f"state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
    machine["load_average_end"] = list(os.getloadavg())
    machine["busy"] = busy(machine["load_average_start"][0]) or busy(os.getloadavg()[0])
    elapsed = round(time.monotonic() - started, 1)
    results = {
        "machine": machine,
        **results,
        "elapsed_s": elapsed,
        "within_time_budget": elapsed < TIME_BUDGET_S,
    }
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    say("\n" + table(results))
    say(
        f"\nWrote {config.results}; elapsed {elapsed / 60:.1f} min "
        f"({'within' if elapsed < TIME_BUDGET_S else 'OVER'} the 10 min budget)"
    )


if __name__ == "__main__":
    main()

"""Load generation and its parsing: wrk for throughput and latency (its Lua scripts below),
hey for /metrics scrapes taken while a load runs."""

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import ceil
from pathlib import Path

from stackctl.processes import ComponentFailedError

SCRAPES_PER_SECOND = 3.0

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
            scrape_seconds = max(1.0, wrk_seconds(wrk) - scrape_after - 1.0)
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


def wrk_seconds(argv: Sequence[str]) -> float:
    return float(next(a for a in argv if a.startswith("-d"))[2:].removesuffix("s"))

"""The report: statistics over the measured runs (medians, per-round ratios, percentiles), the
issue's targets evaluated, the machine the run was on, and the Markdown table
docs/performance.md shows. Everything results.json holds is put together here."""

import json
import operator
import os
import platform
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from math import ceil
from pathlib import Path
from typing import Any

from stackctl import procfs
from stackctl.bench.accounting import Memory
from stackctl.bench.chart import write_chart
from stackctl.bench.load import Load, Scrapes
from stackctl.bench.settings import (
    CONNECTIONS,
    GATEWAY_VARIANTS,
    PROCESS_CONNECTIONS,
    TIME_BUDGET_S,
    VARIANTS,
    WORKERS_PER_SERVICE,
    BenchConfig,
    say,
)

# processor-svc's default simulated work: the ideal /process rate is connections / this.
PROCESS_SECONDS = 0.5
# (results key, comparison, threshold): the targets, evaluated, never asserted.
TARGETS = (
    ("message.direct.bare.cpu_ms_per_request", "<=", 1.0),
    ("message.direct.full.cpu_ms_per_request", "<=", 1.5),
    ("message.full_over_health_bare", ">=", 0.3),
    ("message.full_over_peer", ">=", 3.0),
    ("health.full_over_bare", ">=", 0.5),
    ("health.instrumentation_cpu_ms", "<=", 0.10),
    ("message.instrumentation_cpu_ms", "<=", 0.50),
    ("process.cpu_ms_per_request", "<=", 1.0),
    ("process.fraction_of_ideal", ">=", 0.97),
    ("process.p99_s", "<=", 0.6),
    ("gateway.nginx_cpu_ms_per_request", "<=", 0.08),
    ("metrics.scrape_p99_ms", "<", 25.0),
    ("memory.growth_ratio", "<", 0.10),
)


# --- what is measured -----------------------------------------------------------------------------
@dataclass
class Measurements:
    loads: dict[tuple[str, str, str], list[Load]] = field(default_factory=dict)
    scrapes: dict[tuple[str, str], list[Scrapes]] = field(default_factory=dict)

    def add_load(self, key: tuple[str, str, str], load: Load) -> None:
        self.loads.setdefault(key, []).append(load)

    def add_scrapes(self, key: tuple[str, str], scrapes: Scrapes | None) -> None:
        if scrapes is not None:
            self.scrapes.setdefault(key, []).append(scrapes)


# --- statistics -----------------------------------------------------------------------------------
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


Run = tuple[str, str, str]  # (route, where, variant)


def rps_ratio(m: Measurements, top: Run, bottom: Run) -> float:
    """The median of the per-round req/s ratios (the same round index): each pair ran
    minutes apart at most."""
    pairs = zip(m.loads[top], m.loads[bottom], strict=True)
    return round(statistics.median(a.rps / b.rps for a, b in pairs), 3)


def ratio(m: Measurements, route: str, where: str, top: str, bottom: str) -> float:
    return rps_ratio(m, (route, where, top), (route, where, bottom))


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


def instrumentation_cpu(m: Measurements, route: str) -> float | None:
    """What the instrumentation costs in CPU ms per request: full's CPU per request minus
    bare's, direct, the median of the per-round differences (rounds without both: skipped)."""
    pairs = zip(m.loads[(route, "direct", "full")], m.loads[(route, "direct", "bare")], strict=True)
    differences = [
        a.cpu_ms_per_request - b.cpu_ms_per_request
        for a, b in pairs
        if a.cpu_ms_per_request is not None and b.cpu_ms_per_request is not None
    ]
    return round(statistics.median(differences), 3) if differences else None


def route_results(m: Measurements, route: str) -> dict[str, Any]:
    return {
        "full_over_bare": ratio(m, route, "direct", "full", "bare"),
        "full_over_peer": ratio(m, route, "direct", "full", "peer"),
        "gateway_full_over_bare": ratio(m, route, "gateway", "full", "bare"),
        "cpu_full_over_bare": cpu_ratio(m, route, "full", "bare"),
        "cpu_full_over_peer": cpu_ratio(m, route, "full", "peer"),
        "instrumentation_cpu_ms": instrumentation_cpu(m, route),
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
        # nginx's own CPU per proxied request: GET /health through the full variant's gateway.
        "nginx_cpu_ms_per_request": _median_or_none(
            [x.gateway_cpu_ms_per_request for x in m.loads[("health", "gateway", "full")]]
        ),
    }


def ratio_across(m: Measurements, route: str, variant: str) -> float:
    return rps_ratio(m, (route, "gateway", variant), (route, "direct", variant))


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


# --- the machine ----------------------------------------------------------------------------------
def first_line(argv: list[str]) -> str:
    with suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
        return (done.stdout + done.stderr).strip().splitlines()[0]
    return "unknown"


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": procfs.cpu_model() or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(procfs.memory_total_kb() / 2**20, 1),
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


def busy(load_average: float) -> bool:
    return load_average > (os.cpu_count() or 1) / 2


# --- results.json ---------------------------------------------------------------------------------
def build_results(
    config: BenchConfig,
    m: Measurements,
    memory: tuple[Memory, Memory],
    traces: Mapping[str, int],
) -> dict[str, Any]:
    """Everything measured, summarized, with the targets evaluated (results.json without
    ``machine`` and the run's timing: see ``finish``)."""
    results: dict[str, Any] = {
        "health": route_results(m, "health"),
        "message": {
            # GET /message/{id} on full against GET /health on bare, both direct.
            "full_over_health_bare": rps_ratio(
                m, ("message", "direct", "full"), ("health", "direct", "bare")
            ),
            **route_results(m, "message"),
        },
        "process": process_results(m),
        "metrics": scrape_results(m),
        "gateway": gateway_results(m),
        "memory": memory_results(*memory),
        "traces": dict(traces),
        "settings": {
            "rounds": config.rounds,
            "duration_s": config.duration,
            "warmup_s": config.warmup,
            "connections": CONNECTIONS,
            "process_connections": PROCESS_CONNECTIONS,
            "workers_per_service": WORKERS_PER_SERVICE,
            "load_generator": "wrk -t1 (scrapes: hey -c1)",
        },
    }
    results["targets"] = evaluate_targets(results)
    return results


def finish(machine: dict[str, Any], results: Mapping[str, Any], elapsed: float) -> dict[str, Any]:
    """results.json: the machine (load averages at start and end), the results, the time taken."""
    machine = {**machine, "load_average_end": list(os.getloadavg())}
    machine["busy"] = busy(machine["load_average_start"][0]) or busy(os.getloadavg()[0])
    return {
        "machine": machine,
        **results,
        "elapsed_s": elapsed,
        "within_time_budget": elapsed < TIME_BUDGET_S,
    }


def write_results(path: Path, results: Mapping[str, Any]) -> None:
    """results.json and chart.svg beside it, then the table and where they went on stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    chart = write_chart(path, results)
    elapsed = results["elapsed_s"]
    say("\n" + table(results))
    say(
        f"\nWrote {path} and {chart.name}; elapsed {elapsed / 60:.1f} min "
        f"({'within' if results['within_time_budget'] else 'OVER'} the 10 min budget)"
    )


# --- the Markdown table ---------------------------------------------------------------------------
REPORTED = (
    "health.full_over_peer",
    "message.full_over_bare",
    "gateway.hop_ratio",
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
    """The Markdown table docs/performance.md shows (What observability costs)."""
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

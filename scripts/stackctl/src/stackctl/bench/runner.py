"""The measurements, in the order they run: one load at a time (2 cores), each a warm-up then
the measured run, the variants alternating in rotated order round after round; then the soak
that keeps the full variant under load until its memory is sampled again."""

import time
from collections.abc import Sequence
from math import ceil
from pathlib import Path

from stackctl.bench.accounting import accounted
from stackctl.bench.deployments import Deployment
from stackctl.bench.load import Load, run_load, wrk_argv
from stackctl.bench.report import Measurements
from stackctl.bench.settings import (
    CONNECTIONS,
    GATEWAY_VARIANTS,
    PROCESS_CONNECTIONS,
    ROUTES,
    VARIANTS,
    BenchConfig,
    say,
)


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
        load, _ = accounted(deployment, "api-svc", wrk, via_gateway=where == "gateway")
        self.results.add_load(key, load)
        say_load(f"{route:<8} {where:<8} {variant:<5}", load)

    def scrapes(self) -> None:
        """/metrics of the full api-svc, scraped while GET /message/{id} loads it (direct).

        A run of its own: scraping during the ratio runs would load the variants unequally
        (bare has no /metrics), at 15 times Prometheus' rate."""
        full = self.deployments["full"]
        url = full.url("api-svc", "/message/1")
        run_load(wrk_argv(url, self.scripts["message"], CONNECTIONS, self.config.warmup), 60)
        wrk = wrk_argv(url, self.scripts["message"], CONNECTIONS, self.config.duration)
        metrics = full.metrics_url("api-svc")
        load, scrapes = accounted(full, "api-svc", wrk, via_gateway=False, scrape=metrics)
        self.results.add_load(("message", "scraped", "full"), load)
        self.results.add_scrapes(("full", "api-svc"), scrapes)
        say_load("message  scraped  full ", load)

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
        load, scrapes = accounted(
            full, "processor-svc", wrk, via_gateway=True, scrape=metrics, scrape_after=warmup + 1
        )
        self.results.add_load(("process", "gateway", "full"), load)
        self.results.add_scrapes(("full", "processor-svc"), scrapes)
        say_load("process  gateway  full ", load)

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


def say_load(label: str, load: Load) -> None:
    say(
        f"    {label} {load.rps:>8.1f} req/s  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms"
        f"  cpu {load.cpu_ms_per_request} ms/req  errors {load.errors}  load {load.load_average}"
    )


def rotated(items: Sequence[str], by: int) -> list[str]:
    """Each round starts with another variant, so none always runs first (or last)."""
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]

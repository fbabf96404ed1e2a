"""What a benchmark run is: its variants, routes and concurrency, and the knobs the
environment turns (``BENCH_ROUNDS``, ``BENCH_DURATION``, ``BENCH_WARMUP``, ``BENCH_SOAK``,
``BENCH_RESULTS``)."""

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stackctl.addresses import REPO
from stackctl.processes import ComponentFailedError

VARIANTS = ("bare", "full", "peer")
# Through the gateway too (the hop's cost, and the ratio as a client sees it).
GATEWAY_VARIANTS = ("bare", "full")
SERVICES = ("api-svc", "processor-svc")
WORKERS_PER_SERVICE = 2
CONNECTIONS = 64
PROCESS_CONNECTIONS = 400
# (route name, wrk script, path): GET /message/{id} cycles through the ten readable ids.
ROUTES = (("health", "get", "/health"), ("message", "message", "/message/1"))
TIME_BUDGET_S = 600.0
TOOLS = ("wrk", "hey", "nginx")


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
    """Progress on stdout, flushed: make shows each line as it comes."""
    print(message, flush=True)


def check_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise ComponentFailedError(f"not installed: {', '.join(missing)} (scripts/install-deps)")

"""``make bench`` (``uv run --frozen python -m stackctl.bench``): see stackctl.bench for what it
measures and docs/performance.md for the method; writes bench/results.json and
bench/chart.svg."""

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from stackctl.bench.accounting import take_memory
from stackctl.bench.deployments import SideDeployments, full_deployment, throwaway_state
from stackctl.bench.load import write_scripts
from stackctl.bench.report import build_results, busy, finish, machine_info, write_results
from stackctl.bench.runner import Runner
from stackctl.bench.settings import BenchConfig, check_tools, say
from stackctl.bench.sink import otlp_sink, sink_endpoint
from stackctl.native import running_stack
from stackctl.processes import ComponentFailedError


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
    try:
        with throwaway_state(
            "bench-stack-", keep=bool(os.environ.get("BENCH_KEEP_STATE"))
        ) as state:
            measured = run(config, state)
    except ComponentFailedError as exc:
        say(f"bench: {exc}")
        if "ports already in use" in str(exc):
            say("(another native stack runs on these ports: set STACK_PORT_OFFSET=10000)")
        sys.exit(1)
    write_results(config.results, finish(machine, measured, round(time.monotonic() - started, 1)))


def run(config: BenchConfig, state: Path) -> dict[str, Any]:
    """The stack (full variant) and the side variants up, warm-up, rounds, soak, all down."""
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
        return build_results(config, runner.results, (before, after), sink.counts())


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM (e.g. make interrupted) unwinds like Ctrl-C, so everything started is stopped.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main()

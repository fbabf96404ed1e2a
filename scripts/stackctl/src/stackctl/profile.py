"""``make profile``: where the services' CPU goes under the benchmark's load (py-spy).

    uv run --frozen python -m stackctl.profile

The benchmark's full and bare variants (stackctl.bench), one load at a time, as ``make bench``
runs it: GET /health and GET /message/{id} direct at 64 connections, POST /process through the
gateway at 400. During each load py-spy samples every gunicorn worker of the serving service
and, for the full variant, the master that answers Prometheus' scrapes while one client scrapes
it three times a second. Per run it writes to bench/profiles/:

- ``<run>.txt`` (``<run>-metrics-master.txt``): CPU per request (per scrape) by package and by
  where it ran (main thread, a thread, a greenlet), then the top functions by inclusive and
  own time;
- ``<run>.collapsed``: the samples as collapsed stacks (speedscope, inferno, flamegraph.pl).

``PROFILE_RUNS=message-full,message-bare`` picks runs (all five by default, ~2.5 min). A sample is
charged to the innermost frame that belongs to a package (site-packages or the repository's
own), so time in the standard library counts for the package that called it.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stackctl import procfs
from stackctl.addresses import REPO
from stackctl.bench.deployments import (
    Deployment,
    SideDeployments,
    full_deployment,
    throwaway_state,
)
from stackctl.bench.load import hey_argv, parse_wrk, scrape_count, write_scripts, wrk_argv
from stackctl.bench.settings import CONNECTIONS, PROCESS_CONNECTIONS, check_tools, say
from stackctl.bench.sink import otlp_sink, sink_endpoint
from stackctl.native import running_stack
from stackctl.processes import ComponentFailedError

RATE_HZ = 250
TOP = 25  # functions listed per table
OUT = REPO / "bench" / "profiles"


@dataclass(frozen=True)
class Run:
    name: str
    variant: str
    service: str
    script: str  # stackctl.bench.load's wrk script
    path: str
    via_gateway: bool = False
    connections: int = CONNECTIONS


RUNS = (
    Run("message-full", "full", "api-svc", "message", "/message/1"),
    Run("message-bare", "bare", "api-svc", "message", "/message/1"),
    Run("health-full", "full", "api-svc", "get", "/health"),
    Run("health-bare", "bare", "api-svc", "get", "/health"),
    Run("process-full", "full", "processor-svc", "process", "/process", True, PROCESS_CONNECTIONS),
)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")
_BOILERPLATE = re.compile(
    r"gunicorn/|uvicorn_worker/|<frozen runpy>|asyncio/runners\.py|uvicorn/_compat"
)
_OURS = ("api_svc", "processor_svc", "service_kit", "stackctl")


def package_of(file: str) -> str | None:
    """``opentelemetry`` for .../site-packages/opentelemetry/sdk/trace/__init__.py (or, as
    shorten_paths writes it, opentelemetry/sdk/trace/__init__.py); our own source by its
    package; None for the standard library and the interpreter."""
    parts = Path(file).parts
    if not parts or file.startswith("<"):
        return None
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else None
    for name in _OURS:
        if name in parts:
            return name
    if not file.startswith("/") and not parts[0].startswith("python3"):
        return parts[0].removesuffix(".py")
    return None


def file_of(frame: str) -> str:
    match = _FRAME.match(frame)
    return match["file"] if match else ""


@dataclass(frozen=True)
class Profile:
    stacks: Counter[tuple[str, ...]]  # root first: "function (file)"

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())

    def by_package(self) -> Counter[str]:
        charged: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            packages = (package_of(file_of(frame)) for frame in reversed(stack))
            charged[next((p for p in packages if p), "python (no package)")] += count
        return charged

    def by_root(self) -> Counter[str]:
        """Where a sample ran: the event loop, a thread (by its run function), or another root:
        a greenlet (SQLAlchemy's async layer runs each query's sync part in one, a stack of
        its own rooted at e.g. Session.get) or a stack py-spy read while it changed (it does
        not pause the process)."""
        roots: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            if stack[0].startswith("_run_module_as_main"):
                root = "main thread (a worker's event loop; the master's arbiter)"
            elif stack[0].startswith("Thread._bootstrap"):
                # Thread._bootstrap, _bootstrap_inner, Thread.run, then the thread's target.
                root = f"thread: {short(stack[min(3, len(stack) - 1)])}"
            else:
                root = f"other root: {short(stack[0])}"
            roots[root] += count
        return roots

    def inclusive(self) -> Counter[str]:
        """Per function, the samples it is on the stack of, once each; without the frames
        every worker stack starts with (gunicorn, runpy, the worker's asyncio.run)."""
        counts: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            for frame in set(stack):
                if not _BOILERPLATE.search(file_of(frame)):
                    counts[frame] += count
        return counts

    def own(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            counts[stack[-1]] += count
        return counts


def parse_collapsed(lines: Iterable[str]) -> Profile:
    """py-spy's ``--format raw`` (one ``frame;frame;... count`` line per distinct stack);
    line numbers are dropped so that a function is one entry."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        if not line.strip():
            continue
        frames, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stack = []
        for frame in frames.split(";"):
            match = _FRAME.match(frame)
            stack.append(f"{match['function']} ({match['file']})" if match else frame)
        stacks[tuple(stack)] += int(count)
    return Profile(stacks)


def short(frame: str) -> str:
    """``start_span (opentelemetry/sdk/trace/__init__.py)``: the path from the package on."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    if not match["file"].startswith("/"):  # already short (shorten_paths)
        return f"{match['function']} ({match['file']})"
    parts = Path(match["file"]).parts
    for anchor in ("site-packages", "src"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    else:
        parts = parts[-2:]
    return f"{match['function']} ({'/'.join(parts)})"


_INSTALL_PREFIX = re.compile(r"\((?:[^();]*/)?(?:site-packages|src)/")
_STDLIB_PREFIX = re.compile(r"\(/[^();]*/(python3\.\d+/)")


def shorten_paths(collapsed: str) -> str:
    """Frames as ``f (opentelemetry/sdk/trace/__init__.py:1100)``, ``f (python3.11/x.py:9)``:
    a tenth of the size, and the same on every machine."""
    return _STDLIB_PREFIX.sub(r"(\1", _INSTALL_PREFIX.sub("(", collapsed))


def report(name: str, profile: Profile, count: int, cpu_s: float, *, unit: str) -> str:
    """The text of ``<run>.txt``: µs of CPU per request (or scrape) by package, then functions."""
    total = max(1, profile.samples)
    per_unit_us = cpu_s * 1e6 / max(1, count)
    lines = [
        f"# {name}: {profile.samples:,} samples at {RATE_HZ} Hz, {count:,} {unit}s, "
        f"{per_unit_us:,.0f} us of CPU per {unit} (/proc: utime + stime of the sampled pids)",
        "",
        "## CPU by package (a sample goes to the innermost frame that has one)",
        f"{'share':>7}  {'us/' + unit:>10}  package",
    ]
    for package, samples in profile.by_package().most_common():
        share = samples / total
        lines.append(f"{share:7.1%}  {share * per_unit_us:10.0f}  {package}")
    lines += ["", "## CPU by where it ran", f"{'share':>7}  {'us/' + unit:>10}  where"]
    for root, samples in profile.by_root().most_common(TOP):
        share = samples / total
        lines.append(f"{share:7.1%}  {share * per_unit_us:10.0f}  {root}")
    for title, counts in (("inclusive", profile.inclusive()), ("own", profile.own())):
        lines += ["", f"## top {TOP} functions by {title} time", f"{'share':>7}  function"]
        for frame, samples in counts.most_common(TOP):
            lines.append(f"{samples / total:7.1%}  {short(frame)}")
    return "\n".join(lines) + "\n"


# --- the runs --------------------------------------------------------------------------------
def py_spy(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    py_spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    argv = [py_spy_bin, "record", "--pid", str(pid), "--duration", str(int(seconds)),
            "--rate", str(RATE_HZ), "--format", "raw", "--full-filenames", "--nonblocking",
            "--output", str(output)]  # fmt: skip
    # --nonblocking: the workers are never paused, so the load is what make bench puts on them.
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603


def profile_run(run: Run, deployment: Deployment, scripts: dict[str, Path], work: Path) -> None:
    name, service, path = run.name, run.service, run.path
    url = deployment.gateway_url(path) if run.via_gateway else deployment.url(service, path)
    seconds, warmup, sampled = 12, 2, 8
    extra = ["2", str(sampled + 1)] if run.script == "process" else []
    wrk = subprocess.Popen(  # noqa: S603
        wrk_argv(url, scripts[run.script], run.connections, seconds, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    scraper = None
    master = deployment.masters[service]
    # (output name, pids, what is counted): the workers per request; the full variant's
    # master, which answers the scrapes, per scrape.
    groups = [(name, procfs.children(master), "request")]
    if deployment.variant == "full":
        groups.append((f"{name}-metrics-master", [master], "scrape"))
    try:
        time.sleep(warmup)
        if deployment.variant == "full":
            scraper = subprocess.Popen(  # noqa: S603
                hey_argv(deployment.metrics_url(service), sampled),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        before = {label: procfs.cpu_seconds(pids) for label, pids, _ in groups}
        spies = [
            (pid, py_spy(pid, sampled, work / f"{label}-{pid}.raw"))
            for label, pids, _ in groups
            for pid in pids
        ]
        for pid, spy in spies:
            _, err = spy.communicate(timeout=sampled + 30)
            if spy.returncode != 0:
                raise ComponentFailedError(f"py-spy on {pid} failed: {err.decode()[-500:]}")
        cpu = {label: procfs.cpu_seconds(pids) - before[label] for label, pids, _ in groups}
        out, _ = wrk.communicate(timeout=seconds + 30)
    finally:
        for child in (wrk, scraper):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
    counts = {"request": _requests_in(out, seconds, sampled), "scrape": scrape_count(sampled)}
    for label, pids, unit in groups:
        raw = "\n".join((work / f"{label}-{pid}.raw").read_text().strip() for pid in pids)
        (OUT / f"{label}.collapsed").write_text(shorten_paths(raw) + "\n")
        text = report(label, parse_collapsed(raw.splitlines()), counts[unit], cpu[label], unit=unit)
        (OUT / f"{label}.txt").write_text(text)
        say(text.split("\n## top", 1)[0])


def _requests_in(wrk_stdout: str, seconds: float, sampled: float) -> int:
    """Requests answered while py-spy sampled: wrk's total, pro rata (the load is steady)."""
    return round(parse_wrk(wrk_stdout)["requests"] * sampled / seconds)


def main() -> None:
    try:
        check_tools()
    except ComponentFailedError as exc:
        raise SystemExit(f"profile: {exc}") from None
    OUT.mkdir(parents=True, exist_ok=True)
    only = [name for name in os.environ.get("PROFILE_RUNS", "").split(",") if name]
    runs = [run for run in RUNS if not only or run.name in only]
    for run in runs:
        for old in OUT.glob(f"{run.name}*"):
            old.unlink()
    with throwaway_state("profile-stack-") as state:
        scripts = write_scripts(state / "wrk")
        with otlp_sink() as sink, running_stack(state) as stack:
            side = SideDeployments(stack, state / "bench", sink_endpoint(sink))
            try:
                deployments = {
                    "full": full_deployment(stack, sink_endpoint(sink)),
                    "bare": side.start("bare", 100),
                }
                for run in runs:
                    say(f"profiling {run.name}")
                    profile_run(run, deployments[run.variant], scripts, state)
            finally:
                side.stop()
    say(f"Wrote {OUT}/*.txt and *.collapsed")


if __name__ == "__main__":
    main()

"""Where each variant runs: the full variant is the native stack's own services (and gateway);
the bare and peer variants are gunicorn pairs beside it on ports of their own, bare with its own
nginx too, started once and stopped at the end."""

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from stackctl.addresses import PORT_OFFSET, REPO, render_tree
from stackctl.bench.settings import GATEWAY_VARIANTS, SERVICES, say
from stackctl.native import NativeStack
from stackctl.native_map import Machine
from stackctl.ports import port_is_free
from stackctl.processes import ComponentFailedError, ServiceProcess, spawn

COMPOSE_PORTS = {"api-svc": 8000, "processor-svc": 8001, "gateway": 8080, "gateway-status": 8081}
BARE_ENV = {"METRICS_ENABLED": "false", "ACCESS_LOG_ENABLED": "false", "TRACING_ENABLED": "false"}
SERVICE_APPS = {"api-svc": "api_svc.main:app", "processor-svc": "processor_svc.main:app"}
PEER_APPS = {
    "api-svc": "stackctl.bench_peer:create_api_app()",
    "processor-svc": "stackctl.bench_peer:create_processor_app()",
}


@contextmanager
def throwaway_state(prefix: str, *, keep: bool = False) -> Iterator[Path]:
    """Not the user's .stack/: a temporary state directory for the native stack, readable by
    PostgreSQL's and nginx's unprivileged users (mkdtemp makes it 0700); removed afterwards
    unless ``keep`` (its logs)."""
    state = Path(tempfile.mkdtemp(prefix=prefix))
    state.chmod(0o711)
    try:
        yield state
    finally:
        if keep:
            say(f"state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


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


@dataclass(frozen=True)
class Command:
    """How one process of a side variant runs."""

    component: str  # "api-svc", "processor-svc" or "gateway": whose master it is
    name: str  # "<variant>-<component>": its log file and what progress lines call it
    argv: list[str]
    env: dict[str, str]
    health_url: str


def side_commands(
    stack: NativeStack, variant: str, offset: int, directory: Path, sink: str
) -> list[Command]:
    """The command lines and environments of a side variant's processes (and the files they
    need in ``directory``), all in this one function. The services: the stack's own (the twin
    runs what compose says), on the variant's port, exporting to the sink, peer's app or
    bare's switches. nginx: the twin's gateway at the variant's ports, in ``directory``."""
    ports = {name: port + offset for name, port in COMPOSE_PORTS.items()}
    commands = []
    for name in SERVICES:
        port = ports[name]
        metrics_dir = directory / f"{name}-metrics"
        metrics_dir.mkdir(exist_ok=True)
        env = {
            **stack.spec_env(name),
            "PORT": str(port),
            # Never the stack's directory: gunicorn wipes it at start.
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
            "METRICS_PORT": "",  # not the stack's port; only the full variant is scraped
            **(BARE_ENV if variant == "bare" else {}),
        }
        apps = PEER_APPS if variant == "peer" else SERVICE_APPS
        argv = [apps[name] if arg == SERVICE_APPS[name] else arg for arg in stack.spec_argv(name)]
        health = f"http://127.0.0.1:{port}/health"
        commands.append(Command(name, f"{variant}-{name}", argv, env, health))
    if variant in GATEWAY_VARIANTS:
        machine = Machine(
            {PORT_OFFSET: str(offset)}, directory / "config", directory / "data", directory / "run"
        )
        render_tree(REPO / "gateway", machine.config / "gateway", machine.env)
        gateway = stack.launch("gateway", machine)
        log_path = directory / f"{variant}-gateway.log"
        log_path.touch()
        for path in gateway.dirs:
            path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # As in stackctl.native: a root master's workers run as nobody and reopen
            # /dev/stdout (the log file) and the prefix's temp dirs.
            nobody = pwd.getpwnam("nobody")
            for path in (*gateway.dirs, log_path):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        if gateway.health is None:
            raise ComponentFailedError("compose's gateway has no healthcheck to wait for")
        commands.append(
            Command("gateway", f"{variant}-gateway", gateway.argv, gateway.env, gateway.health)
        )
    return commands


class SideDeployments:
    """The bare and peer variants beside the stack, started once and stopped at the end."""

    def __init__(self, stack: NativeStack, root: Path, sink: str) -> None:
        self.stack = stack
        self.root = root
        self.sink = sink
        self.processes: list[ServiceProcess] = []

    def start(self, variant: str, start_offset: int) -> Deployment:
        offset = side_offset(self.stack, start_offset)
        deployment = Deployment(
            variant, {name: port + offset for name, port in COMPOSE_PORTS.items()}
        )
        directory = self.root / variant
        directory.mkdir(parents=True, exist_ok=True)
        for command in side_commands(self.stack, variant, offset, directory, self.sink):
            process = spawn(
                command.name,
                command.argv,
                log_path=directory / f"{command.name}.log",
                env=command.env,
                health_url=command.health_url,
                timeout=self.stack.timeout,
                cwd=directory,
                on_start=self.processes.append,  # stopped at the end even if it never got healthy
            )
            deployment.masters[command.component] = process.proc.pid
            say(f"  started {command.name} (port {process.port})")
        return deployment

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

"""How the native twin runs a compose service: every difference from docker-compose.yml.

The twin takes each service's command line, environment and mounts from compose itself
(stackctl.compose) and changes exactly what this module lists, nothing else:

- programs: what an image runs becomes the OS package's binary or this checkout's virtualenv
  (``OS_PROGRAMS``, ``IMAGE_PROGRAMS``; our own images run their Dockerfile stage's ``CMD``);
- paths: a container path becomes a path on this machine (``mounts``): a bind mount of a
  config tree -> its rendered copy, any other bind mount -> the checkout (or the host path
  itself), a named volume -> ``data/<name without -data>``, a tmpfs -> ``run/<service>/<path>``;
- addresses: ``service:port`` -> ``127.0.0.1:<native port>`` (stackctl.addresses), and each
  port a component listens on -> 127.0.0.1 and its native port (``LISTEN_FLAGS``,
  ``LISTEN_ENV``);
- ``ADDED``: what a container gets from being a container (its own network namespace, its
  image's defaults) and a process on a shared machine must be told;
- ``FALLBACKS``: flags an older OS package does not know yet, and what replaces each there;
- ``CONFIG_TREES``: config files that name their component's container paths;
- ``WHEN_ABSENT``: variables that point at an optional component the machine lacks;
- ``STDERR_LOGS``: components whose stderr is logged apart from stdout;
- ``HEALTH``: where the twin waits for a component, when compose's healthcheck has no URL.

Outside this module, in stackctl.native, and only these: the twin's own database credentials
replace ``.env``'s; the OS's PostgreSQL cluster replaces the postgres image, with compose's
``-c`` settings (``server_settings``), and its owner role gets ``pg_monitor`` (compose's owner
is the image's superuser); as root, the gateway's temp and log files are given to nobody,
whom a root nginx runs its workers as.
"""

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

from stackctl.addresses import CONFIG_DIRS, LOOPBACK, REPO, native_port, render_text
from stackctl.processes import ComponentFailedError

# Programs a compose entrypoint or command names, and what runs them here.
OS_PROGRAMS = {"nginx": ("nginx", "/usr/sbin/nginx"), "/bin/sh": ("sh",)}
# The programs of our own images live in this checkout's virtualenv.
VENV_PROGRAMS = {
    "gunicorn": ["-m", "gunicorn"],
    "api-svc-db": ["-m", "api_svc.db_setup"],
    "python": [],
}
# Images whose program compose does not name (the image's own entrypoint): Debian's package
# name first, the upstream binary name second.
IMAGE_PROGRAMS = {
    "prom/node-exporter": ("prometheus-node-exporter", "node_exporter"),
    "prometheuscommunity/postgres-exporter": ("prometheus-postgres-exporter", "postgres_exporter"),
    "nginx/nginx-prometheus-exporter": ("prometheus-nginx-exporter", "nginx-prometheus-exporter"),
    "grafana/loki": ("loki",),
    "grafana/tempo": ("tempo",),
    "grafana/alloy": ("alloy",),
    "grafana/grafana": ("grafana",),
}
OUR_IMAGES = "fastapi-observability/"
DOCKERFILE = REPO / "Dockerfile"

# Flags whose value is an address (or a bare port) the component listens on.
LISTEN_FLAGS = {
    "alertmanager": ("--web.listen-address",),
    "alert-webhook": ("--port",),
    "alloy": ("--server.http.listen-addr",),
}
# Environment variables that hold a port the component listens on.
LISTEN_ENV = {"api-svc": ("PORT", "METRICS_PORT"), "processor-svc": ("PORT", "METRICS_PORT")}
# Flags an older OS package does not know, and what replaces each there: Debian 12's
# postgres-exporter 0.11 has no stat_statements collector, so a custom query gives the same
# series.
FALLBACKS = {
    "postgres-exporter": {
        "--collector.stat_statements": [
            f"--extend.query-path={Path(__file__).with_name('pg_stat_statements.yml')}"
        ],
    },
}


@dataclass(frozen=True)
class Machine:
    """Where the twin's files live and how its ports are numbered."""

    env: Mapping[str, str]
    config: Path  # rendered config trees
    data: Path  # named volumes
    run: Path  # tmpfs mounts, render dirs

    def listen(self, service: str, port: int) -> str:
        return f"{LOOPBACK}:{native_port(service, port, self.env)}"

    def url(self, service: str, port: int, path: str = "") -> str:
        return f"http://{self.listen(service, port)}{path}"


@dataclass(frozen=True)
class Added:
    """Arguments after compose's, and environment over compose's. Values may name container
    paths: they are mapped like compose's own."""

    args: Callable[[Machine], list[str]] = lambda _: []
    env: Callable[[Machine], dict[str, str]] = lambda _: {}


def _gunicorn_env(_: Machine) -> dict[str, str]:
    # In its container a service binds all interfaces of its own namespace and trusts the
    # gateway's X-Forwarded-* from any peer of the internal networks; here, loopback only.
    return {"BIND_HOST": LOOPBACK, "FORWARDED_ALLOW_IPS": LOOPBACK}


def _listen_on(service: str, port: int) -> Callable[[Machine], list[str]]:
    # The image listens on all interfaces of its container by default.
    return lambda m: [f"--web.listen-address={m.listen(service, port)}"]


def _server_flags(service: str, http: int, grpc: int) -> Callable[[Machine], list[str]]:
    # Loki and Tempo listen where their config file says (all interfaces, gRPC on 9095 for
    # both); the flags win over the file.
    return lambda m: [
        f"-server.http-listen-address={LOOPBACK}",
        f"-server.http-listen-port={native_port(service, http, m.env)}",
        f"-server.grpc-listen-address={LOOPBACK}",
        f"-server.grpc-listen-port={native_port(service, grpc, m.env)}",
    ]


ADDED: dict[str, Added] = {
    "api-svc": Added(env=_gunicorn_env),
    "processor-svc": Added(env=_gunicorn_env),
    "gateway": Added(),
    "prometheus": Added(
        args=_listen_on("prometheus", 9090),
        # render-config.sh's defaults are the image's paths.
        env=lambda _: {
            "PROMETHEUS_RENDER_DIR": "/tmp/prometheus",  # noqa: S108 - the image's path
            "PROMETHEUS_BIN": find_binary("prometheus"),
        },
    ),
    "alertmanager": Added(
        env=lambda _: {
            "ALERTMANAGER_CONFIG_TEMPLATE": "/etc/alertmanager/alertmanager.yml",
            "ALERTMANAGER_RENDER_DIR": "/tmp/alertmanager",  # noqa: S108 - the image's path
            "ALERTMANAGER_BIN": find_binary("prometheus-alertmanager", "alertmanager"),
        }
    ),
    "alert-webhook": Added(args=lambda _: ["--host", LOOPBACK]),
    "node-exporter": Added(args=_listen_on("node-exporter", 9100)),
    "postgres-exporter": Added(args=_listen_on("postgres-exporter", 9187)),
    "nginx-exporter": Added(args=_listen_on("nginx-exporter", 9113)),
    "loki": Added(args=_server_flags("loki", 3100, 9095)),
    "tempo": Added(
        # Its memberlist (tempo.yml: loopback) on a port of its own too.
        args=lambda m: [
            *_server_flags("tempo", 3200, 9095)(m),
            f"-memberlist.bind-port={native_port('tempo', 7946, m.env)}",
        ]
    ),
    "alloy": Added(),
    "grafana": Added(
        # The image's entrypoint passes these; its ENV names its own paths.
        args=lambda m: ["server", f"--homepath={m.env.get('GRAFANA_HOME', '/usr/share/grafana')}"],
        env=lambda m: {
            "GF_SERVER_HTTP_ADDR": LOOPBACK,
            "GF_SERVER_HTTP_PORT": str(native_port("grafana", 3000, m.env)),
            "GF_PATHS_DATA": "/var/lib/grafana",
            "GF_PATHS_PROVISIONING": str(m.config / "observability/grafana/provisioning"),
        },
    ),
}
# Config trees whose files name the component's own container paths (Loki's /loki, Tempo's
# /var/tempo, Grafana's dashboards): natively those become its native paths too.
CONFIG_TREES = {
    "loki": "observability/loki",
    "tempo": "observability/tempo",
    "grafana": "observability/grafana",
}
# Components whose stderr gets a log file of its own: nginx's error log is plain text on
# stderr, its access log JSON on stdout (in compose, the log driver keeps both streams apart).
STDERR_LOGS = {"gateway": "gateway-error.log"}
# Variables dropped when the component they point at does not run here (no binary).
WHEN_ABSENT = {"tempo": ("OTEL_EXPORTER_OTLP_ENDPOINT",)}
# Where to wait for a component whose compose healthcheck names no URL (or that has none),
# and where the twin waits for readiness rather than liveness.
HEALTH = {
    "prometheus": ("prometheus", 9090, "/-/ready"),
    "alertmanager": ("alertmanager", 9093, "/-/ready"),
    "nginx-exporter": ("nginx-exporter", 9113, "/metrics"),
    "loki": ("loki", 3100, "/ready"),
    "tempo": ("tempo", 3200, "/ready"),
    "alloy": ("alloy", 12345, "/-/ready"),
}
_HEALTH_URL = re.compile(r"http://127\.0\.0\.1:(?P<port>%s|\d+)(?P<path>/[^'\" ]*)")


@dataclass
class Launch:
    """One component as the twin starts it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health: str | None
    dirs: list[Path] = field(default_factory=list)  # its named volumes and tmpfs, to create
    notices: list[str] = field(default_factory=list)


def find_binary(*names: str) -> str:
    for name in names:
        if found := shutil.which(name):
            return found
        if Path(name).is_absolute() and Path(name).is_file():
            return name
    raise ComponentFailedError(f"not installed: {' or '.join(names)} (run scripts/install-deps)")


@cache
def dockerfile_cmd(stage: str) -> tuple[str, ...]:
    """The ``CMD`` of a stage of the repository's Dockerfile (exec form)."""
    import json  # noqa: PLC0415

    found = re.search(
        rf"^FROM\s+\S+\s+AS\s+{re.escape(stage)}\s*$(?P<body>.*?)(?=^FROM\s|\Z)",
        DOCKERFILE.read_text(),
        re.MULTILINE | re.DOTALL | re.IGNORECASE,
    )
    cmd = found and re.search(r"^CMD\s+(\[.*\])\s*$", found["body"], re.MULTILINE)
    if not cmd:
        raise ComponentFailedError(f"no CMD for stage {stage} in {DOCKERFILE}")
    return tuple(json.loads(cmd[1]))


def mounts(service: str, spec: Mapping[str, Any], machine: Machine) -> list[tuple[str, Path]]:
    """(container path, native path) of every volume and tmpfs, longest container path first."""
    pairs = []
    for volume in spec.get("volumes", []):
        target, source = volume["target"], volume["source"]
        if volume["type"] == "volume":
            pairs.append((target, machine.data / source.removesuffix("-data")))
        elif Path(source).is_absolute():
            pairs.append((target, Path(source)))
        else:
            relative = Path(source).as_posix().removeprefix("./")
            rendered = any(relative == d or relative.startswith(f"{d}/") for d in CONFIG_DIRS)
            pairs.append((target, (machine.config if rendered else REPO) / relative))
    for entry in spec.get("tmpfs", []):
        target = entry.split(":", 1)[0]
        pairs.append((target, machine.run / service / target.lstrip("/")))
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)


def _map_paths(value: str, pairs: list[tuple[str, Path]]) -> str:
    """Every container path in ``value`` made native, in one pass (a native path may itself
    start with a container path such as /tmp)."""
    if not pairs:
        return value
    natives = {target.rstrip("/") or "/": str(native) for target, native in pairs}
    pattern = "|".join(re.escape(target) for target in natives)  # longest first
    return re.sub(
        rf"(?<![\w/.-])(?:{pattern})(?=/|$|[\s\"',;])",
        lambda match: natives[match[0]],
        value,
    )


def _program(spec: Mapping[str, Any]) -> list[str]:
    """entrypoint + command as the container runs them, the program made native."""
    image = spec["image"].rsplit(":", 1)[0]
    entrypoint = list(spec.get("entrypoint") or [])
    command = list(spec.get("command") or [])
    if image.startswith(OUR_IMAGES) and not entrypoint and not command:
        command = list(dockerfile_cmd(image.removeprefix(OUR_IMAGES)))
    argv = entrypoint + command
    if not entrypoint and image in IMAGE_PROGRAMS:
        return [find_binary(*IMAGE_PROGRAMS[image]), *argv]
    program, *rest = argv
    if program in VENV_PROGRAMS:
        return [sys.executable, *VENV_PROGRAMS[program], *rest]
    return [find_binary(*OS_PROGRAMS.get(program, (program,))), *rest]


def _listen_args(service: str, argv: list[str], machine: Machine) -> list[str]:
    flags = LISTEN_FLAGS.get(service, ())
    out: list[str] = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag in flags and eq:
            out.append(f"{flag}={machine.listen(service, int(value.rsplit(':', 1)[-1]))}")
        elif out and out[-1] in flags and arg.isdigit():
            out.append(str(native_port(service, int(arg), machine.env)))
        else:
            out.append(arg)
    return out


def _known_flags(binary: str) -> str:
    """The binary's help text (some print it on stderr)."""
    return subprocess.run(  # noqa: S603 - our own argv
        [binary, "--help"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30, check=False,
    ).stdout  # fmt: skip


def _health(service: str, spec: Mapping[str, Any], env: Mapping[str, str], m: Machine) -> str:
    if service in HEALTH:
        return m.url(*HEALTH[service])
    test = " ".join(spec.get("healthcheck", {}).get("test", []))
    found = _HEALTH_URL.search(test)
    if not found:
        raise ComponentFailedError(f"{service}: no health URL in compose and none in HEALTH")
    if found["port"] == "%s":  # the services' probe: the port is their PORT
        return f"http://{LOOPBACK}:{env['PORT']}{found['path']}"
    return m.url(service, int(found["port"]), found["path"])


def launch(
    service: str, spec: Mapping[str, Any], machine: Machine, *, absent: set[str] | None = None
) -> Launch:
    """What runs natively for compose service ``service`` (its resolved ``spec``), beside the
    optional components ``absent`` that do not run here."""
    pairs = mounts(service, spec, machine)

    def native(value: str) -> str:
        return render_text(_map_paths(value, pairs), machine.env)

    added = ADDED.get(service, Added())
    program, *args = _program(spec)
    argv = [program, *(native(a) for a in args), *added.args(machine)]
    argv = _listen_args(service, argv, machine)
    notices = []
    if fallbacks := FALLBACKS.get(service):
        known = _known_flags(program)
        for flag, instead in fallbacks.items():
            if flag in argv and flag not in known:
                argv[argv.index(flag) : argv.index(flag) + 1] = instead
                notices.append(f"{service}: no {flag} in {Path(program).name}: {' '.join(instead)}")
    env = {key: native(str(value)) for key, value in (spec.get("environment") or {}).items()}
    for key in LISTEN_ENV.get(service, ()):
        env[key] = str(native_port(service, int(env[key]), machine.env))
    env.update({key: native(value) for key, value in added.env(machine).items()})
    for missing in absent or ():
        for key in WHEN_ABSENT.get(missing, ()):
            env.pop(key, None)
    health = None if spec.get("restart") == "no" else _health(service, spec, env, machine)
    made = [path for _, path in pairs if path.is_relative_to(machine.data)] + [
        path for _, path in pairs if path.is_relative_to(machine.run)
    ]
    return Launch(service, argv, env, health, dirs=made, notices=notices)


def map_config_tree(service: str, spec: Mapping[str, Any], machine: Machine) -> None:
    """The rendered config files of ``service`` with its container paths made native."""
    pairs = mounts(service, spec, machine)
    for path in sorted((machine.config / CONFIG_TREES[service]).rglob("*")):
        if path.is_file():
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            path.write_text(_map_paths(text, pairs))


def server_settings(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``-c name=value`` settings of compose's ``postgres`` command."""
    command = list(spec.get("command") or [])
    return tuple(value for flag, value in pairwise(command) if flag == "-c")

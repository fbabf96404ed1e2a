"""What the native twin changes in the config files: addresses, and nothing else.

Every config file is written for compose and names other components as
``<compose service>:<port>``; the gateway listens on a bare ``listen <port>``. The native twin
runs copies of those files in which each such address becomes ``127.0.0.1:<port>``, the port
unchanged unless the environment overrides it (``GATEWAY_PORT``, ``PROMETHEUS_PORT``,
``PG_PORT``, or ``STACK_PORT_OFFSET`` for all of them) or two components share it
(``MOVED_PORTS``); a component's own wildcard binds become loopback. Nothing else in a file
changes; ``tests/native/test_config_parity.py`` proves it. How commands and environments are
made native: stackctl.native_map.
"""

import os
import re
import shutil
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[4]
COMPOSE_FILE = REPO / "docker-compose.yml"
LOOPBACK = "127.0.0.1"

# The config trees the native twin renders, relative to the repository root.
CONFIG_DIRS = (
    "gateway",
    "observability/prometheus",
    "observability/alertmanager",
    "observability/loki",
    "observability/tempo",
    "observability/alloy",
    "observability/grafana",
)

# Environment overrides of a component's port: (compose service, port) -> variable.
PORT_OVERRIDES = {
    ("gateway", 8080): "GATEWAY_PORT",
    ("prometheus", 9090): "PROMETHEUS_PORT",
    ("postgres", 5432): "PG_PORT",
}
# Added to every other port, so several native stacks can run side by side (tests, CI).
PORT_OFFSET = "STACK_PORT_OFFSET"
# Ports two services both listen on in compose (each in its own container): natively, one
# moves. Loki and Tempo both serve gRPC on 9095.
MOVED_PORTS = {("tempo", 9095): 9096}
# Config trees of one component: a wildcard bind there (`0.0.0.0:<port>`) becomes loopback.
OWNERS = {"observability/loki": "loki", "observability/tempo": "tempo"}
_WILDCARD = re.compile(r"\b0\.0\.0\.0:(?P<port>\d{2,5})\b")

_LISTEN = re.compile(r"^(?P<indent>\s*listen\s+)(?P<port>\d{2,5})\b", re.MULTILINE)


@cache
def compose_services() -> tuple[str, ...]:
    """The service names of docker-compose.yml, longest first (so no name shadows another)."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return tuple(sorted(services, key=len, reverse=True))


def _address_pattern() -> re.Pattern[str]:
    names = "|".join(re.escape(name) for name in compose_services())
    return re.compile(rf"(?<![\w.-])(?P<host>{names}):(?P<port>\d{{2,5}})\b")


def native_port(service: str, port: int, env: Mapping[str, str] | None = None) -> int:
    """Where ``service``'s ``port`` listens natively: its override, else port + offset."""
    env = os.environ if env is None else env
    override = env.get(PORT_OVERRIDES.get((service, port), ""), "")
    if override:
        return int(override)
    return MOVED_PORTS.get((service, port), port) + int(env.get(PORT_OFFSET, "") or 0)


def render_text(text: str, env: Mapping[str, str] | None = None, owner: str | None = None) -> str:
    """``text`` with every compose address replaced by its native one; in a config file of
    service ``owner``, its wildcard binds too."""

    def address(match: re.Match[str]) -> str:
        return f"{LOOPBACK}:{native_port(match['host'], int(match['port']), env)}"

    def listen(match: re.Match[str]) -> str:
        return f"{match['indent']}{LOOPBACK}:{native_port('gateway', int(match['port']), env)}"

    text = _LISTEN.sub(listen, _address_pattern().sub(address, text))
    if owner is None:
        return text
    return _WILDCARD.sub(
        lambda match: f"{LOOPBACK}:{native_port(owner, int(match['port']), env)}", text
    )


def render_tree(
    source: Path, target: Path, env: Mapping[str, str] | None = None, owner: str | None = None
) -> None:
    """Copy ``source`` to ``target``, rendering every text file (modes kept)."""
    if target.exists():
        shutil.rmtree(target)
    for path in sorted(source.rglob("*")):
        if "node_modules" in path.parts:
            continue
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            destination.write_text(render_text(path.read_text(), env, owner))
        except UnicodeDecodeError:
            shutil.copyfile(path, destination)
        shutil.copymode(path, destination)


def render_configs(target: Path, env: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Render every config tree under ``target``; returns repo-relative dir -> rendered dir."""
    rendered = {}
    for relative in CONFIG_DIRS:
        destination = target / relative
        render_tree(REPO / relative, destination, env, OWNERS.get(relative))
        rendered[relative] = destination
    return rendered

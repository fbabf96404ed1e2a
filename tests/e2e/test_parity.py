"""The native processes read the rendered copies of the repository's config files."""

from pathlib import Path

import pytest

from stackctl.addresses import REPO, render_text
from stackctl.native import NativeStack


def test_the_gateway_runs_the_rendered_repository_file(stack: NativeStack) -> None:
    cmdline = Path(f"/proc/{stack.pid('gateway')}/cmdline").read_bytes().decode()
    rendered = stack.state.config / "gateway/nginx.conf"
    assert str(rendered) in cmdline
    assert rendered.read_text() == render_text((REPO / "gateway/nginx.conf").read_text(), stack.env)


def test_prometheus_runs_the_rendered_repository_files(stack: NativeStack) -> None:
    """render-config.sh's copy, as in compose: the addresses rendered, and (no threshold set in
    the session's environment) every rule file byte for byte."""
    cmdline = Path(f"/proc/{stack.pid('prometheus')}/cmdline").read_bytes().decode()
    running = Path(stack.spec_env("prometheus")["PROMETHEUS_RENDER_DIR"])
    assert f"--config.file={running / 'prometheus.yml'}" in cmdline.split("\0")
    source = REPO / "observability/prometheus"
    assert (running / "prometheus.yml").read_text() == render_text(
        (source / "prometheus.yml").read_text(), stack.env
    )
    rules = sorted((source / "rules").glob("*.yml"))
    assert [p.name for p in sorted((running / "rules").glob("*.yml"))] == [p.name for p in rules]
    if not stack.env.get("POSTGRES_TPS_THRESHOLD"):
        for path in rules:
            assert (running / "rules" / path.name).read_text() == path.read_text(), path.name


def test_alertmanager_runs_the_rendered_receivers(stack: NativeStack) -> None:
    cmdline = Path(f"/proc/{stack.pid('alertmanager')}/cmdline").read_bytes().decode()
    rendered = Path(stack.spec_env("alertmanager")["ALERTMANAGER_RENDER_DIR"]) / "alertmanager.yml"
    assert str(rendered) in cmdline
    receiver = f"http://127.0.0.1:{stack.port('alert-webhook', 5001)}/alerts"
    assert receiver in rendered.read_text()


@pytest.mark.parametrize(
    "component",
    ["prometheus", "alertmanager", "node-exporter", "postgres-exporter", "nginx-exporter"],
)
def test_no_component_warns_that_its_command_line_is_deprecated(
    stack: NativeStack, component: str
) -> None:
    # The newer generation warns where the old one is silent: nginx exporter 1.x (Debian 13,
    # ubuntu-24.04) says single-dash flags "will be removed"; 0.11 takes both spellings.
    log = (stack.state.logs / f"{component}.log").read_text(errors="replace")
    warnings = [line for line in log.splitlines() if "deprecat" in line.lower()]
    assert not warnings, warnings

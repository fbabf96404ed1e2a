"""The native processes read the rendered copies of the repository's config files."""

from pathlib import Path

import pytest

from stackctl.addresses import REPO, render_text
from stackctl.native import NativeStack


@pytest.mark.parametrize(
    ("component", "config"),
    [
        ("gateway", "gateway/nginx.conf"),
        ("prometheus", "observability/prometheus/prometheus.yml"),
    ],
)
def test_components_run_the_rendered_repository_files(
    stack: NativeStack, component: str, config: str
) -> None:
    cmdline = Path(f"/proc/{stack.pid(component)}/cmdline").read_bytes().decode()
    rendered = stack.state.config / config
    assert str(rendered) in cmdline
    assert rendered.read_text() == render_text((REPO / config).read_text(), stack.env)


def test_alertmanager_runs_the_rendered_receivers(stack: NativeStack) -> None:
    cmdline = Path(f"/proc/{stack.pid('alertmanager')}/cmdline").read_bytes().decode()
    assert str(stack.state.run / "alertmanager" / "alertmanager.yml") in cmdline
    receiver = f"http://127.0.0.1:{stack.port('alert-webhook', 5001)}/alerts"
    assert receiver in (stack.state.run / "alertmanager" / "alertmanager.yml").read_text()


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

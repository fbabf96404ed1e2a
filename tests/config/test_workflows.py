"""GitHub Actions workflows: schema-valid, pinned, least privilege, bounded; the CI jobs exist.

Every file in .github/workflows is validated with check-jsonschema's vendored GitHub workflow
schema (no network); a missing check-jsonschema fails the tests. The compose smoke script the
CI runs (scripts/compose_smoke.py) is checked here without a stack: it compiles, uses the
standard library only, `--help` works, and its parsing helpers behave.
"""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted([*WORKFLOW_DIR.glob("*.yml"), *WORKFLOW_DIR.glob("*.yaml")])
CI = WORKFLOW_DIR / "ci.yml"
SMOKE = ROOT / "scripts" / "compose_smoke.py"
SERVICES = ("api-svc", "processor-svc")

# `uses: owner/repo[/path]@<40 hex> # vX.Y.Z`
PINNED_USES = re.compile(
    r"^\s*(?:-\s*)?uses:\s*(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40})\s+#\s*v\d+\.\d+\.\d+\s*$"
)
USES_LINE = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)")
# GitHub's hosted runners no longer run `node20` actions. The lowest major accepted for each
# action we use, one that runs on Node 24 (the release notes of checkout v5.0.0,
# setup-buildx-action v4.0.0 and build-push-action v7.0.0 say they switched; checkout v6 is
# its current major). An action missing here has not been checked: add it once its
# action.yml at the pinned commit says `using: node24`.
NODE24_MAJORS = {
    "actions/checkout": 6,
    "docker/setup-buildx-action": 4,
    "docker/build-push-action": 7,
}


def ids(paths: list[Path]) -> list[str]:
    return [path.name for path in paths]


def load(path: Path) -> dict[Any, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path.name}: not a mapping"
    return document


def triggers(workflow: dict[Any, Any]) -> Any:
    """`on:` (YAML 1.1 loaders such as PyYAML read the bare key `on` as True)."""
    return workflow.get("on", workflow.get(True))


def jobs(workflow: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    value = workflow.get("jobs")
    assert isinstance(value, dict), "no jobs"
    return value


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    value = job.get("steps", [])
    assert isinstance(value, list)
    return value


def runs(job: dict[str, Any]) -> Iterator[str]:
    for step in steps(job):
        if "run" in step:
            yield str(step["run"])


def check_jsonschema() -> str:
    """check-jsonschema from the dev environment: beside this interpreter or on PATH."""
    for candidate in (
        Path(sys.executable).parent / "check-jsonschema",
        shutil.which("check-jsonschema"),
    ):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("check-jsonschema not found: install the dev dependency group (uv sync --frozen)")


# --------------------------------------------------------------------------- every workflow
def test_there_are_workflows() -> None:
    assert CI in WORKFLOWS


def test_workflows_match_the_github_workflow_schema() -> None:
    result = subprocess.run(
        [check_jsonschema(), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_every_action_is_pinned_to_a_commit_sha(path: Path) -> None:
    uses = [line for line in path.read_text(encoding="utf-8").splitlines() if USES_LINE.match(line)]
    for line in uses:
        match = USES_LINE.match(line)
        assert match is not None
        if match["ref"].startswith("./"):  # an action of this repository
            continue
        assert PINNED_USES.match(line), (
            f"{path.name}: not `owner/repo@<sha> # vX.Y.Z`: {line.strip()}"
        )
    # The raw-text scan above and the parsed document agree on how many `uses:` there are.
    parsed = [
        str(step["uses"])
        for job in jobs(load(path)).values()
        for step in steps(job)
        if "uses" in step
    ]
    parsed += [str(job["uses"]) for job in jobs(load(path)).values() if "uses" in job]
    assert len(parsed) == len(uses)
    for ref in parsed:
        assert ref.startswith("./") or re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), ref


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_every_action_runs_on_node24(path: Path) -> None:
    for line in path.read_text(encoding="utf-8").splitlines():
        match = PINNED_USES.match(line)
        if not match:
            continue  # local actions; unpinned ones fail the test above
        action = match["action"]
        assert action in NODE24_MAJORS, f"{path.name}: check {action}'s runtime, then list it"
        tag = re.search(r"#\s*v(\d+)\.", line)
        assert tag, line
        assert int(tag[1]) >= NODE24_MAJORS[action], (
            f"{path.name}: {action} v{tag[1]} is a node20 release: {line.strip()}"
        )


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_no_pip_installs_on_the_runner(path: Path) -> None:
    # The runner's python3 is PEP 668-managed (and a fresh Debian has no pip at all):
    # scripts/install-deps installs the pinned uv into a venv of its own.
    for name, job in jobs(load(path)).items():
        for script in runs(job):
            assert not re.search(r"\bpip3? install\b", script), f"{name}: {script}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_the_token_is_read_only(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("permissions") == {"contents": "read"}
    for name, job in jobs(workflow).items():
        granted = job.get("permissions", {})
        assert isinstance(granted, dict), f"{name}: permissions must be a mapping"
        assert set(granted.values()) <= {"read", "none"}, f"{name} asks for write access"


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_every_job_is_bounded(path: Path) -> None:
    workflow = load(path)
    assert "concurrency" in workflow, "a concurrency group cancels superseded runs"
    for name, job in jobs(workflow).items():
        timeout = job.get("timeout-minutes")
        assert isinstance(timeout, int), f"{name}: no timeout-minutes"
        assert 0 < timeout <= 60, f"{name}: timeout-minutes {timeout}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=ids(WORKFLOWS))
def test_no_untrusted_input_reaches_a_shell(path: Path) -> None:
    workflow = load(path)
    on = triggers(workflow)
    events = set(on) if isinstance(on, dict | list) else {on}
    # pull_request_target runs fork code with the base repository's secrets and token.
    assert "pull_request_target" not in events
    for name, job in jobs(workflow).items():
        for script in runs(job):
            assert "github.event." not in script, f"{name}: interpolate event data via env:"
        for step in steps(job):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                # The token is not left in .git/config for later steps to find.
                assert step.get("with", {}).get("persist-credentials") is False, name


# --------------------------------------------------------------------------- ci.yml
@pytest.fixture(scope="module")
def ci_jobs() -> dict[str, dict[str, Any]]:
    return jobs(load(CI))


def test_ci_runs_on_pushes_and_pull_requests() -> None:
    on = triggers(load(CI))
    assert isinstance(on, dict)
    assert {"push", "pull_request"} <= set(on)


def test_ci_has_the_six_jobs(ci_jobs: dict[str, dict[str, Any]]) -> None:
    assert {"lint", "test", "soak", "audit", "docker-build", "compose-smoke"} <= set(ci_jobs)
    for name, job in ci_jobs.items():
        assert str(job.get("runs-on", "")).startswith("ubuntu-"), name


def test_lint_runs_make_lint(ci_jobs: dict[str, dict[str, Any]]) -> None:
    assert any(re.search(r"\bmake lint\b", script) for script in runs(ci_jobs["lint"]))


def test_test_runs_make_test_as_root(ci_jobs: dict[str, dict[str, Any]]) -> None:
    # scripts/install-deps apt-installs the Debian packages: root, so the e2e tests run too.
    scripts = [s for s in runs(ci_jobs["test"]) if re.search(r"\bmake test\b", s)]
    assert scripts, "the test job must run the README's `make test`"
    assert all(s.lstrip().startswith("sudo ") for s in scripts)


@pytest.mark.parametrize(("job", "target"), [("test", "test"), ("soak", "soak")])
def test_make_jobs_run_as_root_and_let_make_install_uv(
    ci_jobs: dict[str, dict[str, Any]], job: str, target: str
) -> None:
    # `make test`/`make soak` run scripts/install-deps, which (as root) puts the pinned uv in
    # /usr/local/bin, on sudo's secure_path: nothing to install or pass through beforehand.
    scripts = [s.strip() for s in runs(ci_jobs[job])]
    assert scripts == [f"sudo make {target}"], scripts


def test_make_test_gets_the_full_history(ci_jobs: dict[str, dict[str, Any]]) -> None:
    # make test runs the secret scan of every commit (tests/security/test_secrets.py), and
    # actions/checkout fetches one commit unless fetch-depth is 0.
    running = [
        name
        for name, job in ci_jobs.items()
        if any(re.search(r"\bmake test\b", script) for script in runs(job))
    ]
    assert running, "no job runs make test"
    for name in running:
        checkouts = [
            step for step in steps(ci_jobs[name]) if "actions/checkout@" in str(step.get("uses"))
        ]
        assert checkouts, name
        for step in checkouts:
            assert step.get("with", {}).get("fetch-depth") == 0, f"{name}: shallow checkout"


def test_each_member_s_tests_run_on_their_own(ci_jobs: dict[str, dict[str, Any]]) -> None:
    # In an environment of that member and its dev group only, so a test dependency the
    # member does not declare (or an import of the tooling) fails in CI.
    job = ci_jobs["member-tests"]
    include = job["strategy"]["matrix"]["include"]
    members = {entry["member"]: entry["tests"] for entry in include}
    assert members == {
        "service-kit": "service-kit/tests",
        "api-svc": "api-svc/tests",
        "processor-svc": "processor-svc/tests",
    }
    for member, tests in members.items():
        pyproject = (ROOT / tests).parent / "pyproject.toml"
        assert f'name = "{member}"' in pyproject.read_text(encoding="utf-8"), pyproject
    pytest_runs = [s for s in runs(job) if re.search(r"\bpytest\b", s)]
    assert len(pytest_runs) == 1, pytest_runs
    command = pytest_runs[0].split()
    assert command[:2] == ["uv", "run"], command
    assert {"--frozen", "--isolated"} <= set(command), command
    assert command[command.index("--package") + 1] == '"$MEMBER"', command
    pytest_step = next(s for s in steps(job) if "pytest" in str(s.get("run", "")))
    assert pytest_step["env"] == {"MEMBER": "${{ matrix.member }}", "TESTS": "${{ matrix.tests }}"}


@pytest.mark.parametrize(("job", "minutes"), [("test", 30), ("soak", 45)])
def test_long_jobs_have_room_over_their_measured_duration(
    ci_jobs: dict[str, dict[str, Any]], job: str, minutes: int
) -> None:
    # make test takes at most 12 minutes and make soak about 25 on a 2-core machine.
    assert ci_jobs[job]["timeout-minutes"] == minutes


@pytest.mark.parametrize("job", ["lint", "audit"])
def test_uv_comes_from_install_deps(ci_jobs: dict[str, dict[str, Any]], job: str) -> None:
    lines = [line.strip() for s in runs(ci_jobs[job]) for line in s.splitlines()]
    assert "scripts/install-deps uv" in lines, lines
    first_uv = next(i for i, s in enumerate(lines) if re.search(r"\b(uv|make)\b", s))
    assert lines.index("scripts/install-deps uv") <= first_uv
    # Later steps call uv by name: its link directory joins the job's PATH.
    assert 'echo "$HOME/.local/bin" >> "$GITHUB_PATH"' in lines, lines


def test_audit_checks_the_locked_runtime_dependencies(
    ci_jobs: dict[str, dict[str, Any]],
) -> None:
    job = ci_jobs["audit"]
    assert "continue-on-error" not in job
    assert all("continue-on-error" not in step for step in steps(job))
    script = re.sub(r"\\\n\s*", " ", "\n".join(runs(job)))  # join continued lines
    export = re.search(r"uv export (.*)", script)
    assert export, "the audit must read the lock (uv export)"
    flags = set(export[1].split())
    assert {"--frozen", "--no-dev", "--no-emit-workspace"} <= flags
    assert "--no-hashes" not in flags  # pinned and hashed: pip-audit installs nothing
    audit = re.search(r"pip-audit (.*)", script)
    assert audit, "no pip-audit"
    assert {"--strict", "--disable-pip", "--requirement"} <= set(audit[1].split())
    assert script.index("uv export") < script.index("pip-audit")


def test_docker_build_builds_both_targets(ci_jobs: dict[str, dict[str, Any]]) -> None:
    job = ci_jobs["docker-build"]
    assert sorted(job["strategy"]["matrix"]["service"]) == sorted(SERVICES)
    build = next(s for s in steps(job) if "docker/build-push-action" in str(s.get("uses", "")))
    assert build["with"]["target"] == "${{ matrix.service }}"
    assert build["with"]["build-args"] == "SERVICE=${{ matrix.service }}"
    dockerfile = (ROOT / build["with"]["file"]).read_text(encoding="utf-8")
    for service in SERVICES:
        assert re.search(rf"^FROM \S+ AS {re.escape(service)}$", dockerfile, re.M), service


def test_compose_smoke_brings_the_stack_up_checks_it_and_tears_it_down(
    ci_jobs: dict[str, dict[str, Any]],
) -> None:
    job = ci_jobs["compose-smoke"]
    assert "docker-build" in job.get("needs", [])
    script = "\n".join(runs(job))
    assert "make .env" in script  # random passwords, never committed
    up = re.search(r"docker compose up (.*)", script)
    assert up, "no `docker compose up`"
    assert {"-d", "--build", "--wait"} <= set(up[1].split())
    assert "python3 scripts/compose_smoke.py" in script
    by_condition = {str(step.get("if", "")): str(step.get("run", "")) for step in steps(job)}
    assert "docker compose logs" in by_condition["failure()"]
    assert "docker compose ps" in by_condition["failure()"]
    assert re.search(r"docker compose .*\bdown\b.*-v\b", by_condition["always()"])
    # The smoke script comes before the diagnostics and the teardown.
    names = [str(step.get("run", "")) for step in steps(job)]
    smoke = next(i for i, run in enumerate(names) if "compose_smoke.py" in run)
    assert smoke < names.index(by_condition["failure()"]) < names.index(by_condition["always()"])


# --------------------------------------------------------------------------- compose_smoke.py
@pytest.fixture(scope="module")
def smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_smoke", SMOKE)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["compose_smoke"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_smoke_script_compiles_and_is_an_executable_stdlib_script() -> None:
    text = SMOKE.read_text(encoding="utf-8")
    compile(text, str(SMOKE), "exec")  # SyntaxError fails the test
    assert text.startswith("#!/usr/bin/env python3\n")
    assert os.access(SMOKE, os.X_OK), "chmod +x scripts/compose_smoke.py"
    # The runner's bare python3 runs it: no third-party imports.
    imported: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= sys.stdlib_module_names, imported


def test_smoke_script_help_works_offline() -> None:
    result = subprocess.run(
        [sys.executable, str(SMOKE), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "gateway" in result.stdout
    assert "--via" in result.stdout


def test_smoke_script_needs_the_grafana_password(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GRAFANA_")}
    result = subprocess.run(
        [sys.executable, str(SMOKE), "--env-file", str(tmp_path / "missing.env")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert result.returncode == 2
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_smoke_reads_the_env_file_like_compose(smoke: ModuleType, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\n\nGATEWAY_PORT=18080\nGRAFANA_ADMIN_PASSWORD='s3cret'\nEMPTY=\n",
        encoding="utf-8",
    )
    assert smoke.read_env_file(env_file) == {
        "GATEWAY_PORT": "18080",
        "GRAFANA_ADMIN_PASSWORD": "s3cret",
        "EMPTY": "",
    }
    assert smoke.read_env_file(tmp_path / "absent") == {}


@pytest.mark.parametrize(
    ("bind", "host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),  # noqa: S104 (an address string: nothing binds)
        ("::", "127.0.0.1"),
        ("::1", "[::1]"),
    ],
)
def test_smoke_connects_to_the_bind_address(smoke: ModuleType, bind: str, host: str) -> None:
    assert smoke.host_address(bind) == host


def test_smoke_reads_service_names_out_of_a_tempo_trace(smoke: ModuleType) -> None:
    def batch(service: str, spans: int) -> dict[str, Any]:
        return {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
            },
            "scopeSpans": [{"scope": {"name": "x"}, "spans": [{}] * spans}],
        }

    v1 = {"batches": [batch("api-svc", 2), batch("processor-svc", 1)]}
    assert smoke.trace_services(v1) == ({"api-svc", "processor-svc"}, 3)
    v2 = {"trace": {"resourceSpans": [batch("api-svc", 1)]}}
    assert smoke.trace_services(v2) == ({"api-svc"}, 1)
    assert smoke.trace_services({}) == (set(), 0)

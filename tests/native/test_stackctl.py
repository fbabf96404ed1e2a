"""stackctl up/down: healthy or a clear failure, and down stops exactly what up started."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from stackctl import procfs
from stackctl.addresses import COMPOSE_FILE
from stackctl.native import NativeStack, free_stack_offset
from stackctl.ports import port_is_free


@pytest.fixture
def env() -> dict[str, str]:
    """Ports chosen when the test starts, not at import: free of whatever runs by then (the
    e2e session's stack, anything on the documented ports)."""
    offset = free_stack_offset()
    return {**os.environ, "STACK_PORT_OFFSET": str(offset), "SEED_ROWS": "1000"}


def _gateway_port(env: dict[str, str]) -> int:
    return 8080 + int(env["STACK_PORT_OFFSET"])


@pytest.fixture
def state_dir(env: dict[str, str]) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="stackctl-test-"))
    path.chmod(0o711)
    yield path
    NativeStack(path, env).down()  # whatever a failed test left running


def _stackctl(
    env: dict[str, str], state_dir: Path, command: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stackctl.cli", command, "--state-dir", str(state_dir)],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_an_unhealthy_component_fails_up_with_its_log_tail(
    env: dict[str, str], state_dir: Path
) -> None:
    # gunicorn cannot start with a worker count that is not a number (compose's variable).
    result = _stackctl(env, state_dir, "up", API_WEB_CONCURRENCY="many", STACK_TIMEOUT="20")
    assert result.returncode == 1
    assert "api-svc did not become healthy" in result.stderr
    assert "WEB_CONCURRENCY" in result.stderr or "invalid literal" in result.stderr
    # Everything started before the failure was stopped again.
    assert not (state_dir / "pids.json").exists()


def _compose_copy(directory: Path, old: str, new: str) -> Path:
    """docker-compose.yml with one line changed, for COMPOSE_FILE (as compose reads it)."""
    text = COMPOSE_FILE.read_text()
    assert text.count(old) == 1, old
    copy = directory / "docker-compose.yml"
    copy.write_text(text.replace(old, new))
    return copy


def test_a_broken_flag_in_composes_command_fails_up_naming_the_component(
    env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    compose = _compose_copy(
        tmp_path, "- --web.enable-remote-write-receiver", "- --web.enable-remote-write-receiverr"
    )
    result = _stackctl(env, state_dir, "up", COMPOSE_FILE=str(compose), STACK_TIMEOUT="20")
    assert result.returncode == 1
    assert "prometheus did not become healthy" in result.stderr
    assert "web.enable-remote-write-receiverr" in result.stderr  # Prometheus' own complaint
    assert "Traceback" not in result.stderr
    assert not (state_dir / "pids.json").exists()


def test_a_gateway_that_cannot_start_fails_up_with_its_error_log(
    env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    # nginx writes why it stopped to stderr, which has a log file of its own.
    compose = _compose_copy(
        tmp_path,
        '"-e", "stderr", "-g", "daemon off;"',
        '"-e", "stderr", "-g", "daemon off; no_such_directive;"',
    )
    result = _stackctl(env, state_dir, "up", COMPOSE_FILE=str(compose), STACK_TIMEOUT="20")
    assert result.returncode == 1
    assert "gateway did not become healthy" in result.stderr
    assert "gateway-error.log" in result.stderr
    assert 'unknown directive "no_such_directive"' in result.stderr


def test_a_busy_port_fails_up_before_starting_anything(
    env: dict[str, str], state_dir: Path
) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", _gateway_port(env)))
        blocker.listen()
        result = _stackctl(env, state_dir, "up")
    assert result.returncode == 1
    assert "ports already in use" in result.stderr
    assert f"{_gateway_port(env)} (gateway)" in result.stderr
    assert "STACK_PORT_OFFSET=" in result.stderr
    assert not (state_dir / "data" / "postgres").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_a_state_dir_the_server_users_cannot_enter_fails_up_with_what_to_do(
    env: dict[str, str],
) -> None:
    closed = Path(tempfile.mkdtemp(prefix="home-0700-"))  # like /root, or a Debian 13 home
    try:
        result = _stackctl(env, closed / ".stack", "up")
        assert result.returncode == 1
        assert "cannot enter" in result.stderr
        assert "STACK_DIR=" in result.stderr
        assert "Traceback" not in result.stderr
        assert not (closed / ".stack" / "data" / "postgres").exists()
    finally:
        shutil.rmtree(closed)


@contextmanager
def squatters(ports: list[int]) -> Iterator[None]:
    """Listeners on the documented ports where nothing listens yet, like a developer's own
    PostgreSQL on 5432 or a service on 8080 (what already listens there proves it as well)."""
    with ExitStack() as stack:
        for port in ports:
            if port_is_free(port):
                sock = stack.enter_context(socket.socket())
                sock.bind(("127.0.0.1", port))
                sock.listen()
        yield


def _workers(pid: int) -> int:
    return len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def test_down_stops_what_up_started_and_nothing_else(
    env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    # Run from a compose copy whose api-svc says 3 workers: the twin runs what compose says.
    compose = _compose_copy(
        tmp_path, "WEB_CONCURRENCY: ${API_WEB_CONCURRENCY:-2}", 'WEB_CONCURRENCY: "3"'
    )
    env = {**env, "COMPOSE_FILE": str(compose)}
    with squatters([5432, 8080, 9090]):
        up = _stackctl(env, state_dir, "up")
    assert up.returncode == 0, up.stderr + up.stdout
    assert f"http://127.0.0.1:{_gateway_port(env)}" in up.stdout
    assert "not started: grafana" in up.stdout or "started grafana" in up.stdout
    stack = NativeStack(state_dir, env)
    pids = [int(entry["pid"]) for entry in stack.state.recorded()]
    assert len(pids) == 10  # postgres, webhook, 2 services, gateway, prometheus, am, 3 exporters
    assert _workers(stack.pid("api-svc")) == 3
    assert _workers(stack.pid("processor-svc")) == 2
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        down = _stackctl(env, state_dir, "down")
        assert down.returncode == 0, down.stderr
        assert not [pid for pid in pids if procfs.running(pid)]
        assert bystander.poll() is None, "down must not touch processes it did not start"
    finally:
        bystander.kill()
        bystander.wait()

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

from stackctl.native import CORE_PORTS, NativeStack, _running
from stackctl.ports import free_offset, port_is_free

# Chosen once for the module, as the e2e session chooses its own: beside both, and beside
# anything that holds the documented ports.
OFFSET = str(free_offset(port for _, port in CORE_PORTS))


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="stackctl-test-"))
    path.chmod(0o711)
    yield path
    NativeStack(path, _env()).down()  # whatever a failed test left running


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "STACK_PORT_OFFSET": OFFSET, "SEED_ROWS": "1000", **extra}


def _stackctl(state_dir: Path, command: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stackctl.cli", command, "--state-dir", str(state_dir)],
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_an_unhealthy_component_fails_up_with_its_log_tail(state_dir: Path) -> None:
    # gunicorn cannot start with a worker count that is not a number.
    result = _stackctl(state_dir, "up", WEB_CONCURRENCY="many", STACK_TIMEOUT="20")
    assert result.returncode == 1
    assert "api-svc did not become healthy" in result.stderr
    assert "WEB_CONCURRENCY" in result.stderr or "invalid literal" in result.stderr
    # Everything started before the failure was stopped again.
    assert not (state_dir / "pids.json").exists()


def test_a_busy_port_fails_up_before_starting_anything(state_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 8080 + int(OFFSET)))
        blocker.listen()
        result = _stackctl(state_dir, "up")
    assert result.returncode == 1
    assert "ports already in use" in result.stderr
    assert f"{8080 + int(OFFSET)} (gateway)" in result.stderr
    assert "STACK_PORT_OFFSET=" in result.stderr
    assert not (state_dir / "data" / "postgres").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_a_state_dir_the_server_users_cannot_enter_fails_up_with_what_to_do() -> None:
    closed = Path(tempfile.mkdtemp(prefix="home-0700-"))  # like /root, or a Debian 13 home
    try:
        result = _stackctl(closed / ".stack", "up")
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


def test_down_stops_what_up_started_and_nothing_else(state_dir: Path) -> None:
    with squatters([5432, 8080, 9090]):
        up = _stackctl(state_dir, "up")
    assert up.returncode == 0, up.stderr + up.stdout
    assert f"http://127.0.0.1:{8080 + int(OFFSET)}" in up.stdout
    assert "not started: grafana" in up.stdout or "started grafana" in up.stdout
    stack = NativeStack(state_dir, _env())
    pids = [int(entry["pid"]) for entry in stack.state.recorded()]
    assert len(pids) == 10  # postgres, webhook, 2 services, gateway, prometheus, am, 3 exporters
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        down = _stackctl(state_dir, "down")
        assert down.returncode == 0, down.stderr
        assert not [pid for pid in pids if _running(pid)]
        assert bystander.poll() is None, "down must not touch processes it did not start"
    finally:
        bystander.kill()
        bystander.wait()

"""stackctl.processes.spawn, the one launcher: healthy or stopped, group and all."""

import sys
import time
from pathlib import Path

import pytest

from pgcluster import free_port
from stackctl import procfs
from stackctl.processes import ComponentFailedError, ServiceProcess, spawn

# Answers 200 on /health (on PORT) after forking one child, as a gunicorn master would.
_SERVER = """
import http.server, os, subprocess
child = subprocess.Popen(["sleep", "60"])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
print("serving", os.environ["GREETING"], flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health).serve_forever()
"""
# Starts a child in its own group, says something, and dies: never healthy.
_DIES = """
import subprocess, sys, time
child = subprocess.Popen(["sleep", "60"])
print("child", child.pid, flush=True)
print("cannot start: no database", flush=True)
time.sleep(0.5)
sys.exit(3)
"""


def test_spawn_waits_until_healthy_and_shows_the_process_first(tmp_path: Path) -> None:
    port = free_port()
    seen: list[ServiceProcess] = []
    service = spawn(
        "server",
        [sys.executable, "-c", _SERVER],
        log_path=tmp_path / "server.log",
        env={"PORT": str(port), "GREETING": "hello"},
        health_url=f"http://127.0.0.1:{port}/health",
        timeout=20,
        cwd=tmp_path,
        on_start=seen.append,
    )
    try:
        assert seen == [service]
        assert service.port == port
        assert procfs.running(service.proc.pid)
        assert len(service.worker_pids()) == 1
        assert service.log_lines()[0] == "serving hello"  # env over ours; stderr joins it
    finally:
        service.stop()
    assert not procfs.running(service.proc.pid)


def test_a_process_that_never_gets_healthy_is_stopped_with_its_group(tmp_path: Path) -> None:
    seen: list[ServiceProcess] = []
    with pytest.raises(ComponentFailedError) as failed:
        spawn(
            "broken",
            [sys.executable, "-c", _DIES],
            log_path=tmp_path / "broken.log",
            env={},
            health_url=f"http://127.0.0.1:{free_port()}/health",
            timeout=20,
            on_start=seen.append,
        )
    message = str(failed.value)
    assert message.startswith("broken did not become healthy: exited with 3")
    assert "cannot start: no database" in message
    [started] = seen
    [child] = [int(line.split()[1]) for line in started.log_lines() if line.startswith("child ")]
    # The child it left behind (same process group) is killed too (and reaped by init).
    deadline = time.monotonic() + 5
    while procfs.running(child):
        assert time.monotonic() < deadline, "the failed process's child still runs"
        time.sleep(0.05)

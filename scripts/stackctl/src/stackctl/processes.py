"""Start a service under real gunicorn (the way it runs in production) and stop it again."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from stackctl import procfs


class ComponentFailedError(RuntimeError):
    """A component did not become healthy; the message carries its log tail."""


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ComponentFailedError(f"exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URL
                if response.status == 200:  # noqa: PLR2004
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise ComponentFailedError(f"{url} did not answer 200 within {timeout:.0f} s")


@dataclass
class ServiceProcess:
    """A gunicorn master with its workers; stdout and stderr go to ``log_path``."""

    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]
    _log: IO[bytes] = field(repr=False)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def worker_pids(self) -> list[int]:
        return procfs.children(self.proc.pid)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (gunicorn's graceful shutdown), SIGKILL if it overruns ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def spawn(
    name: str,
    argv: list[str],
    *,
    log_path: Path,
    env: dict[str, str],
    health_url: str | None,
    timeout: float = 30,
    cwd: Path | None = None,
    stderr_path: Path | None = None,
) -> ServiceProcess:
    """Start ``argv`` in a session of its own (so it outlives us and can be stopped as a group)
    and wait until ``health_url`` answers 200. stderr joins stdout unless ``stderr_path``."""
    log = log_path.open("ab")
    stderr: IO[bytes] | int = stderr_path.open("ab") if stderr_path else subprocess.STDOUT
    proc = subprocess.Popen(  # noqa: S603 - argv built by the caller from fixed parts
        argv,
        env={**os.environ, **env},
        stdout=log,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        start_new_session=True,
    )
    if not isinstance(stderr, int):
        stderr.close()  # the child has its own copy
    port = int(urllib.parse.urlsplit(health_url).port or 0) if health_url else 0
    service = ServiceProcess(name=name, port=port, log_path=log_path, proc=proc, _log=log)
    if health_url is None:
        return service
    try:
        wait_http_ok(health_url, timeout, proc)
    except ComponentFailedError as exc:
        service.stop()
        raise ComponentFailedError(f"{name}: {exc}\n{log_tail(log_path)}") from None
    return service


def gunicorn_argv(app: str) -> list[str]:
    """How both services run, here as in their images."""
    return [sys.executable, "-m", "gunicorn", app, "-c", "python:instrumentation.gunicorn_conf"]


def start_service(
    app: str,
    *,
    name: str,
    port: int,
    log_path: Path,
    env: dict[str, str],
    workers: int = 2,
    timeout: float = 30,
    cwd: Path | None = None,
) -> ServiceProcess:
    """``gunicorn <app> -c python:instrumentation.gunicorn_conf`` on 127.0.0.1:<port>."""
    service_env = {
        "SERVICE_NAME": name,
        "PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "WEB_CONCURRENCY": str(workers),
        **env,
    }
    return spawn(
        name,
        gunicorn_argv(app),
        log_path=log_path,
        env=service_env,
        health_url=f"http://127.0.0.1:{port}/health",
        timeout=timeout,
        cwd=cwd,
    )

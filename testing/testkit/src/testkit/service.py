"""A service under real gunicorn, as it runs in production, for the services' own tests.

The native twin has its own, more general launcher (stackctl.processes); this one covers
what a service's integration tests need and keeps them free of the tooling.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


class ServiceFailedError(RuntimeError):
    """The service did not become healthy; the message carries its log tail."""


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

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_lines()[-lines:])
        except OSError:
            return "(no log)"

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

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


def _wait_healthy(service: ServiceProcess, timeout: float) -> None:
    url = service.url("/health")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise ServiceFailedError(f"exited with {service.proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URL
                if response.status == 200:  # noqa: PLR2004
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise ServiceFailedError(f"{url} did not answer 200 within {timeout:.0f} s")


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
    """``gunicorn <app> -c python:service_kit.gunicorn_conf`` on 127.0.0.1:<port>, in a
    session of its own; returns once /health answers 200."""
    argv = [sys.executable, "-m", "gunicorn", app, "-c", "python:service_kit.gunicorn_conf"]
    service_env = {
        "SERVICE_NAME": name,
        "PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "WEB_CONCURRENCY": str(workers),
        **env,
    }
    log = log_path.open("ab")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        argv,
        env={**os.environ, **service_env},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        start_new_session=True,
    )
    service = ServiceProcess(name=name, port=port, log_path=log_path, proc=proc, _log=log)
    try:
        _wait_healthy(service, timeout)
    except ServiceFailedError as exc:
        service.stop()
        raise ServiceFailedError(f"{name}: {exc}\n{service.log_tail()}") from None
    return service

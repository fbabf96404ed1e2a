"""Start a service under real gunicorn (the way it runs in production) and stop it again."""

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
    full_env = {
        **os.environ,
        "SERVICE_NAME": name,
        "PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "WEB_CONCURRENCY": str(workers),
        **env,
    }
    log = log_path.open("ab")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "gunicorn", app, "-c", "python:instrumentation.gunicorn_conf"],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        start_new_session=True,
    )
    service = ServiceProcess(name=name, port=port, log_path=log_path, proc=proc, _log=log)
    try:
        wait_http_ok(service.url("/health"), timeout, proc)
    except ComponentFailedError as exc:
        service.stop()
        raise ComponentFailedError(f"{name}: {exc}\n{log_tail(log_path)}") from None
    return service

"""Starting and stopping processes: ``spawn`` is the one launcher the native twin, the
benchmark, the profiler and the tooling's tests use. How a service is started is compose's
(and its Dockerfile's) to say: stackctl.native_map makes that native."""

import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import suppress
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
    on_start: Callable[[ServiceProcess], None] | None = None,
) -> ServiceProcess:
    """Start ``argv`` (``env`` over ours) in a session of its own, so that it outlives us and
    can be stopped as a group, and wait until ``health_url`` answers 200. stdout goes to
    ``log_path``, stderr too unless ``stderr_path``. ``on_start`` sees the process before the
    wait (to record its pid). If it does not become healthy within ``timeout`` it is stopped
    (its whole group), and ComponentFailedError says why, with the log's last lines."""
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
    if on_start is not None:
        on_start(service)
    if health_url is None:
        return service
    try:
        wait_http_ok(health_url, timeout, proc)
    except ComponentFailedError as exc:
        # Before its shutdown adds lines; stderr too when it has a file of its own (nginx says
        # there why it stopped).
        tails = "".join(
            f"\n--- {path} (last lines) ---\n{log_tail(path)}"
            for path in (log_path, stderr_path)
            if path is not None
        )
        service.stop()
        with suppress(ProcessLookupError):  # whatever else of its group outlived it
            os.killpg(proc.pid, signal.SIGKILL)
        raise ComponentFailedError(f"{name} did not become healthy: {exc}{tails}") from None
    return service

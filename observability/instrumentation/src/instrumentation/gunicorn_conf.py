"""gunicorn settings shared by both services.

    gunicorn <module>:app -c python:instrumentation.gunicorn_conf

Everything a deployment changes comes from the environment: PORT, WEB_CONCURRENCY,
GRACEFUL_TIMEOUT, SERVICE_NAME, LOG_LEVEL, PROMETHEUS_MULTIPROC_DIR, and METRICS_PORT: when set
(and METRICS_ENABLED is not false), the master serves all workers' metrics on that port.
"""

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from instrumentation.logs import stdlib_logging_config

if TYPE_CHECKING:  # imported for real only once the multiprocess directory is set
    from instrumentation.metrics import MasterMetricsServer

_service = os.environ.get("SERVICE_NAME", "gunicorn")
_level = os.environ.get("LOG_LEVEL", "info")

_host = os.environ.get("BIND_HOST", "0.0.0.0")  # noqa: S104 - a container's only interface
_metrics_port = os.environ.get("METRICS_PORT", "")
# The same parsing as the services' settings (METRICS_ENABLED=false turns both off).
_metrics_enabled = TypeAdapter(bool).validate_python(os.environ.get("METRICS_ENABLED", "true"))

bind = [f"{_host}:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "instrumentation.worker.ServiceWorker"
# SIGTERM: stop accepting, let in-flight requests (e.g. a 0.5 s /process) finish, then exit.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
timeout = 60
# Longer than the gateway's upstream keep-alive (60 s), so nginx never reuses a closed socket.
keepalive = 75
# Workers are never recycled: every recycle leaves metric files behind (prometheus client #204).
max_requests = 0
# gunicorn's control socket defaults to one path under $HOME, shared by every master on the
# host (two services, tests) and unwritable on a read-only root filesystem; nothing uses it.
control_socket_disable = True
accesslog = None
loglevel = _level
logconfig_dict = stdlib_logging_config(_service, _level)


_own_directory: list[str] = []
_metrics_server: list["MasterMetricsServer"] = []


def on_starting(_server: Any) -> None:
    """Give the workers an empty multiprocess metrics directory (stale files double-count)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="prometheus-multiproc-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        _own_directory.append(directory)
    os.makedirs(directory, exist_ok=True)
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def when_ready(_server: Any) -> None:
    """Serve /metrics from the master: a saturated worker would answer a scrape late."""
    if not (_metrics_port and _metrics_enabled):
        return
    # Imported here: prometheus_client must not be imported before the directory is set.
    from instrumentation.metrics import MasterMetricsServer  # noqa: PLC0415

    _metrics_server.append(MasterMetricsServer(_host, int(_metrics_port)))


def post_fork(_server: Any, _worker: Any) -> None:
    # The worker inherited the master's metrics socket: close its copy, so that only the
    # master holds the port (a worker outliving a killed master must not keep it bound).
    for server in _metrics_server:
        server.close_inherited_socket()


def child_exit(_server: Any, worker: Any) -> None:
    # Imported here: prometheus_client must not be imported before the directory is set.
    from prometheus_client import multiprocess  # noqa: PLC0415

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(_server: Any) -> None:
    for server in _metrics_server:
        server.stop()
    for directory in _own_directory:
        shutil.rmtree(directory, ignore_errors=True)

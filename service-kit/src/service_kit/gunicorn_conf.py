"""gunicorn settings shared by both services.

    gunicorn <module>:app -c python:service_kit.gunicorn_conf

Everything a deployment changes comes from the environment, read and validated once, by the
same settings fields the app uses (service_kit.settings.GunicornSettings): PORT,
WEB_CONCURRENCY, BIND_HOST, GRACEFUL_TIMEOUT, SERVICE_NAME, LOG_LEVEL, and METRICS_PORT: when
set (and METRICS_ENABLED is not false), the master serves all workers' metrics on that port.
An invalid value stops gunicorn before it binds, with one line per variable ("Error: invalid
settings in the environment ..."). PROMETHEUS_MULTIPROC_DIR stays a plain environment
variable: prometheus_client reads it from there, in every worker.
"""

import gc
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from service_kit.logs import stdlib_logging_config
from service_kit.settings import GunicornSettings, from_environment

if TYPE_CHECKING:  # imported for real only once the multiprocess directory is set
    from service_kit.metrics import MasterMetricsServer

_settings = from_environment(GunicornSettings)

bind = [f"{_settings.bind_host}:{_settings.port}"]
workers = _settings.web_concurrency
worker_class = "service_kit.worker.ServiceWorker"
# SIGTERM: stop accepting, let in-flight requests (e.g. a 0.5 s /process) finish, then exit.
graceful_timeout = _settings.graceful_timeout
timeout = 60
# Longer than the gateway's upstream keep-alive (60 s), so nginx never reuses a closed socket.
keepalive = 75
# Workers are never recycled: every recycle leaves metric files behind (prometheus client #204).
max_requests = 0
# gunicorn's control socket defaults to one path under $HOME, shared by every master on the
# host (two services, tests) and unwritable on a read-only root filesystem; nothing uses it.
control_socket_disable = True
accesslog = None
loglevel = _settings.log_level
logconfig_dict = stdlib_logging_config(_settings.service_name, _settings.log_level)


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
    if _settings.metrics_port is None or not _settings.metrics_enabled:
        return
    # Imported here: prometheus_client must not be imported before the directory is set.
    from service_kit.metrics import MasterMetricsServer  # noqa: PLC0415

    _metrics_server.append(MasterMetricsServer(_settings.bind_host, _settings.metrics_port))


def post_fork(_server: Any, _worker: Any) -> None:
    # The worker inherited the master's metrics socket: close its copy, so that only the
    # master holds the port (a worker outliving a killed master must not keep it bound).
    for server in _metrics_server:
        server.close_inherited_socket()


# A young-generation collection every 10,000 net allocations instead of 700: with hundreds of
# requests in flight (each /process waits 0.5 s), every collection walks their live objects
# again, and that, not the garbage, is what the collector's time goes to. The garbage that
# waits longer is a few MB at most.
GC_THRESHOLD_0 = 10_000


def tune_gc() -> None:
    """In a worker, once its app is imported: the objects of start-up (modules, classes, the
    app) move to the permanent generation, so no full collection walks them again."""
    gc.collect()
    gc.freeze()
    _, threshold_1, threshold_2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD_0, threshold_1, threshold_2)


def post_worker_init(_worker: Any) -> None:
    # Here, for every app gunicorn serves with this config (the benchmark's bare and peer
    # variants too): it is the process's setting, not the instrumentation's.
    tune_gc()


def child_exit(_server: Any, worker: Any) -> None:
    # Imported here: prometheus_client must not be imported before the directory is set.
    from prometheus_client import multiprocess  # noqa: PLC0415

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(_server: Any) -> None:
    for server in _metrics_server:
        server.stop()
    for directory in _own_directory:
        shutil.rmtree(directory, ignore_errors=True)

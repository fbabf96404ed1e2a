"""Prometheus metrics that stay correct under several gunicorn workers.

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before the interpreter starts, as the
gunicorn config does) every worker writes its samples to files and each scrape merges them with a
fresh ``MultiProcessCollector``. Without it (tests, a single uvicorn) our own registry is served.
"""

import errno
import logging
import os
import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)

# Stdlib logging: the master server runs in the gunicorn master, whose logging is gunicorn's
# logconfig_dict (JSON lines too), not the workers' structlog.
_log = logging.getLogger("service_kit.metrics")

_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid  # noqa: PLW0603 - the one value every sample write reads
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def process_identifier() -> int:
    """The pid, as ``os.getpid()`` would say, without its system call: multiprocess mode asks
    for it on every sample written (to notice a fork), several times per request."""
    return _pid


# prometheus_client picked its value class from PROMETHEUS_MULTIPROC_DIR when imported. Swapped
# before any metric exists: each sample takes the class when it is made.
if values.ValueClass._multiprocess:
    values.ValueClass = values.MultiProcessValue(process_identifier)  # type: ignore[no-untyped-call]

# ``*_created`` series are not exported in multiprocess mode; drop them in single-process mode
# too, so both modes expose the same series.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Every route that did not match shares this label value: random paths add no series.
UNMATCHED_ROUTE = "unmatched"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in _KNOWN_METHODS else "OTHER"


class Metrics:
    """The HTTP metrics every service has, plus a factory for the service's own metrics."""

    def __init__(
        self, *, namespace: str, service: str, version: str, buckets: Iterable[float]
    ) -> None:
        self.namespace = namespace
        self.service = service
        self.buckets = tuple(buckets)
        # Our own registry, never the global one: in multiprocess mode it is not scraped at all,
        # and several apps in one test process must not collide.
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = self.counter(
            "http_requests_total",
            "HTTP requests by method, route template and status code.",
            ("method", "route", "status"),
        )
        self._duration = self.histogram(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ("method", "route"),
        )
        self.in_flight = Gauge(
            "http_requests_in_flight",
            "HTTP requests being served right now.",
            ("service",),
            namespace=namespace,
            registry=self.registry,
            multiprocess_mode="livesum",
        ).labels(service)
        self._exceptions = self.counter(
            "exceptions_total", "Unhandled exceptions by type.", ("type",)
        )
        Gauge(
            "build_info",
            "Always 1; the labels say which build is running.",
            ("service", "version"),
            namespace=namespace,
            registry=self.registry,
            multiprocess_mode="max",
        ).labels(service, version).set(1)
        # (method, route, status) -> bound children, so the hot path skips labels() lookups.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def counter(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> Counter:
        """A counter in this service's namespace; its first label is ``service``."""
        return Counter(
            name,
            documentation,
            ("service", *labelnames),
            namespace=self.namespace,
            registry=self.registry,
        )

    def histogram(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> Histogram:
        """A histogram with the configured buckets; its first label is ``service``."""
        return Histogram(
            name,
            documentation,
            ("service", *labelnames),
            namespace=self.namespace,
            registry=self.registry,
            buckets=self.buckets,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self._requests.labels(self.service, method, route, str(status)),
                self._duration.labels(self.service, method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_exception(self, exc: BaseException) -> None:
        self._exceptions.labels(self.service, type(exc).__name__).inc()

    def render(self) -> bytes:
        """The exposition text: all workers' samples in multiprocess mode, ours otherwise."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class MasterMetricsServer:
    """Every worker's samples, served by this process on a port of its own.

    The gunicorn master runs it (``METRICS_PORT``): it is idle and outlives its workers, so a
    scrape answered there never queues behind requests on a saturated worker's event loop
    (``make bench``: p99 1.5 s from a worker under load). Needs multiprocess mode.

    When the port is taken, as in a rolling restart on one host (the next master starts with
    ``--reuse-port`` while the one it replaces drains), it binds as soon as the port is free:
    Prometheus reads the old instance until it exits, then this one, never both in turn.
    """

    def __init__(self, host: str, port: int, *, retry_seconds: float = 0.5) -> None:
        self._address = (host, port)
        self._registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self._registry)  # type: ignore[no-untyped-call]
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._waiter: threading.Thread | None = None
        if not self._bind():
            _log.warning("metrics port %d in use: serving it once it is free", port)
            self._waiter = threading.Thread(
                target=self._bind_when_free, args=(retry_seconds,), daemon=True
            )
            self._waiter.start()

    def _bind(self) -> bool:
        host, port = self._address
        try:
            self._server, self._thread = start_http_server(port, host, registry=self._registry)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return False
        return True

    def _bind_when_free(self, retry_seconds: float) -> None:
        while not self._stopping.wait(retry_seconds):
            if self._bind():
                _log.info("metrics port %d free: serving it now", self._address[1])
                return

    @property
    def serving(self) -> bool:
        return self._server is not None

    def close_inherited_socket(self) -> None:
        """In a forked child: close its copy of the listening socket (the master keeps it)."""
        if self._server is not None:
            self._server.socket.close()

    def stop(self) -> None:
        self._stopping.set()
        if self._waiter is not None:
            self._waiter.join()
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()

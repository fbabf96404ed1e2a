"""The OTLP/HTTP receiver the full and peer variants export their spans to: answers 200 to every
export and counts them (a collector that keeps nothing), so both pay the whole export path."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0

    def counts(self) -> dict[str, int]:
        """results.json's ``traces``: exports received and their bytes."""
        with self.lock:
            return {"exports": self.requests, "bytes": self.bytes}


class _SinkHandler(BaseHTTPRequestHandler):
    # HTTP/1.1: the exporters keep their connection, as they would to a real collector.
    protocol_version = "HTTP/1.1"
    server: SinkServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests += 1
            self.server.bytes += len(body)
        # An empty 200 is a complete success for the OTLP/HTTP exporter.
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def otlp_sink() -> Iterator[SinkServer]:
    """The receiver, serving on a free port of 127.0.0.1 until the block ends."""
    server = SinkServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sink_endpoint(server: SinkServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"

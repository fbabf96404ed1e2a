"""The default Alertmanager receiver: logs every notification as one JSON line on stdout.

Stands in for a pager (Slack and Telegram are optional, see .env.example). Standard library
only, so compose runs it on the plain python image and the native twin with any Python 3:

    python receiver.py [--host 0.0.0.0] [--port 5001]

GET /health answers 200; POST <any path> takes an Alertmanager webhook payload.
"""

import argparse
import datetime
import http.server
import json
import sys
import threading
from typing import Any

MAX_BODY = 1 << 20


def summarize(payload: Any, path: str) -> dict[str, Any]:
    alerts = payload.get("alerts", []) if isinstance(payload, dict) else []
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        "level": "warning",
        "service": "alert-webhook",
        "event": "alert_notification",
        "path": path,
        "receiver": payload.get("receiver") if isinstance(payload, dict) else None,
        "status": payload.get("status") if isinstance(payload, dict) else None,
        "alerts": [
            {
                "status": alert.get("status"),
                "labels": alert.get("labels"),
                "annotations": alert.get("annotations"),
                "startsAt": alert.get("startsAt"),
            }
            for alert in alerts
            if isinstance(alert, dict)
        ],
    }


_STDOUT = threading.Lock()


def emit(record: dict[str, Any]) -> None:
    """One JSON line, written whole: print() writes the text and the newline separately, and
    two notifications handled by two threads at once ended up on one line."""
    line = json.dumps(record) + "\n"
    with _STDOUT:
        sys.stdout.write(line)
        sys.stdout.flush()


class Handler(http.server.BaseHTTPRequestHandler):
    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, b'{"status":"healthy"}')
        else:
            self._reply(404, b'{"error":{"code":"NOT_FOUND","message":"not found"}}')

    def do_POST(self) -> None:
        raw = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), MAX_BODY))
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"raw": raw.decode("utf-8", "replace")}
        emit(summarize(payload, self.path))
        self._reply(200, b'{"status":"ok"}')

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log: the JSON line above is the record."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container's listener
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    http.server.ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()

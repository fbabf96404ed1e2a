"""gunicorn's worker class: uvicorn, without its access log or Server header."""

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker


class ServiceWorker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": "auto",
        # Our middleware writes one JSON access line per request; uvicorn's would be a second.
        "access_log": False,
        "server_header": False,
    }

"""The request id: taken from ``X-Request-ID`` when it is sane, generated otherwise."""

import re
import uuid
from contextvars import ContextVar

HEADER = b"x-request-id"
# Long enough for UUIDs and nginx's $request_id, narrow enough to be safe in logs and headers.
_SAFE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """Return the client's request id if it is safe to echo, otherwise a new one."""
    for name, value in headers:
        if name == HEADER:
            if _SAFE.fullmatch(value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return request_id_var.get()

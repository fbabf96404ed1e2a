"""Database failures answer 503 with the envelope instead of a 500."""

from fastapi import FastAPI, Request
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.responses import Response

from service_kit.errors import ErrorCode, error_response
from service_kit.logs import get_logger

_log = get_logger("db")

DATABASE_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError)


async def _database_unavailable(_: Request, exc: Exception) -> Response:
    # Connection refused, server restarting, pool exhausted, statement timeout.
    _log.warning("database_unavailable", error_type=type(exc).__name__)
    return error_response(
        503, ErrorCode.DATABASE_UNAVAILABLE, "The database is unavailable, retry shortly"
    )


def install_database_error_handlers(app: FastAPI) -> None:
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, _database_unavailable)

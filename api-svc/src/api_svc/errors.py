"""Database failures answer 503 with the envelope instead of a 500."""

import psycopg
from fastapi import FastAPI, Request
from starlette.responses import Response

from service_kit.errors import ErrorCode, error_response
from service_kit.logs import get_logger

_log = get_logger("db")

# OperationalError covers the pool's timeout (psycopg_pool.PoolTimeout), a refused or lost
# connection and a statement cancelled by statement_timeout.
DATABASE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


async def database_unavailable(_: Request, exc: Exception) -> Response:
    # Connection refused, server restarting, pool exhausted, statement timeout.
    _log.warning("database_unavailable", error_type=type(exc).__name__)
    return error_response(
        503, ErrorCode.DATABASE_UNAVAILABLE, "The database is unavailable, retry shortly"
    )


def install_database_error_handlers(app: FastAPI) -> None:
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, database_unavailable)

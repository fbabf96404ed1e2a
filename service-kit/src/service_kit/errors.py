"""One JSON error envelope for every 4xx/5xx: ``{"error": {"code", "message", "request_id"}}``."""

from collections.abc import Mapping, Sequence
from enum import StrEnum
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service_kit.request_id import current_request_id


class ErrorCode(StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    RATE_LIMITED = "RATE_LIMITED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


_CODE_BY_STATUS = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}

JSON_CONTENT_TYPE = "application/json"


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None
    details: list[ErrorDetail] | None = None


class ErrorEnvelope(BaseModel):
    """The body of every 4xx/5xx answer, documented in OpenAPI as what is really sent."""

    error: ErrorBody


def error_doc(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry for an error answered with the envelope."""
    return {"model": ErrorEnvelope, "description": description}


# On every route; 422 on every route that takes input (FastAPI would otherwise describe it as
# its own HTTPValidationError, which is never sent).
INTERNAL_ERROR_RESPONSE: dict[int | str, dict[str, Any]] = {
    500: error_doc("Unexpected error (the traceback is in the log, never here)"),
}
VALIDATION_ERROR_RESPONSE: dict[int | str, dict[str, Any]] = {
    422: error_doc("Invalid request: `details` says where and why"),
}
# On every route that reads a JSON body: FastAPI answers 400 (not 422) when the bytes cannot
# be decoded at all, e.g. JSON that is not UTF-8.
UNDECODABLE_BODY_RESPONSE: dict[int | str, dict[str, Any]] = {
    400: error_doc("The body cannot be decoded (JSON must be UTF-8)"),
}


class AppError(Exception):
    """Raised by routes for an expected failure that maps to one status and code."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str, details: Sequence[dict[str, Any]] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "request_id": current_request_id()}
    if details:
        error["details"] = details
    return orjson.dumps({"error": error})


def error_response(
    status: int,
    code: str,
    message: str,
    details: Sequence[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        error_body(code, message, details),
        status_code=status,
        media_type=JSON_CONTENT_TYPE,
        headers=headers,
    )


async def _app_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)  # noqa: S101 - registered for AppError only
    return error_response(exc.status, exc.code, exc.message)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it only
    status = exc.status_code
    code = _CODE_BY_STATUS.get(status) or (
        ErrorCode.INTERNAL_ERROR if status >= 500 else ErrorCode.BAD_REQUEST  # noqa: PLR2004
    )
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    return error_response(status, code, message, headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    # Where and why only: the offending input is never echoed back (nor logged).
    details = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return error_response(422, ErrorCode.VALIDATION_ERROR, "Request validation failed", details)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

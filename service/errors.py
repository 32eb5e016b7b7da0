"""Errors as OpenAI-style JSON: `{"error": {"message", "type", "param", "code"}}`, never a bare 500.

This module owns the `APIError` exception the routes raise and the exception handlers that turn
it, request-validation errors and anything unexpected into that shape. It knows no route.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# HTTP status -> OpenAI's error type.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error a client can act on: status code, message, and the offending parameter if any."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers=None
):
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


# Pydantic puts the tried union member's type into an error's location ("prompt.str"); a client
# wants the field's name.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "json-or-python", "tagged-union"}


def _location(loc: tuple) -> str | None:
    parts = [
        str(p)
        for p in loc
        if p not in ("body", "query", "path") and str(p) not in _TYPE_TAGS and "[" not in str(p)
    ]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = exc.errors()
        first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
        param = _location(tuple(first.get("loc", ())))
        message = "; ".join(
            f"{_location(tuple(p.get('loc', ()))) or 'body'}: {p.get('msg', 'invalid')}" for p in problems[:5]
        )
        return error_response(422, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}")

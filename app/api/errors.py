"""Every 4xx is JSON: {"detail": "...", "errors": [{"field", "message", "index"}]} for 422s.

422 messages name the field and the index of the bad row, e.g.
"interactions[3].rating: 7.0 outside the rating scale 0.5-5.0".
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
SHOWN_IN_DETAIL = 5  # problems spelled out in "detail"; "errors" lists them all (up to MAX_LISTED)
MAX_LISTED = 100
SOURCES = {"body", "query", "path", "header", "cookie"}
RETRY_AFTER_S = 2  # the database was unreachable: a client should come back after this long
# The database is away or refused the connection: SQLAlchemy's wrappers, and the drivers' own errors
# for code that talks to a driver connection directly (the serving history reads do).
DATABASE_DOWN: tuple[type[Exception], ...] = (
    sa.OperationalError,
    sa.InterfaceError,
    sa.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
)


class FieldError(BaseModel):
    field: str
    message: str
    index: int | None = None  # the row of a batch, when the field is inside one


class ErrorBody(BaseModel):
    detail: str
    errors: list[FieldError] | None = None


class InvalidInput(Exception):
    """Input that parsed but breaks a rule that depends on the settings (scale, limits, clock)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__(errors[0].message if errors else "invalid input")
        self.errors = list(errors)


def field_path(loc: Sequence[int | str]) -> tuple[str, int | None]:
    """('body', 'interactions', 3, 'rating') -> ('interactions[3].rating', 3)."""
    parts = list(loc[1:] if loc and loc[0] in SOURCES else loc)
    text, index = "", None
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
            index = part if index is None else index
        else:
            text += f".{part}" if text else str(part)
    return text or "body", index


def _message(err: dict[str, Any], request: Request) -> str:
    kind, msg = err.get("type", ""), str(err.get("msg", ""))
    if kind == "missing" and tuple(err.get("loc", ())) == ("body",):
        return "request body is required: a JSON object"
    if kind in {"model_attributes_type", "dict_type"} and len(err.get("loc", ())) == 1:
        ctype = request.headers.get("content-type")
        if ctype is None or "json" not in ctype:
            return f"request body must be JSON sent as Content-Type: application/json (got {ctype or 'none'})"
        return f"request body must be a JSON object, got {type(err.get('input')).__name__}"
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if kind in {"missing", "extra_forbidden"}:
        return msg.lower()
    value = err.get("input")
    if kind not in {"value_error"} and isinstance(value, str | int | float | bool) and len(repr(value)) <= 80:
        return f"{msg} (got {value!r})"
    return msg


def _response(errors: list[FieldError]) -> JSONResponse:
    lines = [f"{e.field}: {e.message}" for e in errors[:SHOWN_IN_DETAIL]]
    if len(errors) > SHOWN_IN_DETAIL:
        lines.append(f"and {len(errors) - SHOWN_IN_DETAIL} more")
    body = ErrorBody(detail="; ".join(lines), errors=errors[:MAX_LISTED])
    return JSONResponse(body.model_dump(), status_code=422)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":  # loc is ("body", character position)
            at, why = err.get("loc", ("body", 0))[-1], err.get("ctx", {}).get("error", "parse error")
            errors.append(FieldError(field="body", message=f"request body is not valid JSON: {why} at position {at}"))
            continue
        field, index = field_path(err.get("loc", ()))
        errors.append(FieldError(field=field, message=_message(err, request), index=index))
    return _response(errors)


async def _invalid_input(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInput)
    return _response(exc.errors)


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        # FastAPI's answer when the JSON parser itself fails (e.g. nesting deeper than Python recurses).
        message = "request body could not be parsed as JSON (nested too deeply?)"
        return _response([FieldError(field="body", message=message)])
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def database_unavailable() -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503, headers=headers)


async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable: %s: %s", type(exc).__name__, str(exc).strip())
    return database_unavailable()


def _is_database_down(exc: BaseException) -> bool:
    """A DATABASE_DOWN error, or a SQLAlchemy error raised while handling one (a rollback on a dead link)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, DATABASE_DOWN) or (isinstance(exc, sa.DBAPIError) and exc.connection_invalidated):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1  # type: ignore[assignment]
    return False


class CatchAll:
    """ASGI middleware answering an unhandled error with a JSON 500 and keeping the connection.

    Starlette's outermost handler sends its 500 and then re-raises, and uvicorn then closes the
    connection without a ``Connection: close``: the client's next request on it fails. Here the error
    is logged and answered, and the server sees a request that ended normally. A database that went
    away mid-request answers 503 with Retry-After, whatever raised it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:  # half a response went out: only closing the connection can tell the client
                raise
            if _is_database_down(exc):
                log.error("database unavailable: %s: %s", type(exc).__name__, str(exc).strip())
                response = database_unavailable()
            else:
                log.exception("unhandled error", exc_info=exc)
                response = JSONResponse({"detail": "internal server error"}, status_code=500)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(HTTPException, _http)
    for kind in DATABASE_DOWN:
        app.add_exception_handler(kind, _database_down)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid input; nothing was stored"},
}
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "Unknown id"}}

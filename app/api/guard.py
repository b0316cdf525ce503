"""What every request passes before its body is read, and the checks every route gets without listing them.

``RequestGuard`` (ASGI middleware, so before any body is read): when keys are configured, a valid
X-API-Key on every path but the open ones (401), the body size (DEEPREC_MAX_BODY_BYTES: 413 by
Content-Length, or by counting a chunked body), and a 405's ``Allow`` naming every method of the path.
The scope a route needs is its ``Requires`` dependency's to check (403); a key below it costs at most
one bounded body. ``reject_unknown_query`` (an app-wide dependency): a 422 for any query parameter the
route does not declare, as unknown body fields already get.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.access import GRANTED, KEY_HEADER, Keyring
from app.api.errors import FieldError, InvalidInput

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def open_paths(app: FastAPI) -> frozenset[str]:
    """Paths that need no key: the health checks, and the docs unless DEEPREC_OPEN_DOCS=false."""
    if not app.state.settings.open_docs:
        return HEALTH_PATHS
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    return HEALTH_PATHS | {p for p in docs if p}


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body over {limit} bytes (DEEPREC_MAX_BODY_BYTES)", {"Connection": "close"})


class RequestGuard:
    """ASGI middleware: 401 without a valid key, 413 for a large body, every allowed method on a 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._open: frozenset[str] | None = None
        self._templates: list[tuple[re.Pattern[str], set[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app: FastAPI = scope["app"]
        if self._open is None:
            self._open = open_paths(app)
        headers = dict(scope["headers"])
        keyring: Keyring = app.state.keyring
        if keyring.enabled and scope["path"] not in self._open:
            granted = keyring.scope_of(headers.get(KEY_HEADER.lower().encode()))
            if granted is None:
                await _answer(HTTPException(401, f"missing or invalid {KEY_HEADER} header",
                                            {"WWW-Authenticate": "APIKey"}), scope, receive, send)  # fmt: skip
                return
            scope[GRANTED] = granted
        limit: int = app.state.settings.body_limit
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _answer(_too_large(limit), scope, receive, send)
            return
        body = receive if length is not None else _counted(receive, limit)  # h11 holds a body to its length
        await self.app(scope, body, self._allow(app, scope, send))

    def _allow(self, app: FastAPI, scope: Scope, send: Send) -> Send:
        """``send`` that lists every method of the path on a 405 (the router names only the first route's)."""

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = ", ".join(sorted(self.methods_of(app, scope["path"])))
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message["headers"] = [*kept, (b"allow", methods.encode())]
            await send(message)

        return sending

    def methods_of(self, app: FastAPI, path: str) -> set[str]:
        if self._templates is None:  # from the OpenAPI document: the one public list of every route
            spec = app.openapi()
            self._templates = [
                (re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"),
                 {m.upper() for m in item if m in METHODS})
                for template, item in spec.get("paths", {}).items()
            ]  # fmt: skip
        return set().union(*(methods for pattern, methods in self._templates if pattern.match(path)))


async def _answer(error: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)
    await response(scope, receive, send)


def _counted(receive: Receive, limit: int) -> Receive:
    """``receive`` for a body without Content-Length (chunked): stops once more than ``limit`` bytes came."""
    total = 0

    async def counted() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise _too_large(limit)
        return message

    return counted


def _query_names(dependant: Dependant) -> Iterable[str]:
    for field in dependant.query_params:
        annotation: Any = getattr(field.field_info, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):  # a query parameter model
            yield from (f.alias or name for name, f in annotation.model_fields.items())
        else:
            yield field.alias
    for sub in dependant.dependencies:
        yield from _query_names(sub)


# id(route) -> (the route, its query parameters); the weak reference tells a reused id from the same route
_DECLARED: dict[int, tuple[weakref.ref[APIRoute], frozenset[str]]] = {}


async def reject_unknown_query(request: Request) -> None:
    """App-wide dependency: a 422 naming each query parameter the matched route does not declare."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    ref, known = _DECLARED.get(id(route), (None, frozenset()))
    if ref is None or ref() is not route:
        known = frozenset(_query_names(route.dependant))
        _DECLARED[id(route)] = (weakref.ref(route), known)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        names = ", ".join(sorted(known)) or "none"
        raise InvalidInput([FieldError(field=k, message=f"unknown query parameter; known: {names}") for k in unknown])

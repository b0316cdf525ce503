"""The checks every request passes before its body is read: a valid key (401), no undeclared query
parameter (422), the body size (413), and a 405 that names every method of its path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.access import GRANTED, KEY_HEADER, Keyring

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def open_paths(app: FastAPI) -> tuple[frozenset[str], tuple[str, ...]]:
    """(paths, path prefixes) that need no key: the health checks, the landing page and the console's own
    files (``app.console.web``; they hold no data), and the docs unless DEEPREC_OPEN_DOCS=false."""
    paths, prefixes = set(HEALTH_PATHS), []
    pages = [getattr(app.state, "console_pages", None)]
    if app.state.settings.open_docs:
        pages.append(getattr(app.state, "docs_pages", None))
        paths |= {p for p in (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p}
    for exact, starts in filter(None, pages):
        paths |= set(exact)
        prefixes += starts
    return frozenset(paths), tuple(prefixes)


@dataclass(frozen=True)
class Operations:
    """Each documented path as a regular expression, with its methods and their query parameters."""

    paths: list[tuple[re.Pattern[str], dict[str, frozenset[str]]]]

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Operations:
        paths = []
        for template, item in spec.get("paths", {}).items():
            pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
            methods = {
                m.upper(): frozenset(p["name"] for p in op.get("parameters", []) if p.get("in") == "query")
                for m, op in item.items()
                if m in METHODS
            }
            paths.append((pattern, methods))
        return cls(paths)

    def methods(self, path: str) -> dict[str, frozenset[str]]:
        """method -> its query parameters, for every documented path that ``path`` matches (first wins)."""
        out: dict[str, frozenset[str]] = {}
        for pattern, methods in self.paths:
            if pattern.match(path):
                out = {**methods, **out}
        return out


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body over {limit} bytes (DEEPREC_MAX_BODY_BYTES)", {"Connection": "close"})


class RequestGuard:
    """ASGI middleware. When keys are configured, a valid X-API-Key on every path but the open ones; the
    scope a route needs is its ``Requires`` dependency's to check (403), so a key below it costs at most
    one bounded body. A query parameter the operation does not declare is a 422, as unknown body fields
    are. DEEPREC_MAX_BODY_BYTES holds by Content-Length, or by counting a chunked body. A 405's Allow
    names every method of the path (the router names only its first route's).

    Operations and their parameters come from the app's OpenAPI document, the one public list of every
    route: a route added later is covered as soon as it is documented."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._open: tuple[frozenset[str], tuple[str, ...]] | None = None
        self._operations: Operations | None = None

    def operations(self, app: FastAPI) -> Operations:
        if self._operations is None:
            self._operations = Operations.of(app.openapi())
        return self._operations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app: FastAPI = scope["app"]
        if self._open is None:
            self._open = open_paths(app)
        headers = dict(scope["headers"])
        keyring: Keyring = app.state.keyring
        path = scope["path"]
        if keyring.enabled and path not in self._open[0] and not path.startswith(self._open[1]):
            granted = keyring.scope_of(headers.get(KEY_HEADER.lower().encode()))
            if granted is None:
                error = HTTPException(401, f"missing or invalid {KEY_HEADER} header", {"WWW-Authenticate": "APIKey"})
                await _answer(error, scope, receive, send)
                return
            scope[GRANTED] = granted
        if scope["query_string"]:
            declared = self.operations(app).methods(scope["path"]).get(scope["method"])
            keys = {k for k, _ in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)}
            if declared is not None and not keys <= declared:
                await _unknown_query(sorted(keys - declared), declared)(scope, receive, send)
                return
        limit: int = app.state.settings.body_limit
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _answer(_too_large(limit), scope, receive, send)
            return
        body = receive if length is not None else _counted(receive, limit)  # h11 holds a body to its length
        await self.app(scope, body, self._allow(app, scope, send))

    def _allow(self, app: FastAPI, scope: Scope, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = ", ".join(sorted(self.operations(app).methods(scope["path"])))
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message["headers"] = [*kept, (b"allow", methods.encode())]
            await send(message)

        return sending


async def _answer(error: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)
    await response(scope, receive, send)


def _unknown_query(unknown: list[str], declared: frozenset[str]) -> JSONResponse:
    """The 422 of app.api.errors: a detail line and one entry per unknown parameter."""
    known = ", ".join(sorted(declared)) or "none"
    errors = [{"field": k, "message": f"unknown query parameter; known: {known}", "index": None} for k in unknown]
    return JSONResponse({"detail": "; ".join(f"{e['field']}: {e['message']}" for e in errors), "errors": errors}, 422)


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

"""Request ids, one JSON log line per request, Prometheus request metrics and the /metrics route.

A plain ASGI middleware (no BaseHTTPMiddleware: it costs a task per request). The request id comes
from X-Request-ID when the client sends a sane one, else a fresh one; it is echoed back and put on
every log record written while the request runs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import re
import sys
import time
from contextlib import ExitStack
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.serving.metrics import LATENCY, REQUESTS

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
access_log = logging.getLogger("deeprec.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        out.update({k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS and k != "request_id"})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str = "INFO") -> None:
    """JSON logs on stderr for the whole process; idempotent, other handlers are left alone."""
    root = logging.getLogger()
    if not any(isinstance(h, StderrHandler) for h in root.handlers):
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level.upper())


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = incoming if _SANE_ID.match(incoming) else f"{random.getrandbits(128):032x}"  # an id, not a secret
        token = request_id_var.set(rid)
        status = 500
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - t0
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            REQUESTS.labels(template, method, str(status)).inc()
            LATENCY.labels(template, method).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope.get("path"),
                        "route": template,
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                    },
                )
            request_id_var.reset(token)


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {
                "text/plain": {
                    "example": 'deeprec_http_requests_total{method="GET",route="/v1/models",status="200"} 3.0\n'
                }
            },
            "description": "Prometheus text exposition format",
        }
    },
)
def metrics() -> Response:
    """Requests and latency by route, inference time by model, loaded model versions."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def start_metrics_server(app: FastAPI, stack: ExitStack) -> None:
    """Lifespan component: with DEEPREC_METRICS_PORT, /metrics also on that port of DEEPREC_METRICS_HOST,
    without a key (keep the port off the public network). One process per host binds it; with uvicorn
    --workers N the others log that the port is taken and serve /metrics behind the key only."""
    settings = app.state.settings
    if settings.metrics_port is None:
        return
    try:
        server, thread = start_http_server(settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        logging.getLogger(__name__).warning("metrics port not bound", extra={"port": settings.metrics_port,
                                                                              "error": str(exc)})  # fmt: skip
        return
    stack.callback(thread.join, 5)
    stack.callback(server.server_close)
    stack.callback(server.shutdown)

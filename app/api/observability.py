"""Request ids, one JSON log line per request, Prometheus request metrics and the /metrics route.

A plain ASGI middleware (no BaseHTTPMiddleware: it costs a task per request). The request id comes
from X-Request-ID when the client sends a sane one, else a fresh one; it is echoed back and put on
every log record written while the request runs.
"""

from __future__ import annotations

import logging
import random
import re
import time
from contextlib import ExitStack

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import request_id_var
from app.serving.metrics import LATENCY, REQUESTS

_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
access_log = logging.getLogger("deeprec.access")


def route_label(scope: Scope) -> str:
    """The matched route's path template; FastAPI's own pages (/openapi.json) match no route object, so
    they are named by path; anything else unmatched is one label (paths are unbounded)."""
    template = getattr(scope.get("route"), "path", None)
    if template:
        return str(template)
    app = scope.get("app")
    own = {getattr(app, a, None) for a in ("openapi_url", "docs_url", "redoc_url", "swagger_ui_oauth2_redirect_url")}
    return scope["path"] if scope.get("path") in own - {None} else "<unmatched>"


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
            template = route_label(scope)
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

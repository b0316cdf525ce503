"""/healthz (the process answers) and /readyz (every readiness check passes).

Readiness checks live in app.state.ready_checks: name -> check(app) -> detail string. A check
raises (NotReady or anything else) when it fails. Components started in the lifespan add
theirs, e.g. ``app.state.ready_checks["models"] = check_models``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from app.api.errors import RETRY_AFTER_S
from app.api.schemas import Health, Readiness
from app.db.migrations import current_revisions, head_revisions

ReadyCheck = Callable[[FastAPI], str]
router = APIRouter(tags=["health"])


class NotReady(Exception):
    """Raised by a readiness check; its message is shown in /readyz."""


def _engine(app: FastAPI) -> Engine:
    engine = getattr(app.state, "engine", None)
    if engine is None:
        raise NotReady("the service has not started its database engine")
    return engine


def check_database(app: FastAPI) -> str:
    engine = _engine(app)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return f"{engine.dialect.name} reachable"


def check_migrations(app: FastAPI) -> str:
    with _engine(app).connect() as conn:
        current = current_revisions(conn)
    heads = head_revisions()
    if current != heads:
        at = ", ".join(current) or "no revision"
        raise NotReady(f"database at {at}, code expects {', '.join(heads)}: run `deeprec db upgrade`")
    return f"at head {', '.join(heads)}"


def default_ready_checks() -> dict[str, ReadyCheck]:
    return {"database": check_database, "migrations": check_migrations}


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready"}})
def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers, migrations are at head, and every other registered check passes."""
    checks: dict[str, dict[str, Any]] = {}
    for name, check in request.app.state.ready_checks.items():
        try:
            checks[name] = {"ok": True, "detail": check(request.app)}
        except Exception as exc:  # noqa: BLE001  (any failure means not ready; it is reported, not raised)
            checks[name] = {"ok": False, "detail": str(exc) or exc.__class__.__name__}
    ready = all(c["ok"] for c in checks.values())
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    headers = None if ready else {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503, headers=headers)

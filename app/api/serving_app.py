"""Wires serving into the FastAPI app: routers, request middleware, error mapping, and the lifespan part
that loads every active model version in the background (requests get 503 until it is done).
"""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker

from app.api import observability
from app.api.access import ReadAccess
from app.api.response_cache import make_cache
from app.api.routes import models as models_routes
from app.api.routes import recommend as recommend_routes
from app.api.routes.health import NotReady
from app.config import Settings
from app.jobs.publish import open_store
from app.serving.catalogue import CatalogueKeeper
from app.serving.changes import ChangeFeed
from app.serving.metrics import mark_process, set_loaded
from app.serving.pipeline import RecommendationService
from app.serving.registry import ModelRegistry, select_device
from app.serving.results import ServingError

log = logging.getLogger(__name__)


async def _serving_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServingError)
    detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
    body = {"detail": detail.get("message", ""), **{k: v for k, v in detail.items() if k != "message"}}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def install_serving(app: FastAPI) -> None:
    """Routers (each behind a read key when keys are configured), the request-id/metrics middleware and
    the ServingError -> JSON mapping."""
    app.include_router(recommend_routes.router, dependencies=[ReadAccess])
    app.include_router(models_routes.router, dependencies=[ReadAccess])
    app.include_router(observability.router, dependencies=[ReadAccess])
    app.add_middleware(observability.RequestContextMiddleware)
    app.add_exception_handler(ServingError, _serving_error)


def build_serving(app: FastAPI, settings: Settings, sessions: sessionmaker[Session]) -> ModelRegistry:
    """Registry, catalogue and pipeline on app.state; raises at once when DEEPREC_DEVICE=cuda has no GPU."""
    torch.set_num_threads(max(1, settings.torch_threads))  # small per-request ops: thread hand-off costs more
    device = select_device(settings.device)
    store = open_store(settings, sessions)  # model_version says what is active
    registry = ModelRegistry(store, device, freeze_heap=settings.gc_freeze)
    app.state.registry = registry
    app.state.catalogue = CatalogueKeeper(sessions, interval_s=settings.catalogue_refresh_s)
    app.state.recommender = RecommendationService(
        registry,
        sessions,
        app.state.catalogue,
        ann_min_items=settings.ann_min_items,
        depth=settings.retrieval_depth,
        similar_depth=settings.similar_depth,
        cache_bytes=settings.recommendation_cache_mb * 2**20,
        cache_entries=settings.recommendation_cache_size,
    )
    app.state.changes = ChangeFeed.open(sessions.kw["bind"])
    app.state.response_cache = make_cache(settings.response_cache_mb * 2**20) if app.state.changes else None
    return registry


def load_models(registry: ModelRegistry) -> None:
    try:
        models = registry.refresh()
    except Exception:  # never stay not-ready forever: serve popularity and say why in the logs
        log.exception("loading models failed; serving popularity from the database")
        registry.ready = True
        return
    set_loaded({name: (m.version, str(m.device)) for name, m in models.items()})
    log.info("models ready", extra={"models": models.versions(), "device": str(registry.device)})


def start_serving(app: FastAPI, stack: ExitStack) -> None:
    """Lifespan component (after the database): load every active model version in a background thread
    and keep the catalogue current in another; model routes answer 503 with Retry-After and /readyz is
    not ready until both have loaded."""
    mark_process()
    registry = build_serving(app, app.state.settings, app.state.sessionmaker)
    loader = threading.Thread(target=load_models, args=(registry,), name="model-loader", daemon=True)
    loader.start()
    stack.callback(loader.join, 60)
    app.state.catalogue.start()
    stack.callback(app.state.catalogue.stop)
    if app.state.changes is not None:
        stack.callback(app.state.changes.close)
    app.state.ready_checks["models"] = check_models


def check_models(app: FastAPI) -> str:
    """Readiness check: raises until the model registry has loaded the active versions and the catalogue,
    and while an active model failed to load with no version of it serving; names a model kept on an
    older version."""
    registry: ModelRegistry | None = getattr(app.state, "registry", None)
    if registry is None or not registry.ready:
        raise ModelsLoading("models loading")
    if not app.state.catalogue.ready:
        raise ModelsLoading("catalogue loading")
    loaded, errors = registry.models, dict(registry.errors)
    failed = {name: why for name, why in errors.items() if name not in loaded}
    if failed:
        raise NotReady("; ".join(f"{name} failed to load: {why}" for name, why in sorted(failed.items())))
    if not loaded:
        return "no trained model yet: serving popularity from the database"
    text = ", ".join(f"{n}@{v}" for n, v in loaded.versions().items())
    behind = [f"{name} still on {loaded[name].version}: its active version failed to load: {why}"
              for name, why in sorted(errors.items())]  # fmt: skip
    return "; ".join([text, *behind])


class ModelsLoading(Exception):
    pass

"""Trained models: the active version of each, its metrics and device, and every stored version."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy.exc import SQLAlchemyError

from app.api.deps import SessionDep
from app.api.recommend_schemas import ModelsRead, VersionsRead
from app.jobs.first_run import still_training
from app.jobs.queue import list_jobs
from app.jobs.versions import list_versions as list_recorded
from app.recsys.models import model_names
from app.recsys.models.ensemble import Ensemble
from app.recsys.store import StoreError, served_names, version_time
from app.serving.registry import ModelRegistry
from app.serving.results import UnknownModel

router = APIRouter(prefix="/v1", tags=["models"])
NAMES = {"enum": served_names()}  # stated in the OpenAPI document; any other name is a 422 listing these


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


Registry = Annotated[ModelRegistry, Depends(get_registry)]


def open_jobs_training(session: Any) -> dict[str, int]:
    """Model -> the open job that trains it; empty when the database does not answer (the models are
    served from memory and listed all the same)."""
    try:
        training = still_training(list_jobs(session=session, limit=20, status="queued"))
        training.update(still_training(list_jobs(session=session, limit=20, status="running")))
    except SQLAlchemyError:
        session.rollback()
        return {}
    return training


@router.get("/models", response_model=ModelsRead, summary="Models")
def list_models(registry: Registry, session: SessionDep) -> dict[str, Any]:
    """Each model's active version, its metrics, the device it is on and when it was trained; a model
    trained on ratings is listed under its own name (``mf-rating``) once it has a version. An ensemble
    lists its learned member weights: the hybrid's, which ``weights=`` on recommendations overrides per
    request, and the rating stack's (``hybrid-rating``) for a user and item of typical counts.
    ``training_job`` names the queued or running job that will publish a version of it (after the
    first start: the models still training in the background)."""
    training = open_jobs_training(session)
    loaded = registry.models
    out = []
    rating_only = set(served_names()) - set(model_names())
    for name in served_names():
        if name in rating_only and name not in loaded and registry.store.active_version(name) is None:
            continue
        lm = loaded.get(name)
        if lm is not None:
            weights = lm.model.weights if isinstance(lm.model, Ensemble) else None
            row = {"name": name, "active_version": lm.version, "metrics": lm.metrics, "device": str(lm.device),
                   "trained_at": lm.trained_at, "loaded": True, "weights": weights,
                   "indexes": sorted(lm.indexes)}  # fmt: skip
        else:
            active = registry.store.active_version(name)
            row = {"name": name, "active_version": active, "metrics": {}, "device": None,
                   "trained_at": version_time(active) if active else None, "loaded": False}  # fmt: skip
        out.append({**row, "error": registry.errors.get(name), "training_job": training.get(name)})
    return {"models": out}


@router.get(
    "/models/{name}/versions",
    response_model=VersionsRead,
    responses={422: {"description": "Unknown model name; the valid ones are listed"}},
    summary="Model versions",
)
def list_versions(
    registry: Registry, session: SessionDep, name: Annotated[str, Path(examples=["mf"], json_schema_extra=NAMES)]
) -> dict[str, Any]:
    """Every recorded version of one model (the model_version table), oldest first; marks the active one."""
    if name not in served_names():
        raise UnknownModel(name, served_names())
    store = registry.store
    rows = list_recorded(session=session, name=name)
    active = next((r.version for r in rows if r.status == "active"), None)
    versions = []
    for row in rows:
        try:
            info = store.info(name, row.version)
        except StoreError:
            continue  # a version being deleted or damaged is not listed
        versions.append({"version": row.version, "trained_at": info.trained_at, "metrics": row.metrics,
                         "size_bytes": info.size_bytes, "active": row.status == "active", "status": row.status,
                         "note": row.note, "job_id": row.job_id})  # fmt: skip
    return {"name": name, "active_version": active, "versions": versions}

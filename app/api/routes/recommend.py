"""Recommendations, predictions, next items and similar items.

Routes are async and hand the blocking work (database query, torch) to the threadpool in one hop;
a sync route would make FastAPI hop three times (dependency, endpoint, response validation).
They return their JSON already serialised (a Response): FastAPI then skips validating the body
against the declared response model, which stays declared for the OpenAPI docs. The bytes are
those FastAPI would write (pydantic's JSON serialiser, the model's fields in the model's order).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel
from pydantic_core import to_json

from app.api.batcher import RequestBatcher, serving_lanes
from app.api.recommend_schemas import (
    MAX_N,
    PredictRead,
    PredictRequest,
    RecommendationsRead,
    SessionRecommendationsRead,
    SessionRequest,
    SimilarRead,
)
from app.serving import items as item_service
from app.serving.batching import Steps
from app.serving.results import RecList
from app.serving.service import Filters, RecommendationService

T = TypeVar("T")

router = APIRouter(prefix="/v1", tags=["recommendations"])

ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"description": "Bad parameter: n outside 1..1000, or an unknown model (the valid ones are listed)"},
    503: {"description": "Models are loading; the Retry-After header says when to retry"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown ids; they are listed"}}


def _svc(request: Request) -> RecommendationService:
    """The app's service; read from the request rather than a dependency (FastAPI solves those per request)."""
    svc: RecommendationService = request.app.state.recommender
    return svc


async def _run(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn`` in a worker thread, at most DEEPREC_SERVING_CONCURRENCY of them at once in this process.

    The others wait on the event loop: each request is a short burst of CPU under the GIL, and more
    threads than cores only hand the GIL back and forth (measured: with 1 worker and 32 clients, the
    cached recommendation path fell from ~0.48 to ~1.9 ms of CPU per request with the default 40 threads).
    """
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=_lanes(request)[0])


async def _run_steps(request: Request, make: Callable[[], Steps[T]]) -> T:
    """The steps ``make()`` builds, run by the serving thread together with the requests queued meanwhile
    (``RequestBatcher``), under the same limit as ``_run``."""
    return await _lanes(request)[1].submit(make)


def _lanes(request: Request) -> tuple[anyio.CapacityLimiter, RequestBatcher]:
    """This event loop's limiter of serving threads and its batcher (one of each per loop)."""
    return serving_lanes(request.app.state)


N = Annotated[int, Query(gt=0, le=MAX_N, description="How many items", examples=[10])]
ModelName = Annotated[str | None, Query(description="Any model name; default: the hybrid", examples=["hybrid"])]
UserId = Annotated[str, Path(min_length=1, max_length=256, examples=["196"])]
ExcludeSeen = Annotated[bool, Query(description="Leave out items the user interacted with")]
Categories = Annotated[
    str | None, Query(max_length=10_000, description="Only items in any of these categories", examples=["Comedy"])
]
Exclude = Annotated[str | None, Query(max_length=100_000, description="Item ids to leave out", examples=["50,181"])]


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(p for p in (s.strip() for s in (value or "").split(",")) if p)


def _fields(model: type[BaseModel]) -> list[tuple[str, Any]]:
    """The response model's fields in order, with the default of each optional one."""
    return [(name, f.get_default(call_default_factory=True)) for name, f in model.model_fields.items()]


FIELDS: dict[type[BaseModel], list[tuple[str, Any]]] = {
    m: _fields(m) for m in (RecommendationsRead, SessionRecommendationsRead, SimilarRead, PredictRead)
}


def _json(body: dict[str, Any], model: type[BaseModel]) -> Response:
    """``body`` as the response model would write it: only its fields, in its order, pydantic's JSON."""
    out = {name: body[name] if name in body else default for name, default in FIELDS[model]}
    return Response(to_json(out, inf_nan_mode="null"), media_type="application/json")


def _rec(out: RecList, model: type[BaseModel], **ids: Any) -> Response:
    items = [{"item_id": str(i.item_id), "score": float(i.score), "reason": str(i.reason)} for i in out.items]
    body = {"model": out.model, "version": out.version, "strategy": out.strategy, "items": items}
    return _json({**ids, **body, "detail": out.detail, **out.extra}, model)


@router.get(
    "/users/{user_id}/recommendations", response_model=RecommendationsRead, responses=ERRORS, summary="Recommend"
)
async def recommend(
    request: Request,
    user_id: UserId,
    n: N = 10,
    model: ModelName = None,
    exclude_seen: ExcludeSeen = True,
    categories: Categories = None,
    exclude: Exclude = None,
) -> Response:
    """Top-N items for a user; users the model never saw fall back (sequence model, content, popular)."""
    filters = Filters(n=n, categories=_csv(categories), exclude=_csv(exclude), exclude_seen=exclude_seen)
    svc = _svc(request)
    out = svc.recommend_ready(user_id, model=model, filters=filters)  # memory only: no hop for a ready answer
    if out is None:
        out = await _run_steps(request, lambda: svc.recommend_steps(user_id, model=model, filters=filters))
    return _rec(out, RecommendationsRead, user_id=user_id)


@router.post("/predict", response_model=PredictRead, responses={**ERRORS, **NOT_FOUND}, summary="Predict")
async def predict(request: Request, body: PredictRequest) -> Response:
    """Relevance scores and, from a rating model, ratings on the data set's scale for given items."""
    svc = _svc(request)
    out = await _run_steps(request, lambda: item_service.predict_steps(svc, body.user_id, body.item_ids, body.model))
    out["predictions"] = [
        {"item_id": str(p.item_id), "score": float(p.score), "rating": p.rating, "model": str(p.model)}
        for p in out["predictions"]
    ]
    return _json(out, PredictRead)


@router.get(
    "/users/{user_id}/next-items",
    response_model=RecommendationsRead,
    responses={**ERRORS, **NOT_FOUND},
    summary="Next items for a user",
)
async def next_items(
    request: Request,
    user_id: UserId,
    n: N = 10,
    model: Annotated[str | None, Query(description="A sequence model", examples=["sasrec"])] = None,
    exclude_seen: ExcludeSeen = True,
) -> Response:
    """What comes next after the user's current sequence, read from the database now."""
    filters = Filters(n=n, exclude_seen=exclude_seen)
    svc = _svc(request)
    out = svc.next_items_ready(user_id, model=model, filters=filters)  # memory only: no hop for a ready answer
    if out is None:
        out = await _run_steps(request, lambda: svc.next_items_steps(user_id, model=model, filters=filters))
    return _rec(out, RecommendationsRead, user_id=user_id)


@router.post(
    "/sessions/next-items", response_model=SessionRecommendationsRead, responses=ERRORS, summary="Next items (session)"
)
async def session_next_items(request: Request, body: SessionRequest) -> Response:
    """Next items for an anonymous session's sequence of items; no user needed."""
    filters = Filters(n=body.n, exclude_seen=body.exclude_seen)
    svc = _svc(request)
    out = await _run_steps(request, lambda: svc.session_next_steps(body.item_ids, model=body.model, filters=filters))
    return _rec(out, SessionRecommendationsRead, user_id=None)


@router.get(
    "/items/{item_id}/similar",
    response_model=SimilarRead,
    responses={**ERRORS, **NOT_FOUND},
    summary="Similar items",
)
async def similar_items(
    request: Request,
    item_id: Annotated[str, Path(min_length=1, max_length=256, examples=["50"])],
    n: N = 10,
    model: Annotated[str | None, Query(description="A model with item embeddings", examples=["mf"])] = None,
) -> Response:
    """Item-to-item by learned embeddings; an item with features only is matched by the content model."""
    out = await _run(request, item_service.similar, _svc(request), item_id, n, model)
    return _rec(out, SimilarRead, item_id=item_id)

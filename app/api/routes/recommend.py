"""Recommendations, predictions, next items and similar items.

Each route hands its request to a serving thread in one hop (at most DEEPREC_SERVING_CONCURRENCY at once
per process; the others wait on the event loop) and runs the pipeline of ``app.serving.pipeline`` there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Path, Query, Request

from app.api.fields import Id
from app.api.recommend_schemas import (
    MAX_N,
    PredictRead,
    PredictRequest,
    RecommendationsRead,
    SessionRecommendationsRead,
    SessionRequest,
    SimilarRead,
)
from app.api.response_cache import TICKET, Ticket
from app.recsys.models import get_model_class, model_names
from app.recsys.store import served_names
from app.serving.pipeline import Filters, RecommendationService
from app.serving.results import RecList

T = TypeVar("T")

router = APIRouter(prefix="/v1", tags=["recommendations"])

ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"description": "Bad parameter: n outside 1..1000, an unknown model (the valid ones are listed), bad weights"},
    503: {"description": "Models are loading, or the model asked for failed to load; Retry-After says when to retry"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown ids; they are listed"}}


async def _run(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn`` in a serving thread, at most DEEPREC_SERVING_CONCURRENCY of them at once in this process.

    The others wait on the event loop: each request is a short burst of CPU under the GIL, and more
    threads than cores only hand the GIL back and forth."""
    state = request.app.state
    limiter = getattr(state, "serving_limiter", None)
    if limiter is None:
        limiter = state.serving_limiter = anyio.CapacityLimiter(state.settings.serving_concurrency)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=limiter)


async def _list(request: Request, fn: Callable[..., RecList], *args: Any, **kwargs: Any) -> RecList:
    """``_run`` for a GET list endpoint: the response cache's ticket (``app.api.response_cache``) records
    what the answer depends on in the serving thread, before the pipeline reads anything."""
    ticket: Ticket | None = request.scope.get(TICKET)
    if ticket is None:
        return await _run(request, fn, *args, **kwargs)

    def begun() -> RecList:
        ticket.begin()
        return fn(*args, **kwargs)

    out = await _run(request, begun)
    ticket.keep = out.strategy != "popular"  # popular lists move with everyone's events
    return out


def _svc(request: Request) -> RecommendationService:
    svc: RecommendationService = request.app.state.recommender
    return svc


N = Annotated[int, Query(gt=0, le=MAX_N, description="How many items", examples=[10])]
ModelName = Annotated[
    str | None,
    Query(
        description="Any served model name (default: the hybrid); any other name is a 422 listing them",
        examples=["hybrid"],
        json_schema_extra={"enum": served_names()},
    ),  # fmt: skip
]
SequenceModel = Annotated[
    str | None,
    Query(
        description="A sequence model; any other name is a 422 ('not a sequence model')",
        examples=["gru4rec"],
        json_schema_extra={"enum": [m for m in model_names() if get_model_class(m).sequential]},
    ),  # fmt: skip
]
UserId = Annotated[Id, Path(description="External user id", examples=["u1"])]
ExcludeSeen = Annotated[bool, Query(description="Leave out items the user interacted with")]
Categories = Annotated[
    str | None, Query(max_length=10_000, description="Only items in any of these categories", examples=["Comedy"])
]
Exclude = Annotated[str | None, Query(max_length=100_000, description="Item ids to leave out", examples=["i50,i181"])]
Exact = Annotated[
    bool,
    Query(
        description="Rank every item instead of the retrieved candidates (slow on a large catalogue): the reference "
        "the served lists' recall is measured against"
    ),
]
Weights = Annotated[
    str | None,
    Query(
        max_length=1_000,
        description="Re-blend the ranking hybrid's members for this request: member:weight pairs, each weight a "
        "number >= 0, normalised to sum to 1; members left out weigh 0. Default: the weights learned in training "
        "(listed by GET /v1/models). An unknown member, a bad number, a member given twice, all zeros, or weights "
        "for a model other than the hybrid: 422 saying which",
        examples=["mf:0.5,gru4rec:0.5"],
    ),
]


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(p for p in (s.strip() for s in (value or "").split(",")) if p)


def _rec(out: RecList, **ids: Any) -> dict[str, Any]:
    items = [
        {"item_id": i.item_id, "score": i.score, "reason": i.reason, "retrieved_by": i.retrieved_by} for i in out.items
    ]
    body = {"model": out.model, "version": out.version, "strategy": out.strategy, "items": items}
    return {**ids, **body, "detail": out.detail, **out.extra}


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
    exact: Exact = False,
    weights: Weights = None,
) -> dict[str, Any]:
    """Top-N items for a user; users the model never saw fall back (sequence model, content, popular)."""
    filters = Filters(n=n, categories=_csv(categories), exclude=_csv(exclude), exclude_seen=exclude_seen)
    out = await _list(
        request, _svc(request).recommend, user_id, model=model, filters=filters, exact=exact, weights=weights
    )
    return _rec(out, user_id=user_id)


@router.post("/predict", response_model=PredictRead, responses={**ERRORS, **NOT_FOUND}, summary="Predict")
async def predict(request: Request, body: PredictRequest) -> dict[str, Any]:
    """Relevance scores and, from a rating model, ratings on the data set's scale for given items."""
    out = await _run(request, _svc(request).predict, body.user_id, body.item_ids, body.model)
    out["predictions"] = [
        {"item_id": p.item_id, "score": p.score, "rating": p.rating, "model": p.model} for p in out["predictions"]
    ]
    return out


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
    model: SequenceModel = None,
    exclude_seen: ExcludeSeen = True,
    exact: Exact = False,
) -> dict[str, Any]:
    """What comes next after the user's current sequence, read from the database now."""
    filters = Filters(n=n, exclude_seen=exclude_seen)
    out = await _list(request, _svc(request).next_items, user_id, model=model, filters=filters, exact=exact)
    return _rec(out, user_id=user_id)


@router.post(
    "/sessions/next-items", response_model=SessionRecommendationsRead, responses=ERRORS, summary="Next items (session)"
)
async def session_next_items(request: Request, body: SessionRequest) -> dict[str, Any]:
    """Next items for an anonymous session's sequence of items; no user needed."""
    filters = Filters(n=body.n, exclude_seen=body.exclude_seen)
    out = await _run(
        request, _svc(request).session_next, body.item_ids, model=body.model, filters=filters, exact=body.exact
    )
    return _rec(out, user_id=None)


@router.get(
    "/items/{item_id}/similar",
    response_model=SimilarRead,
    responses={**ERRORS, **NOT_FOUND},
    summary="Similar items",
)
async def similar_items(
    request: Request,
    item_id: Annotated[Id, Path(description="External item id", examples=["i1"])],
    n: N = 10,
    model: Annotated[
        str | None,
        Query(
            description="A model with item embeddings; others are a 422 listing them",
            examples=["mf"],
            json_schema_extra={"enum": served_names()},
        ),  # fmt: skip
    ] = None,
    exact: Exact = False,
) -> dict[str, Any]:
    """Item-to-item by learned embeddings; an item with features only is matched by the content model."""
    out = await _list(request, _svc(request).similar, item_id, n=n, model=model, exact=exact)
    return _rec(out, item_id=item_id)

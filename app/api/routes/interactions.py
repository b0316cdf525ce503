"""POST /v1/interactions (batched, idempotent, all or nothing) and a user's history, newest first."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from app.api.deps import ReadAccess, SessionDep, SettingsDep, UserIdPath, WriteAccess
from app.api.errors import ERROR_RESPONSES, NOT_FOUND, WRITE_RESPONSES, FieldError, InvalidInput
from app.api.schemas import InteractionPage, InteractionRead, InteractionsCreate, InteractionsResult
from app.config import Settings
from app.db import repository

router = APIRouter(prefix="/v1", tags=["interactions"])


def check_batch(columns: dict[str, Any], settings: Settings, now: float) -> list[FieldError]:
    """The rules that depend on the settings: batch limit, rating scale, how far ahead of the clock
    (``columns``: ``to_columns`` of the call)."""
    n = len(columns["user_id"])
    if n > settings.max_batch:
        return [FieldError(field="interactions", message=f"{n} events; at most {settings.max_batch} per call")]
    ratings, stamps = columns["value"], columns["ts"]  # [N] each
    is_rating = np.array([t == "rating" for t in columns["type"]], dtype=bool)  # [N]
    lo, hi = settings.rating_min, settings.rating_max
    problems: list[tuple[int, str, str]] = []
    for i in np.flatnonzero((ratings < lo) | (ratings > hi)):
        problems.append((int(i), "rating", f"{ratings[i]} outside the rating scale {lo}-{hi}"))
    for i in np.flatnonzero(is_rating & np.isnan(ratings)):
        problems.append((int(i), "rating", "required when type is 'rating'"))
    horizon = now + settings.future_tolerance_s
    for i in np.flatnonzero(stamps > horizon):
        when = datetime.fromtimestamp(stamps[i], UTC).isoformat()
        ahead = settings.future_tolerance_s
        problems.append((int(i), "timestamp", f"{when} is in the future (at most {ahead}s ahead)"))
    return [FieldError(field=f"interactions[{i}].{name}", message=msg, index=i) for i, name, msg in sorted(problems)]


def to_columns(body: InteractionsCreate, now: float) -> dict[str, Any]:
    """The events as the columns ``repository.add_interactions`` stores (lists and arrays, no frame)."""
    rows = body.interactions
    return {
        "user_id": [r.user_id for r in rows],
        "item_id": [r.item_id for r in rows],
        "type": [r.event_type for r in rows],
        "value": np.array([np.nan if r.rating is None else r.rating for r in rows], dtype=np.float64),
        "ts": np.array([now if r.timestamp is None else r.timestamp.timestamp() for r in rows], dtype=np.float64),
        "event_id": [r.event_id for r in rows],
    }


@router.post("/interactions", response_model=InteractionsResult, dependencies=[WriteAccess], responses=WRITE_RESPONSES)
def add_interactions(body: InteractionsCreate, session: SessionDep, settings: SettingsDep) -> InteractionsResult:
    """Store up to DEEPREC_MAX_BATCH events; unknown users and items are created. All or nothing."""
    now = time.time()
    columns = to_columns(body, now)
    problems = check_batch(columns, settings, now)
    if problems:
        raise InvalidInput(problems)
    result = repository.add_interactions(session=session, rows=columns)
    session.commit()
    return InteractionsResult(inserted=result.inserted, duplicates=result.duplicates)


@router.get(
    "/users/{user_id}/interactions",
    response_model=InteractionPage,
    dependencies=[ReadAccess],
    responses={**ERROR_RESPONSES, **NOT_FOUND},
)
def list_interactions(
    user_id: UserIdPath,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="next_cursor of the previous page, as handed out (base64url); any other value is a 422",
        ),
    ] = None,
) -> InteractionPage:
    """A user's events, newest first, one page at a time."""
    try:
        page = repository.list_user_interactions(session=session, user_id=user_id, limit=limit, cursor=cursor)
    except repository.InvalidCursor:
        raise InvalidInput([FieldError(field="cursor", message="not a cursor handed out by this endpoint")]) from None
    if page is None:
        raise HTTPException(status_code=404, detail=f"user {user_id!r} not found")
    rows = [
        InteractionRead(item_id=r.item_id, type=r.type, rating=r.value, timestamp=r.occurred_at, event_id=r.event_id)
        for r in page.interactions
    ]
    return InteractionPage(interactions=rows, next_cursor=page.next_cursor)

"""Browse and search the catalogue and the users: GET /v1/items and GET /v1/users, one page at a time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.access import ReadAccess
from app.api.browse_schemas import ItemPage, ItemSummary, UserPage, UserSummary
from app.api.deps import SessionDep
from app.api.errors import ERROR_RESPONSES, FieldError, InvalidInput
from app.db import browse
from app.db.repository import InvalidCursor

router = APIRouter(prefix="/v1", dependencies=[ReadAccess])
MAX_PAGE = 500

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="next_cursor of the previous page; empty or left out: the first")
]


def _text(field: str, value: str | None) -> str | None:
    """Search text as every backend compares it: PostgreSQL refuses NUL characters in a string."""
    if value is not None and "\x00" in value:
        raise InvalidInput([FieldError(field=field, message="contains a NUL character")])
    return value or None


def _bad_cursor() -> InvalidInput:
    return InvalidInput([FieldError(field="cursor", message="not a cursor handed out by this endpoint")])


@router.get("/items", response_model=ItemPage, responses=ERROR_RESPONSES, tags=["items"], summary="Browse items")
def list_items(
    session: SessionDep,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Part of the title or of the item id, any case", examples=["harbor"]),
    ] = None,
    category: Annotated[
        str | None, Query(max_length=256, description="Only items in this category", examples=["Comedy"])
    ] = None,
    ids: Annotated[
        str | None,
        Query(max_length=100_000, description=f"Only these item ids, a comma list of at most {MAX_PAGE}"),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ItemPage:
    """Items in the order they were created, filtered by text, category and ids; page on with next_cursor."""
    wanted = None
    if ids is not None:
        wanted = sorted({p for p in (s.strip() for s in ids.split(",")) if p})
        if len(wanted) > MAX_PAGE:
            raise InvalidInput([FieldError(field="ids", message=f"{len(wanted)} ids; at most {MAX_PAGE}")])
        _text("ids", ids)
    try:
        page = browse.list_items(
            session=session,
            q=_text("q", q),
            category=_text("category", category),
            ids=wanted,
            limit=limit,
            cursor=cursor or None,
        )
    except InvalidCursor:
        raise _bad_cursor() from None
    items = [
        ItemSummary(
            item_id=it.external_id,
            title=it.title,
            categories=it.categories,
            attributes=it.attributes,
            active=it.active,
            created_at=it.created_at,
        )
        for it in page.rows
    ]
    return ItemPage(items=items, next_cursor=page.next_cursor)


@router.get("/users", response_model=UserPage, responses=ERROR_RESPONSES, tags=["users"], summary="Browse users")
def list_users(
    session: SessionDep,
    q: Annotated[
        str | None, Query(max_length=200, description="Part of the user id, any case", examples=["u1"])
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> UserPage:
    """Users in the order they were created, filtered by part of their id; page on with next_cursor."""
    try:
        page = browse.list_users(session=session, q=_text("q", q), limit=limit, cursor=cursor or None)
    except InvalidCursor:
        raise _bad_cursor() from None
    users = [UserSummary(user_id=u.external_id, attributes=u.attributes, created_at=u.created_at) for u in page.rows]
    return UserPage(users=users, next_cursor=page.next_cursor)

"""Items and users: batch and single upserts, reads, and deleting a user with all their events."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy.orm import Session

from app.api.deps import ItemIdPath, ReadAccess, SessionDep, SettingsDep, UserIdPath, WriteAccess
from app.api.errors import ERROR_RESPONSES, NOT_FOUND, WRITE_RESPONSES, FieldError, InvalidInput
from app.api.schemas import (
    ItemIn,
    ItemRead,
    ItemsResult,
    ItemsUpsert,
    ItemUpdate,
    UserDeleted,
    UserIn,
    UserRead,
)
from app.db import repository
from app.db.repository import ItemUpsert
from app.db.tables import Item, User

router = APIRouter(prefix="/v1")


def _upsert(item: ItemIn) -> ItemUpsert:
    return ItemUpsert(
        item_id=item.item_id,
        title=item.title,
        categories=item.categories,
        attributes=item.attributes,
        active=item.active,
    )


def _item_read(session: Session, item: Item) -> ItemRead:
    return ItemRead(
        item_id=item.external_id,
        title=item.title,
        categories=item.categories,
        attributes=item.attributes,
        active=item.active,
        created_at=item.created_at,
        interactions=repository.interaction_count(session=session, item=item),
    )


def _user_read(session: Session, user: User) -> UserRead:
    return UserRead(
        user_id=user.external_id,
        attributes=user.attributes,
        created_at=user.created_at,
        interactions=repository.interaction_count(session=session, user=user),
    )


@router.post(
    "/items", response_model=ItemsResult, dependencies=[WriteAccess], responses=WRITE_RESPONSES, tags=["items"]
)
def upsert_items(body: ItemsUpsert, session: SessionDep, settings: SettingsDep, request: Request) -> ItemsResult:
    """Create or update items in one batch; fields left out keep their stored values. All or nothing."""
    if len(body.items) > settings.max_batch:
        message = f"{len(body.items)} items; at most {settings.max_batch} per call"
        raise InvalidInput([FieldError(field="items", message=message)])
    result = repository.upsert_items(session=session, items=[_upsert(it) for it in body.items])
    session.commit()
    _catalogue_changed(request)
    return ItemsResult(created=result.created, updated=result.updated)


def _catalogue_changed(request: Request) -> None:
    """This process's serving catalogue reads the write at once (others within DEEPREC_CATALOGUE_REFRESH_S)."""
    keeper = getattr(request.app.state, "catalogue", None)
    if keeper is not None:
        keeper.wake()


@router.put(
    "/items/{item_id}", response_model=ItemRead, dependencies=[WriteAccess], responses=WRITE_RESPONSES, tags=["items"]
)
def put_item(item_id: ItemIdPath, body: ItemUpdate, session: SessionDep, request: Request) -> ItemRead:
    """Create or update one item; fields left out keep their stored values."""
    repository.upsert_items(session=session, items=[_upsert(ItemIn(item_id=item_id, **body.model_dump()))])
    session.commit()
    _catalogue_changed(request)
    item = repository.get_item(session=session, item_id=item_id)
    assert item is not None
    session.refresh(item)
    return _item_read(session, item)


@router.get(
    "/items/{item_id}",
    response_model=ItemRead,
    dependencies=[ReadAccess],
    responses={**ERROR_RESPONSES, **NOT_FOUND},
    tags=["items"],
)
def get_item(item_id: ItemIdPath, session: SessionDep) -> ItemRead:
    """One item with its number of events."""
    item = repository.get_item(session=session, item_id=item_id)
    if item is None:
        raise HTTPException(status_code=404, detail=f"item {item_id!r} not found")
    return _item_read(session, item)


@router.put(
    "/users/{user_id}", response_model=UserRead, dependencies=[WriteAccess], responses=WRITE_RESPONSES, tags=["users"]
)
def put_user(user_id: UserIdPath, body: UserIn, session: SessionDep) -> UserRead:
    """Create a user or replace their attributes."""
    user = repository.upsert_user(session=session, user_id=user_id, attributes=body.attributes)
    session.commit()
    return _user_read(session, user)


@router.get(
    "/users/{user_id}",
    response_model=UserRead,
    dependencies=[ReadAccess],
    responses={**ERROR_RESPONSES, **NOT_FOUND},
    tags=["users"],
)
def get_user(user_id: UserIdPath, session: SessionDep) -> UserRead:
    """One user with their number of events."""
    user = repository.get_user(session=session, user_id=user_id)
    if user is None:
        raise HTTPException(status_code=404, detail=f"user {user_id!r} not found")
    return _user_read(session, user)


@router.delete(
    "/users/{user_id}",
    response_model=UserDeleted,
    dependencies=[WriteAccess],
    responses={**WRITE_RESPONSES, **NOT_FOUND},
    tags=["users"],
)
def delete_user(user_id: UserIdPath, session: SessionDep) -> UserDeleted:
    """Forget a user: the user and all their events are deleted (right to be forgotten)."""
    gone = repository.delete_user(session=session, user_id=user_id)
    if gone is None:
        raise HTTPException(status_code=404, detail=f"user {user_id!r} not found")
    session.commit()
    return UserDeleted(user_id=user_id, deleted_interactions=gone)

"""Repository: keyword-only reads and writes over user, item and interaction.

Writes run in the caller's session transaction; the caller commits, so one request is one
transaction. Ids in and out are the external strings; internal integer ids stay in db/.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pandas as pd
from sqlalchemy import Connection, CursorResult, Table, delete, func, select, tuple_
from sqlalchemy.orm import Session

from app.db.bulk import dialect_insert, ensure_ids, insert_interactions, lookup_ids
from app.db.frames import interactions_frame, items_frame, stream_interactions, users_frame
from app.db.tables import Interaction, Item, User

__all__ = [
    "EVENT_TYPES", "AddResult", "Counts", "InteractionPage", "InteractionRecord", "InvalidCursor", "ItemUpsert",
    "UpsertResult", "add_interactions", "counts", "delete_user", "get_item", "get_user",
    "interaction_count", "interactions_frame", "items_frame", "list_user_interactions",
    "stream_interactions", "upsert_items", "upsert_user", "upsert_users", "users_frame",
]  # fmt: skip

# What interaction.type may hold (the API and the importers check it); "rating" carries a value.
EVENT_TYPES = ("rating", "view", "click", "like", "add_to_cart", "purchase")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
USER = cast(Table, User.__table__)
ITEM = cast(Table, Item.__table__)


@dataclass(frozen=True)
class AddResult:
    inserted: int
    duplicates: int  # rows whose event_id was already stored (or repeated within the batch)


@dataclass(frozen=True)
class UpsertResult:
    created: int
    updated: int


@dataclass(frozen=True)
class ItemUpsert:
    """One item to create or update. A field left None keeps its stored value (or default)."""

    item_id: str
    title: str | None = None
    categories: list[str] | None = None
    attributes: dict[str, Any] | None = None
    active: bool | None = None


@dataclass(frozen=True)
class InteractionRecord:
    item_id: str
    type: str
    value: float | None
    occurred_at: datetime
    event_id: str | None


@dataclass(frozen=True)
class InteractionPage:
    interactions: list[InteractionRecord]
    next_cursor: str | None  # None on the last page


@dataclass(frozen=True)
class Counts:
    users: int
    items: int
    interactions: int


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not hand out."""


def add_interactions(*, session: Session, rows: pd.DataFrame | Mapping[str, Any]) -> AddResult:
    """Store events, creating unknown users and items; repeated event_ids are skipped.

    rows: one row per event with columns user_id (str), item_id (str), type (str),
    value (float, NaN or None when none), ts (Unix seconds, int or float) and optionally event_id
    (str or None); a frame, or a mapping of equal-length columns (lists or arrays), which spares a
    call of a few events the cost of building a frame. Bulk statements only: the work per row is
    the driver's, and per distinct user and item one dictionary look-up of its internal id.
    """
    n = len(rows["user_id"])
    if n == 0:
        return AddResult(inserted=0, duplicates=0)
    conn = session.connection()
    user_ids = _internal_ids(conn, USER, rows["user_id"], attributes={})  # [N]
    item_ids = _internal_ids(conn, ITEM, rows["item_id"], categories=[], attributes={})  # [N]
    occurred_us = np.round(_floats(rows["ts"]) * 1e6).astype(np.int64)  # [N]
    given = rows.get("event_id")
    events = np.asarray(given, dtype=object) if given is not None else np.full(n, None, dtype=object)  # [N]
    no_id = pd.isna(events)  # [N]
    # Each user's events together and in time order: the (user_id, occurred_at) index is then
    # written sequentially rather than at random, which makes large batches markedly faster.
    # The event_id tie-break gives re-sent events one global order, so concurrent re-sends
    # take their unique-index locks in the same order and cannot deadlock (events without one last).
    event_rank, _ = pd.factorize(events, sort=True)  # [N] rank of the id, -1 where there is none
    event_rank[no_id] = n
    order = np.lexsort((event_rank, occurred_us, user_ids))  # stable: the last key sorts first
    event_ids = None
    if not no_id.all():
        event_ids = np.where(no_id, np.array(None, dtype=object), events)[order].tolist()
    inserted = insert_interactions(
        conn,
        user_ids=user_ids[order],
        item_ids=item_ids[order],
        types=np.asarray(rows["type"], dtype=object)[order].tolist(),
        values=_floats(rows["value"])[order],
        occurred_us=occurred_us[order],
        event_ids=event_ids,
    )
    return AddResult(inserted=inserted, duplicates=n - inserted)


def _internal_ids(conn: Connection, table: Table, external: Any, **defaults: Any) -> np.ndarray:
    """[N] internal ids of the external ids in ``external``, creating the missing rows with ``defaults``:
    one look-up per distinct id."""
    codes, keys = pd.factorize(np.asarray(external, dtype=object))  # [N] codes, [K] distinct ids
    found = ensure_ids(conn, table, keys.tolist(), **defaults)
    return np.array([found[k] for k in keys.tolist()], dtype=np.int64)[codes]


def _floats(column: Any) -> np.ndarray:
    """A column as float64, NaN where it holds None, NaN or pandas' NA."""
    if isinstance(column, pd.Series):
        return column.to_numpy(np.float64, na_value=np.nan)
    return np.asarray(column, dtype=np.float64)


ITEM_DEFAULTS: dict[str, Any] = {"title": None, "categories": [], "attributes": {}, "active": True}


def upsert_items(*, session: Session, items: list[ItemUpsert]) -> UpsertResult:
    """Create or update items. Within one call the last entry for an item_id wins."""
    latest = {it.item_id: it for it in items}
    conn = session.connection()
    existing = lookup_ids(conn, ITEM, list(latest))
    # One executemany per set of given fields: the UPDATE touches only the fields a row sets.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for it in latest.values():
        given = {f.name: getattr(it, f.name) for f in fields(it) if f.name != "item_id"}
        given = {k: v for k, v in given.items() if v is not None}
        groups.setdefault(tuple(sorted(given)), []).append({"external_id": it.item_id, **ITEM_DEFAULTS, **given})
    for names, params in groups.items():
        stmt = dialect_insert(conn, ITEM)
        if names:
            stmt = stmt.on_conflict_do_update(index_elements=["external_id"], set_={k: stmt.excluded[k] for k in names})
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=["external_id"])
        conn.execute(stmt, params)
    return UpsertResult(created=len(latest) - len(existing), updated=len(existing))


def upsert_user(*, session: Session, user_id: str, attributes: dict[str, Any] | None = None) -> User:
    """Create the user or replace its attributes (None keeps them); returns the stored row."""
    conn = session.connection()
    stmt = dialect_insert(conn, USER)
    row = {"external_id": user_id, "attributes": attributes if attributes is not None else {}}
    if attributes is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["external_id"])
    else:
        stmt = stmt.on_conflict_do_update(index_elements=["external_id"], set_={"attributes": stmt.excluded.attributes})
    conn.execute(stmt, row)
    user = get_user(session=session, user_id=user_id)
    assert user is not None
    session.refresh(user)  # the identity map may hold the row from before the upsert
    return user


def upsert_users(*, session: Session, users: list[tuple[str, dict[str, Any]]]) -> UpsertResult:
    """Create users or replace their attributes, in bulk: (user_id, attributes) pairs, last one wins."""
    latest = dict(users)
    conn = session.connection()
    existing = lookup_ids(conn, USER, list(latest))
    stmt = dialect_insert(conn, USER)
    stmt = stmt.on_conflict_do_update(index_elements=["external_id"], set_={"attributes": stmt.excluded.attributes})
    if latest:
        conn.execute(stmt, [{"external_id": k, "attributes": v} for k, v in latest.items()])
    return UpsertResult(created=len(latest) - len(existing), updated=len(existing))


def get_user(*, session: Session, user_id: str) -> User | None:
    return session.scalar(select(User).where(User.external_id == user_id))


def get_item(*, session: Session, item_id: str) -> Item | None:
    return session.scalar(select(Item).where(Item.external_id == item_id))


def interaction_count(*, session: Session, user: User | None = None, item: Item | None = None) -> int:
    """Events of one user, of one item, or of everybody."""
    stmt = select(func.count()).select_from(Interaction)
    if user is not None:
        stmt = stmt.where(Interaction.user_id == user.id)
    if item is not None:
        stmt = stmt.where(Interaction.item_id == item.id)
    return session.scalar(stmt) or 0


def list_user_interactions(
    *, session: Session, user_id: str, limit: int = 50, cursor: str | None = None
) -> InteractionPage | None:
    """A page of the user's events, newest first; None when the user is unknown."""
    user = get_user(session=session, user_id=user_id)
    if user is None:
        return None
    ev = Interaction
    stmt = (
        select(Item.external_id, ev.type, ev.value, ev.occurred_at, ev.event_id, ev.id)
        .join(Item, Item.id == ev.item_id)
        .where(ev.user_id == user.id)
    )
    if cursor is not None:
        at, last_id = decode_cursor(cursor)
        stmt = stmt.where(tuple_(ev.occurred_at, ev.id) < tuple_(at, last_id))
    rows = session.execute(stmt.order_by(ev.occurred_at.desc(), ev.id.desc()).limit(limit + 1)).all()
    page = [InteractionRecord(*row[:5]) for row in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1].occurred_at, rows[limit - 1].id) if len(rows) > limit else None
    return InteractionPage(interactions=page, next_cursor=next_cursor)


def encode_cursor(occurred_at: datetime, row_id: int) -> str:
    micros = (occurred_at - EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}.{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, row_id = (int(part) for part in raw.split("."))
        return EPOCH + timedelta(microseconds=micros), row_id
    except (ValueError, UnicodeDecodeError, binascii.Error, OverflowError) as exc:
        raise InvalidCursor(f"invalid cursor {cursor!r}") from exc


def delete_user(*, session: Session, user_id: str) -> int | None:
    """Forget the user and every event of theirs; returns the number of events, None if unknown."""
    user = get_user(session=session, user_id=user_id)
    if user is None:
        return None
    # Explicit rather than relying on ON DELETE CASCADE alone, so the count can be reported.
    no_sync = {"synchronize_session": False}
    result = session.execute(delete(Interaction).where(Interaction.user_id == user.id), execution_options=no_sync)
    gone = cast(CursorResult[Any], result).rowcount
    session.execute(delete(User).where(User.id == user.id), execution_options=no_sync)
    session.expunge(user)
    return gone


def counts(*, session: Session) -> Counts:
    def n(model: type[User] | type[Item] | type[Interaction]) -> int:
        return session.scalar(select(func.count()).select_from(model)) or 0

    return Counts(users=n(User), items=n(Item), interactions=n(Interaction))

"""Pages of items and users in insertion order: searched by text, items also by category or a list of ids.

Keyset paging on the internal id: a page costs the rows it reads, however deep it is. A text search
(case-insensitive substring) or a category filter without an index reads rows in id order until a page
is full, so a rare term scans the table: see BENCHMARKS.md "Console read endpoints".
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import ColumnElement, Select, exists, func, literal_column, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.db.repository import InvalidCursor
from app.db.tables import Item, User

Row = TypeVar("Row", Item, User)
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: list[Row]
    next_cursor: str | None  # None on the last page


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = raw.partition(":")
        last_id = int(number)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidCursor(f"invalid cursor {cursor!r}") from exc
    if prefix != "id" or not 0 <= last_id <= MAX_ID:
        raise InvalidCursor(f"invalid cursor {cursor!r}")
    return last_id


def _page(
    session: Session, stmt: Select[Row], id_col: InstrumentedAttribute[int], limit: int, cursor: str | None
) -> Page[Row]:
    if cursor is not None:
        stmt = stmt.where(id_col > decode_cursor(cursor))
    rows = list(session.scalars(stmt.order_by(id_col).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more else None)


def has_category(session: Session, category: str) -> ColumnElement[bool]:
    """item.categories (a JSON list) holds ``category``: JSONB containment on PostgreSQL, json_each on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return type_coerce(Item.categories, JSONB).contains([category])
    each = func.json_each(Item.categories).table_valued("value")
    return exists(select(literal_column("1")).select_from(each).where(each.c.value == category))


def list_items(
    *,
    session: Session,
    q: str | None = None,
    category: str | None = None,
    ids: Sequence[str] | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Item]:
    """Items whose title or id contains ``q`` (any case), in ``category``, among ``ids``; oldest first."""
    stmt = select(Item)
    if q:
        stmt = stmt.where(or_(Item.title.icontains(q, autoescape=True), Item.external_id.icontains(q, autoescape=True)))
    if category:
        stmt = stmt.where(has_category(session, category))
    if ids is not None:
        stmt = stmt.where(Item.external_id.in_(list(ids)))
    return _page(session, stmt, Item.id, limit, cursor)


def list_users(*, session: Session, q: str | None = None, limit: int = 50, cursor: str | None = None) -> Page[User]:
    """Users whose id contains ``q`` (any case); oldest first."""
    stmt = select(User)
    if q:
        stmt = stmt.where(User.external_id.icontains(q, autoescape=True))
    return _page(session, stmt, User.id, limit, cursor)

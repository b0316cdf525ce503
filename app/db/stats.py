"""Aggregates over the whole database for the console: counts, the span of the events, events per day.

Three statements, each one aggregate in the database (no row reaches Python): the counts, then the
events per UTC day of the last ``days`` days up to the newest event. The interaction table is read twice
in full (no index has occurred_at first): about a second per 10^7 events, see BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
from sqlalchemy import Date, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.db.tables import Interaction, Item, User


@dataclass(frozen=True)
class DataStats:
    users: int
    items: int
    active_items: int
    interactions: int
    first_event_at: datetime | None
    last_event_at: datetime | None
    days: list[date]  # consecutive UTC days ending at the newest event's
    events: list[int]  # events on each of those days


def _day(session: Session) -> ColumnElement[object]:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", Interaction.occurred_at), Date)
    return func.date(Interaction.occurred_at)  # SQLite stores the UTC wall clock as text


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def data_stats(*, session: Session, days: int) -> DataStats:
    """Counts of users, items (and active ones) and events, and events per day over ``days`` days."""
    count = func.count()
    users, items, active = session.execute(
        select(
            select(count).select_from(User).scalar_subquery(),
            select(count).select_from(Item).scalar_subquery(),
            select(count).select_from(Item).where(Item.active).scalar_subquery(),
        )
    ).one()
    n, first, last = session.execute(
        select(count, func.min(Interaction.occurred_at), func.max(Interaction.occurred_at))
    ).one()
    if last is None:
        return DataStats(users, items, active, 0, None, None, [], [])
    end = last.astimezone(UTC).date()
    start = end - timedelta(days=days - 1)
    since = datetime(start.year, start.month, start.day, tzinfo=UTC)
    day = _day(session).label("day")
    rows = session.execute(
        select(day, count).where(Interaction.occurred_at >= since).group_by(day)
    ).all()  # one row per day with events: at most ``days``
    offsets = np.array([(_as_date(d) - start).days for d, _ in rows], dtype=np.int64)
    per_day = np.zeros(days, dtype=np.int64)
    keep = (offsets >= 0) & (offsets < days)
    np.add.at(per_day, offsets[keep], np.array([c for _, c in rows], dtype=np.int64)[keep])
    calendar = [start + timedelta(days=i) for i in range(days)]
    return DataStats(users, items, active, n, first, last, calendar, per_day.tolist())

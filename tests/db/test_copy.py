"""Batches written with COPY store what the one-statement INSERT stores (PostgreSQL; SQLite has one path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import bulk
from app.db import repository as repo
from app.db.tables import Interaction, Item, User


def batch(n: int = 40) -> pd.DataFrame:
    """Non-ASCII ids, NaN values, event ids partly missing and one repeated, equal times."""
    k = np.arange(n)
    return pd.DataFrame(
        {
            "user_id": [["zoë", "u1", "ユーザー"][x % 3] for x in k],
            "item_id": [f"film-{x % 7}-é" for x in k],
            "type": np.where(k % 3 == 0, "view", "rating"),
            "value": np.where(k % 3 == 0, np.nan, 0.5 + (k % 10) / 2),
            "ts": 1_700_000_000 + (k // 4) * 0.25,
            "event_id": [None if x % 5 == 0 else f"ev-{min(x, 30)}" for x in k],  # ev-30 repeats
        }
    )


def stored(session: Session) -> list[tuple[object, ...]]:
    ev = Interaction
    stmt = (
        select(ev.id, User.external_id, Item.external_id, ev.type, ev.value, ev.occurred_at, ev.event_id)
        .join(User, User.id == ev.user_id)
        .join(Item, Item.id == ev.item_id)
        .order_by(ev.id)
    )
    return [tuple(r) for r in session.execute(stmt).all()]


@pytest.mark.parametrize("with_event_ids", [True, False])
def test_copy_stores_what_the_insert_stores(
    session: Session, monkeypatch: pytest.MonkeyPatch, with_event_ids: bool
) -> None:
    rows = batch() if with_event_ids else batch().drop(columns="event_id")
    monkeypatch.setattr(bulk, "COPY_MIN_ROWS", 10**9)
    first = repo.add_interactions(session=session, rows=rows)
    expected = stored(session)
    session.rollback()
    monkeypatch.setattr(bulk, "COPY_MIN_ROWS", 1)
    copied = repo.add_interactions(session=session, rows=rows)
    again = repo.add_interactions(session=session, rows=rows)  # in the same transaction: the stage is emptied
    got = stored(session)
    session.commit()
    assert (copied.inserted, copied.duplicates) == (first.inserted, first.duplicates)
    if with_event_ids:
        assert copied.duplicates == 7 and again.inserted == 8  # ev-30 x8 stored once; again: the 8 without an id
    got = got[: len(expected)]  # the rows of the first write
    offset = got[0][0] - expected[0][0]  # ids of the rolled-back attempt are not reused on PostgreSQL
    assert [(r[0] - offset, *r[1:]) for r in got] == expected

"""The training snapshot read as integer codes equals the one built from frames, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import repository as repo
from app.db.frames import interactions_frame, items_frame
from app.db.snapshot import read_snapshot
from app.jobs.runner import load_snapshot
from app.jobs.snapshot import snapshot_data
from app.recsys.data import InteractionData


def stored_events(session: Session) -> None:
    """Repeats of a (user, item) pair, ties in time, implicit events, an item without events, mixed id lengths."""
    rng = np.random.default_rng(5)
    n = 400
    users = rng.integers(0, 25, n)
    items = rng.integers(0, 40, n)
    rated = rng.random(n) < 0.7
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in users],
            "item_id": [f"item-{i}" for i in items],
            "type": np.where(rated, "rating", "view"),
            "value": np.where(rated, rng.integers(1, 11, n) / 2, np.nan),
            "ts": 1_700_000_000 + rng.integers(0, 50, n) * 60 + rng.random(n).round(3),  # ties and fractions
        }
    )
    repo.add_interactions(session=session, rows=frame.iloc[:250])
    repo.add_interactions(session=session, rows=frame.iloc[250:])
    cats = [["A"], ["B", "C"]]
    upserts = [
        repo.ItemUpsert(item_id=f"item-{i}", categories=cats[i % 2], attributes={"year": 1990 + i})
        for i in range(0, 45, 2)
    ]
    repo.upsert_items(session=session, items=upserts)  # item-42 and item-44 have no events
    session.commit()


def test_snapshot_equals_the_frames_build(session: Session) -> None:
    stored_events(session)
    expected = InteractionData.from_frames(interactions_frame(session=session), items_frame(session=session))
    got, max_id = snapshot_data(session)
    assert max_id == session.scalar(text("SELECT max(id) FROM interaction"))
    for name in ("user_ids", "item_ids", "users", "items", "ts", "indptr", "item_features"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    np.testing.assert_array_equal(got.ratings, expected.ratings)  # NaN where implicit, in the same places
    assert got.feature_schema == expected.feature_schema
    assert "item-44" in got.item_ids and got.users.dtype == np.int64 and got.ratings.dtype == np.float32
    assert load_snapshot(session)[0].stats() == expected.stats()


def test_snapshot_reads_every_event_once_in_id_order(session: Session) -> None:
    stored_events(session)
    snap = read_snapshot(session)
    rows = session.execute(text("SELECT count(*), count(value) FROM interaction")).one()
    assert len(snap) == rows[0] and int((~np.isnan(snap.values)).sum()) == rows[1]
    frame = interactions_frame(session=session).sort_index()  # time order; the snapshot is in id order
    by_id = repo.stream_interactions(session=session)
    streamed = pd.concat(list(by_id), ignore_index=True)
    assert snap.user_ids[snap.users].tolist() == streamed["user_id"].tolist()
    assert snap.item_ids[snap.items].tolist() == streamed["item_id"].tolist()
    assert snap.ts.tolist() == streamed["ts"].tolist() and len(frame) == len(snap)


def test_empty_database_snapshot(session: Session) -> None:
    snap = read_snapshot(session)
    assert len(snap) == 0 and snap.max_id is None and len(snap.user_ids) == 0

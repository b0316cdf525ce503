"""Repository on SQLite and PostgreSQL: bulk writes, idempotency, upserts, paging, deletion, frames."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import repository as repo
from app.db.tables import Interaction, User


def events(n: int, *, users: int = 3, items: int = 4, with_ids: bool = False, t0: int = 1_700_000_000) -> pd.DataFrame:
    k = np.arange(n)
    return pd.DataFrame(
        {
            "user_id": [f"u{x}" for x in k % users],
            "item_id": [f"i{x}" for x in k % items],
            "type": np.where(k % 2 == 0, "rating", "view"),
            "value": np.where(k % 2 == 0, 1.0 + (k % 5), np.nan),
            "ts": t0 + k * 60,
            "event_id": [f"e{x}" for x in k] if with_ids else [None] * n,
        }
    )


def test_add_creates_users_items_and_frames_round_trip(session: Session) -> None:
    result = repo.add_interactions(session=session, rows=events(10))
    session.commit()
    assert (result.inserted, result.duplicates) == (10, 0)
    assert repo.counts(session=session) == repo.Counts(users=3, items=4, interactions=10)
    frame = repo.interactions_frame(session=session)
    assert list(frame.columns) == ["user_id", "item_id", "type", "value", "ts"]
    assert frame["ts"].dtype == np.int64 and frame["value"].dtype == np.float64
    expected = events(10).drop(columns="event_id")
    pd.testing.assert_frame_equal(frame, expected.astype(frame.dtypes.to_dict()), check_dtype=False)
    assert frame["value"].isna().sum() == 5


def test_event_ids_make_resends_idempotent(session: Session) -> None:
    rows = events(6, with_ids=True)
    assert repo.add_interactions(session=session, rows=rows) == repo.AddResult(inserted=6, duplicates=0)
    session.commit()
    again = pd.concat([rows, events(8, with_ids=True).iloc[6:]], ignore_index=True)
    assert repo.add_interactions(session=session, rows=again) == repo.AddResult(inserted=2, duplicates=6)
    repeated = pd.concat([events(1, with_ids=True).assign(event_id="x")] * 3, ignore_index=True)
    assert repo.add_interactions(session=session, rows=repeated) == repo.AddResult(inserted=1, duplicates=2)
    session.commit()
    assert repo.counts(session=session).interactions == 9


def test_rows_without_event_id_are_always_stored(session: Session) -> None:
    repo.add_interactions(session=session, rows=events(4))
    repo.add_interactions(session=session, rows=events(4))
    mixed = events(4, with_ids=True)
    mixed.loc[[0, 2], "event_id"] = None
    assert repo.add_interactions(session=session, rows=mixed) == repo.AddResult(inserted=4, duplicates=0)
    assert repo.add_interactions(session=session, rows=mixed) == repo.AddResult(inserted=2, duplicates=2)
    session.commit()
    assert repo.counts(session=session).interactions == 14


def test_columns_store_as_a_frame_does_in_write_order(session: Session) -> None:
    """A mapping of lists (what one API call passes) and a frame store the same rows, each user's events
    written together in time order, ties by event_id with the events without one last."""
    t = 1_700_000_000
    columns = {
        "user_id": ["u2", "u1", "u2", "u2", "u1", "u2"],
        "item_id": ["i1", "i2", "i3", "i1", "i2", "i2"],
        "type": ["view", "rating", "click", "view", "view", "like"],
        "value": [None, 4.0, None, None, float("nan"), None],
        "ts": [t + 5, t + 1, t, t + 5, t, t + 5],
        "event_id": ["b", "c", None, None, None, "a"],
    }
    assert repo.add_interactions(session=session, rows=columns) == repo.AddResult(inserted=6, duplicates=0)
    frame = pd.DataFrame({**columns, "event_id": [e and f"f-{e}" for e in columns["event_id"]]})
    assert repo.add_interactions(session=session, rows=frame) == repo.AddResult(inserted=6, duplicates=0)
    session.commit()
    stored = session.execute(
        select(User.external_id, Interaction.type, Interaction.value, Interaction.event_id)
        .join(User, User.id == Interaction.user_id)
        .order_by(Interaction.id)
    ).all()
    # u1 was created first (missing ids are created in sorted order), so its events come first
    written = [("u1", "view", None, None), ("u1", "rating", 4.0, "c"), ("u2", "click", None, None),
               ("u2", "like", None, "a"), ("u2", "view", None, "b"), ("u2", "view", None, None)]  # fmt: skip
    assert [tuple(r) for r in stored[:6]] == written
    assert [tuple(r) for r in stored[6:]] == [(u, ty, v, e and f"f-{e}") for u, ty, v, e in written]
    assert repo.add_interactions(session=session, rows={k: v[:0] for k, v in columns.items()}) == repo.AddResult(0, 0)


def test_rollback_stores_nothing(session: Session) -> None:
    repo.add_interactions(session=session, rows=events(5, with_ids=True))
    session.rollback()
    assert repo.counts(session=session) == repo.Counts(users=0, items=0, interactions=0)


def test_upsert_items_updates_only_given_fields(session: Session) -> None:
    first = [
        repo.ItemUpsert("a", title="A", categories=["Drama"], attributes={"year": 1999}),
        repo.ItemUpsert("b", title="B"),
    ]
    assert repo.upsert_items(session=session, items=first) == repo.UpsertResult(created=2, updated=0)
    second = [
        repo.ItemUpsert("a", active=False),
        repo.ItemUpsert("b", categories=["Comedy", "Romance"]),
        repo.ItemUpsert("c"),
        repo.ItemUpsert("c", title="C last wins"),
    ]
    assert repo.upsert_items(session=session, items=second) == repo.UpsertResult(created=1, updated=2)
    session.commit()
    a, b, c = (repo.get_item(session=session, item_id=x) for x in "abc")
    assert a is not None and (a.title, a.categories, a.attributes, a.active) == ("A", ["Drama"], {"year": 1999}, False)
    assert b is not None and (b.title, b.categories, b.active) == ("B", ["Comedy", "Romance"], True)
    assert c is not None and c.title == "C last wins" and c.created_at.tzinfo is not None
    frame = repo.items_frame(session=session)
    assert frame["item_id"].tolist() == ["a", "b", "c"]
    assert frame.loc[1, "categories"] == ["Comedy", "Romance"] and frame.loc[0, "attributes"] == {"year": 1999}
    assert frame["active"].tolist() == [False, True, True] and frame["created_at_ts"].dtype == np.int64


def test_upsert_user_replaces_or_keeps_attributes(session: Session) -> None:
    user = repo.upsert_user(session=session, user_id="u1", attributes={"age": 30})
    assert user.attributes == {"age": 30}
    assert repo.upsert_user(session=session, user_id="u1").attributes == {"age": 30}
    assert repo.upsert_user(session=session, user_id="u1", attributes={"country": "NZ"}).attributes == {"country": "NZ"}
    session.commit()
    frame = repo.users_frame(session=session)
    assert frame["user_id"].tolist() == ["u1"] and frame.loc[0, "attributes"] == {"country": "NZ"}
    assert repo.get_user(session=session, user_id="nobody") is None


def test_pagination_is_newest_first_and_complete(session: Session) -> None:
    rows = events(23, users=1, items=5)
    rows.loc[10:12, "ts"] = rows.loc[10, "ts"]  # ties on the timestamp are ordered by insertion
    repo.add_interactions(session=session, rows=rows)
    session.commit()
    seen, cursor, pages = [], None, 0
    while True:
        page = repo.list_user_interactions(session=session, user_id="u0", limit=5, cursor=cursor)
        assert page is not None
        seen += page.interactions
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 5 and len(seen) == 23
    stamps = [r.occurred_at for r in seen]
    assert stamps == sorted(stamps, reverse=True) and all(s.tzinfo is not None for s in stamps)
    assert [r.item_id for r in seen] == [f"i{k % 5}" for k in reversed(range(23))]
    assert seen[0].value == 1.0 + (22 % 5) and seen[1].value is None  # k=22 is a rating, k=21 a view
    assert repo.list_user_interactions(session=session, user_id="ghost", limit=5) is None
    with pytest.raises(repo.InvalidCursor):
        repo.list_user_interactions(session=session, user_id="u0", limit=5, cursor="not-a-cursor!")


def test_microsecond_timestamps_survive(session: Session) -> None:
    rows = events(1).assign(ts=1_700_000_000.123456)
    repo.add_interactions(session=session, rows=rows)
    session.commit()
    page = repo.list_user_interactions(session=session, user_id="u0")
    assert page is not None
    assert page.interactions[0].occurred_at == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert repo.interactions_frame(session=session)["ts"].tolist() == [1_700_000_000]


def test_delete_user_removes_history_only_of_that_user(session: Session) -> None:
    repo.add_interactions(session=session, rows=events(12, users=3))
    session.commit()
    assert repo.delete_user(session=session, user_id="u1") == 4
    session.commit()
    assert repo.get_user(session=session, user_id="u1") is None
    assert repo.counts(session=session) == repo.Counts(users=2, items=4, interactions=8)
    assert set(repo.interactions_frame(session=session)["user_id"]) == {"u0", "u2"}
    assert repo.delete_user(session=session, user_id="u1") is None


def test_database_cascades_user_deletion(session: Session) -> None:
    repo.add_interactions(session=session, rows=events(6, users=2))
    session.commit()
    session.execute(delete(User).where(User.external_id == "u0"))  # no explicit interaction delete
    session.commit()
    owners = session.scalars(select(Interaction.user_id).distinct()).all()
    assert len(owners) == 1 and repo.counts(session=session).interactions == 3


def test_stream_is_chunked_and_matches_the_frame(session: Session) -> None:
    repo.add_interactions(session=session, rows=events(10))
    session.commit()
    chunks = list(repo.stream_interactions(session=session, chunk_size=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    streamed = pd.concat(chunks, ignore_index=True).sort_values("ts", kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(streamed, repo.interactions_frame(session=session))


def test_empty_database_frames(session: Session) -> None:
    frame = repo.interactions_frame(session=session)
    assert frame.empty and list(frame.columns) == ["user_id", "item_id", "type", "value", "ts"]
    assert list(repo.stream_interactions(session=session, chunk_size=10)) == []
    assert repo.items_frame(session=session).empty and repo.users_frame(session=session).empty
    assert repo.interaction_count(session=session) == 0


def test_concurrent_writers_overlapping_users_items_and_event_ids(session: Session) -> None:
    """Writers creating the same new users and items in different orders neither fail nor deadlock."""
    sessions = sessionmaker(bind=session.get_bind(), expire_on_commit=False)
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(5):
                k = rng.permutation(40)
                rows = pd.DataFrame(
                    {
                        "user_id": [f"u{x % 13}" for x in k],
                        "item_id": [f"i{x % 17}" for x in k],
                        "type": "view",
                        "value": np.nan,
                        "ts": 1_700_000_000 + k,
                        "event_id": [f"e{x}" for x in k],
                    }
                )
                with sessions() as s:
                    repo.add_interactions(session=s, rows=rows)
                    s.commit()
        except BaseException as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert repo.counts(session=session) == repo.Counts(users=13, items=17, interactions=40)

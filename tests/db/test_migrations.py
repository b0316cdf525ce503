"""Migrations on SQLite and PostgreSQL: upgrade, no drift from the ORM, downgrade, concurrent upgrades."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.config import Settings
from app.db.base import Base
from app.db.migrations import downgrade, head_revisions, is_at_head, upgrade
from app.db.session import make_engine

TABLES = {"user", "item", "interaction"}


def _settings(url: str) -> Settings:
    return Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]


def test_upgrade_matches_the_orm_and_downgrades(empty_db_url: str) -> None:
    settings = _settings(empty_db_url)
    engine = make_engine(settings)
    try:
        assert not is_at_head(engine)
        upgrade(settings)
        upgrade(settings)  # a second run is a no-op
        assert is_at_head(engine) and len(head_revisions()) == 1  # one linear history
        with engine.connect() as conn:
            assert TABLES <= set(inspect(conn).get_table_names())
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("interaction")}
            assert {"ix_interaction_user_id_occurred_at", "ix_interaction_item_id"} <= indexes
        downgrade(settings, "base")
        with engine.connect() as conn:
            assert not TABLES & set(inspect(conn).get_table_names())
        upgrade(settings)
        assert is_at_head(engine)
    finally:
        engine.dispose()


def test_concurrent_upgrades_serialise(empty_db_url: str) -> None:
    settings = _settings(empty_db_url)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(settings)
        except BaseException as exc:  # noqa: BLE001  (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = make_engine(settings)
    assert is_at_head(engine)
    engine.dispose()


def test_sqlite_file_uses_wal(tmp_path: Path) -> None:
    settings = _settings(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    upgrade(settings)
    engine = make_engine(settings)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()


def test_first_connections_to_a_new_file_never_fail(tmp_path: Path) -> None:
    """Several processes starting on a fresh SQLite file all switch it to WAL at once: each one waits its turn.

    SQLite answers the journal-mode switch with "database is locked" at once, bypassing the busy timeout,
    while another connection is switching; connecting must retry rather than fail.
    """
    errors: list[BaseException] = []
    for round_ in range(15):
        engines = [make_engine(_settings(f"sqlite:///{tmp_path / f'new{round_}.db'}")) for _ in range(4)]
        barrier = threading.Barrier(len(engines))

        def connect(engine, barrier: threading.Barrier) -> None:
            try:
                barrier.wait()
                with engine.begin() as conn:
                    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                    conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            except BaseException as exc:  # noqa: BLE001  (collected and asserted below)
                errors.append(exc)

        threads = [threading.Thread(target=connect, args=(e, barrier)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for e in engines:
            e.dispose()
    assert errors == []


def test_item_writes_are_counted_by_triggers(session, db_url: str) -> None:
    """catalogue_rewrite (0004, 0005): every item changed or deleted, by DeepRec or raw SQL, bumps the count
    (SQLite: each row; PostgreSQL: each statement); a new item or a new event does not (both found by id)."""
    from sqlalchemy import text

    from app.db.repository import ItemUpsert, add_interactions, upsert_items

    def count() -> int:
        return int(session.execute(text("SELECT count FROM catalogue_rewrite WHERE id = 1")).scalar_one())

    start = count()
    upsert_items(session=session, items=[ItemUpsert("a", "A", ["X"], {})])  # created
    session.commit()
    assert count() == start
    upsert_items(session=session, items=[ItemUpsert("a", active=False)])  # changed
    session.commit()
    after_upserts = count()
    event = {"user_id": "u", "item_id": "a", "type": "view", "value": float("nan"), "ts": 1_700_000_000}
    add_interactions(session=session, rows=pd.DataFrame([event]))
    session.commit()
    assert count() == after_upserts  # events are followed by id, not counted
    session.execute(text("UPDATE item SET title = 'B' WHERE external_id = 'a'"))
    session.execute(text("DELETE FROM item WHERE external_id = 'a'"))
    session.commit()
    assert after_upserts == start + 1 and count() == after_upserts + 2


def test_rewritten_events_are_counted_by_triggers(session, db_url: str) -> None:
    """history_rewrite (0003, 0005): an event deleted or moved bumps the count; new events and new users do not."""
    from sqlalchemy import text

    from app.db.repository import add_interactions

    def count() -> int:
        return int(session.execute(text("SELECT count FROM history_rewrite WHERE id = 1")).scalar_one())

    start = count()
    events = [{"user_id": u, "item_id": "a", "type": "view", "value": float("nan"), "ts": 1_700_000_000 + k}
              for k, u in enumerate(("u", "v", "w"))]  # fmt: skip
    add_interactions(session=session, rows=pd.DataFrame(events))
    session.commit()
    assert count() == start  # new users and events: followed by id, not counted
    session.execute(
        text("UPDATE interaction SET occurred_at = occurred_at WHERE id = (SELECT min(id) FROM interaction)")
    )
    session.commit()
    moved = count()
    assert moved > start
    session.execute(text("DELETE FROM interaction WHERE id = (SELECT max(id) FROM interaction)"))
    session.commit()
    assert count() > moved

"""The bulk load paths store exactly what the row-by-row paths store, on SQLite and PostgreSQL.

`deeprec demo-data` writes items and users from JSON-text columns and events as integer codes, and
PostgreSQL writes batches with COPY; the reference is ``Loader.items / users / events`` on the frames
of the same generator, with COPY off. Both must give the same ids, rows, order and change counts.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db import bulk
from app.db.session import make_sessionmaker
from app.ingest import demo
from app.ingest.demo import DemoConfig, generate, load_demo
from app.ingest.loader import Loader
from tests.ingest.support import dump, reset

CFG = DemoConfig(users=60, items=300, events=1_500, seed=3, end_ts=1_700_000_000)


def row_by_row(settings: Settings, engine: Engine, cfg: DemoConfig, chunk_size: int) -> None:
    items, users, chunks = generate(cfg, chunk_size=chunk_size)
    rows = Loader(make_sessionmaker(engine))
    rows.items(items)
    rows.users(users)
    rows.events(chunks)


def test_demo_bulk_load_equals_the_row_by_row_load(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "COPY_MIN_ROWS", 10**9)  # the reference: no COPY
    row_by_row(settings, engine, CFG, chunk_size=400)
    row_by_row(settings, engine, CFG, chunk_size=400)  # again: items and users updated, events appended
    expected = dump(engine)
    reset(engine)
    monkeypatch.setattr(bulk, "COPY_MIN_ROWS", 1)  # every batch through COPY on PostgreSQL
    monkeypatch.setattr(demo, "UPSERT_CHUNK", 7)  # items and users in several statements
    sessions = make_sessionmaker(engine)
    first = load_demo(CFG, settings, sessions, chunk_size=400)
    second = load_demo(CFG, settings, sessions, chunk_size=400)
    got = dump(engine)
    assert len(got["interaction"]) == 2 * first.events == first.inserted + second.inserted > 0.95 * 2 * CFG.events
    assert (first.users, first.items, second.users, second.items) == (CFG.users, CFG.items, 0, 0)
    for table in ("user", "item", "interaction"):
        assert got[table] == expected[table], table
    # The second load updated every item: both paths moved the catalogue's count (SQLite counts rows).
    assert got["catalogue_rewrite"] > 0 and expected["catalogue_rewrite"] > 0
    if engine.dialect.name == "sqlite":
        assert got["catalogue_rewrite"] == expected["catalogue_rewrite"] == CFG.items
    assert got["history_rewrite"] == expected["history_rewrite"] == 0  # only new events: no history rewritten

"""Engines and sessions: SQLite in WAL mode with a busy timeout, PostgreSQL through psycopg 3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(settings: Settings, *, migrating: bool = False) -> Engine:
    """An engine for settings.database_url.

    migrating=True is for Alembic on SQLite: foreign keys are off (batch migrations recreate
    tables and must not cascade) and every transaction starts with BEGIN IMMEDIATE, so DDL is
    transactional and two processes migrating at once run one after the other.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    connect_args: dict[str, Any] = {"check_same_thread": False}
    if migrating:
        connect_args["isolation_level"] = None  # we emit BEGIN ourselves, below
    engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe with WAL
        cur.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages: bulk inserts touch several indexes
        cur.execute(f"PRAGMA foreign_keys={'OFF' if migrating else 'ON'}")
        cur.close()

    if migrating:

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: routes read attributes of rows after committing them.
    return sessionmaker(bind=engine, expire_on_commit=False)

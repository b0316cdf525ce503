"""Engines and sessions: SQLite in WAL mode with a busy timeout, PostgreSQL through psycopg 3."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5  # an unreachable server fails a request in seconds (then 503), not minutes


def _enable_wal(cur: Any) -> None:
    """PRAGMA journal_mode=WAL, waiting for other connections as the busy timeout would.

    Switching a new database file to WAL needs it to itself for a moment, and SQLite answers
    "database is locked" at once, without its busy handler, when another connection is switching it
    or migrating it at the same time (several processes starting on a fresh file). Retry until the
    file is in WAL mode, which another connection may well have done meanwhile.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(delay)
        delay = min(2 * delay, 0.25)


def make_engine(settings: Settings, *, migrating: bool = False) -> Engine:
    """An engine for settings.database_url.

    migrating=True is for Alembic on SQLite: foreign keys are off (batch migrations recreate
    tables and must not cascade) and every transaction starts with BEGIN IMMEDIATE, so DDL is
    transactional and two processes migrating at once run one after the other.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        # pre-ping: a pooled connection the server dropped (restart, failover) is replaced, not handed out
        pg_args = {} if "connect_timeout" in url.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        return create_engine(url, pool_pre_ping=True, connect_args=pg_args)

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    synchronous = {"NORMAL": "NORMAL", "FULL": "FULL"}[settings.sqlite_synchronous]
    connect_args: dict[str, Any] = {"check_same_thread": False}
    if migrating:
        connect_args["isolation_level"] = None  # we emit BEGIN ourselves, below
    engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cur)
        # NORMAL: a commit is durable at the next checkpoint, so a power loss (not a crash) can lose the
        # last ones; FULL syncs every commit. README "Security and operations".
        cur.execute(f"PRAGMA synchronous={synchronous}")
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

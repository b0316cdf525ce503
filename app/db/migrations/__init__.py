"""Alembic migrations, applied programmatically by `deeprec db upgrade` and at service start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from app.config import Settings
from app.db.session import make_engine

HERE = Path(__file__).resolve().parent
PG_LOCK_KEY = 0x44656550  # pg_advisory_xact_lock key that serialises concurrent migrators


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.attributes["connection"] = connection
    return cfg


def head_revisions() -> tuple[str, ...]:
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def current_revisions(connection: Connection) -> tuple[str, ...]:
    return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def is_at_head(engine: Engine) -> bool:
    with engine.connect() as conn:
        return current_revisions(conn) == head_revisions()


def take_lock(conn: Connection) -> None:
    """Serialise migrators: SQLite already holds BEGIN IMMEDIATE; PostgreSQL takes an advisory lock."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_KEY})")


def check_foreign_keys(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":  # keys were off while migrating; verify before committing
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration left rows violating foreign keys: {broken[:5]}")


def run_locked(settings: Settings, fn: str, *args: str | bool) -> None:
    """Run the alembic command `fn` in one transaction that holds the migration lock."""
    engine = make_engine(settings, migrating=True)
    try:
        with engine.begin() as conn:
            take_lock(conn)
            getattr(command, fn)(alembic_config(conn), *args)
            check_foreign_keys(conn)
    finally:
        engine.dispose()


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the database of settings up to revision; a no-op when it is there already."""
    run_locked(settings, "upgrade", revision)


def downgrade(settings: Settings, revision: str) -> None:
    run_locked(settings, "downgrade", revision)

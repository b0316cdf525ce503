"""Alembic environment: runs on the connection handed over by app.db.migrations, or opens one."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import app.db.tables  # noqa: F401  (registers every table on Base.metadata for autogenerate)
from app.db.base import Base


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode recreates the table
        transactional_ddl=True,  # the SQLite migration engine emits BEGIN IMMEDIATE
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_standalone() -> None:
    """A plain `alembic` invocation: open a locked migration transaction from DEEPREC_* settings."""
    from app.config import get_settings
    from app.db.migrations import check_foreign_keys, take_lock
    from app.db.session import make_engine

    engine = make_engine(get_settings(), migrating=True)
    try:
        with engine.begin() as conn:
            take_lock(conn)
            run_on(conn)
            check_foreign_keys(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported")
connection = context.config.attributes.get("connection")
if connection is None:
    run_standalone()
else:
    run_on(connection)

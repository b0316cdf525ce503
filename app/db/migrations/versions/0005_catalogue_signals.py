"""The catalogue's change counts on both databases, and only for what changes the catalogue.

Each API process keeps the catalogue (item ids, active flags, categories, popularity) in memory and a
background thread keeps it current: new events are counted by id, the items are read again when
``catalogue_rewrite`` moved (any item written) and popularity is counted again when ``history_rewrite``
moved (an event deleted or changed, or a user deleted with their events). PostgreSQL gets the same
counts as SQLite, kept by statement-level triggers (one bump per statement, so bulk loads stay cheap).
A new user, or a user's id changed, no longer moves ``history_rewrite``: no process keeps histories now,
and neither changes popularity.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_DROPPED = {  # 0003's triggers that no reader needs any more: name -> (event, table)
    "history_rewrite_user_insert": ("INSERT", "user"),
    "history_rewrite_user_update": ("UPDATE OF id, external_id", "user"),
}
PG_TRIGGERS = {  # name -> (counter, event, table)
    "catalogue_rewrite_item": ("catalogue_rewrite", "INSERT OR UPDATE OR DELETE", "item"),
    "history_rewrite_interaction_delete": ("history_rewrite", "DELETE", "interaction"),
    "history_rewrite_interaction_update": (
        "history_rewrite",
        "UPDATE OF id, user_id, item_id, occurred_at",
        "interaction",
    ),
    "history_rewrite_user_delete": ("history_rewrite", "DELETE", "user"),
}


def _pg_function(counter: str) -> str:
    return (
        f"CREATE OR REPLACE FUNCTION bump_{counter}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN UPDATE {counter} SET count = count + 1 WHERE id = 1; RETURN NULL; END $$"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_DROPPED:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        return
    for counter in ("catalogue_rewrite", "history_rewrite"):
        op.execute(_pg_function(counter))
    for name, (counter, event, table) in PG_TRIGGERS.items():
        op.execute(
            f'CREATE TRIGGER {name} AFTER {event} ON "{table}" FOR EACH STATEMENT EXECUTE FUNCTION bump_{counter}()'
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        bump = "UPDATE history_rewrite SET count = count + 1 WHERE id = 1;"
        for name, (event, table) in SQLITE_DROPPED.items():
            op.execute(f'CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON "{table}" BEGIN {bump} END')
        return
    for name, (_, _, table) in PG_TRIGGERS.items():
        op.execute(f'DROP TRIGGER IF EXISTS {name} ON "{table}"')
    for counter in ("catalogue_rewrite", "history_rewrite"):
        op.execute(f"DROP FUNCTION IF EXISTS bump_{counter}()")

"""The catalogue's change counts on both databases, and only for what changes the catalogue.

Each API process keeps the catalogue (item ids, active flags, categories, popularity) in memory and a
background thread keeps it current: new items and new events are found by id, the items are read again
when ``catalogue_rewrite`` moved (an item changed or deleted) and popularity is counted again when
``history_rewrite`` moved (an event deleted or changed, or a user deleted with their events). PostgreSQL
gets the same counts as SQLite, kept by statement-level triggers (one bump per statement, so bulk writes
stay cheap). An item insert, a new user or a user's id changed no longer moves either count: new rows
are found by id, and no process keeps users' histories now.

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

SQLITE_DROPPED = {  # triggers of 0003 and 0004 that no reader needs any more: name -> (counter, event, table)
    "history_rewrite_user_insert": ("history_rewrite", "INSERT", "user"),
    "history_rewrite_user_update": ("history_rewrite", "UPDATE OF id, external_id", "user"),
    "catalogue_rewrite_item_insert": ("catalogue_rewrite", "INSERT", "item"),
}
PG_TRIGGERS = {  # name -> (counter, event, table); updates through a transition table: counted when rows changed
    "catalogue_rewrite_item_update": ("catalogue_rewrite", "UPDATE", "item"),
    "catalogue_rewrite_item_delete": ("catalogue_rewrite", "DELETE", "item"),
    "history_rewrite_interaction_update": ("history_rewrite", "UPDATE", "interaction"),
    "history_rewrite_interaction_delete": ("history_rewrite", "DELETE", "interaction"),
    "history_rewrite_user_delete": ("history_rewrite", "DELETE", "user"),
}


def _pg_functions(counter: str) -> list[str]:
    """A bump for deletes, and one for updates that bumps only when the statement changed rows: an upsert
    (INSERT ... ON CONFLICT DO UPDATE) fires statement-level UPDATE triggers even when it only inserts."""
    bump = f"UPDATE {counter} SET count = count + 1 WHERE id = 1;"
    return [
        f"CREATE OR REPLACE FUNCTION bump_{counter}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {bump} RETURN NULL; END $$",
        f"CREATE OR REPLACE FUNCTION bump_{counter}_if_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN IF EXISTS (SELECT 1 FROM changed) THEN {bump} END IF; RETURN NULL; END $$",
    ]


def _pg_trigger(name: str, counter: str, event: str, table: str) -> str:
    if event == "UPDATE":
        return (f'CREATE TRIGGER {name} AFTER UPDATE ON "{table}" REFERENCING NEW TABLE AS changed '
                f"FOR EACH STATEMENT EXECUTE FUNCTION bump_{counter}_if_changed()")  # fmt: skip
    return f'CREATE TRIGGER {name} AFTER {event} ON "{table}" FOR EACH STATEMENT EXECUTE FUNCTION bump_{counter}()'


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_DROPPED:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        return
    for counter in ("catalogue_rewrite", "history_rewrite"):
        for sql in _pg_functions(counter):
            op.execute(sql)
    for name, (counter, event, table) in PG_TRIGGERS.items():
        op.execute(_pg_trigger(name, counter, event, table))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name, (counter, event, table) in SQLITE_DROPPED.items():
            bump = f"UPDATE {counter} SET count = count + 1 WHERE id = 1;"
            op.execute(f'CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON "{table}" BEGIN {bump} END')
        return
    for name, (_, _, table) in PG_TRIGGERS.items():
        op.execute(f'DROP TRIGGER IF EXISTS {name} ON "{table}"')
    for counter in ("catalogue_rewrite", "history_rewrite"):
        op.execute(f"DROP FUNCTION IF EXISTS bump_{counter}()")
        op.execute(f"DROP FUNCTION IF EXISTS bump_{counter}_if_changed()")

"""history_rewrite: a count of the writes that rewrite users' histories, kept by triggers on SQLite.

An API process on SQLite reuses each user's history between requests and, after any commit, learns
which users have new events from the interaction ids past the last one it saw. Every other change to a
history (an event deleted, or its user, item, time or id changed; a user created, deleted or given
another id), made by DeepRec or by any other client of the database file, bumps this count through
the triggers below, and the process then reads every history again. A user's attributes, or an
event's type or value, are not part of a history and leave the count alone. PostgreSQL gets the
table only: its API processes query the history on every request.

A later migration that recreates ``interaction`` or ``user`` in batch mode (SQLite) drops their triggers
and must create them again (``create_triggers``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.base import BigId

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE history_rewrite SET count = count + 1 WHERE id = 1;"
TRIGGERS = {  # name -> (event, table); updates only of the columns a history is read by
    "history_rewrite_interaction_delete": ("DELETE", "interaction"),
    "history_rewrite_interaction_update": ("UPDATE OF id, user_id, item_id, occurred_at", "interaction"),
    "history_rewrite_user_insert": ("INSERT", "user"),
    "history_rewrite_user_delete": ("DELETE", "user"),
    "history_rewrite_user_update": ("UPDATE OF id, external_id", "user"),
}


def create_triggers() -> None:
    for name, (event, table) in TRIGGERS.items():
        op.execute(f'CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON "{table}" BEGIN {BUMP} END')


def upgrade() -> None:
    op.create_table(
        "history_rewrite",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("count", BigId, server_default="0", nullable=False),
    )
    op.execute("INSERT INTO history_rewrite (id, count) VALUES (1, 0)")
    if op.get_bind().dialect.name == "sqlite":
        create_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("history_rewrite")

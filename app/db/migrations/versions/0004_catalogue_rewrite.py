"""catalogue_rewrite: a count of the writes to the item table, kept by triggers on SQLite.

An API process keeps a catalogue (items, active flags, categories, features, popularity). On SQLite,
after a commit, it brings the popularity counts up to date from the interaction ids past the last one
it counted, and reads the item table again only when this count moved: any item created, changed or
deleted, by DeepRec or by any other client of the database file. Changes to events other than new
ones are counted by ``history_rewrite`` (0003), and then every count is taken again. PostgreSQL gets
the table only: its API processes reload the whole catalogue when it expires.

A later migration that recreates ``item`` in batch mode (SQLite) drops its triggers and must create them
again (``create_triggers``).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.base import BigId

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE catalogue_rewrite SET count = count + 1 WHERE id = 1;"
TRIGGERS = {  # name -> event on "item": every column is part of the catalogue
    "catalogue_rewrite_item_insert": "INSERT",
    "catalogue_rewrite_item_delete": "DELETE",
    "catalogue_rewrite_item_update": "UPDATE",
}


def create_triggers() -> None:
    for name, event in TRIGGERS.items():
        op.execute(f'CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON "item" BEGIN {BUMP} END')


def upgrade() -> None:
    op.create_table(
        "catalogue_rewrite",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("count", BigId, server_default="0", nullable=False),
    )
    op.execute("INSERT INTO catalogue_rewrite (id, count) VALUES (1, 0)")
    if op.get_bind().dialect.name == "sqlite":
        create_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("catalogue_rewrite")

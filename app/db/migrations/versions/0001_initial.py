"""Initial schema: user, item, interaction.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.base import BigId, Json, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    op.create_table(
        "user",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("external_id", sa.String(256), nullable=False),
        sa.Column("attributes", Json, nullable=False),
        sa.Column("created_at", UTCDateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_user"),
        sa.UniqueConstraint("external_id", name="uq_user_external_id"),
    )
    op.create_table(
        "item",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("external_id", sa.String(256), nullable=False),
        sa.Column("title", sa.String(1024), nullable=True),
        sa.Column("categories", Json, nullable=False),
        sa.Column("attributes", Json, nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", UTCDateTime(), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_item"),
        sa.UniqueConstraint("external_id", name="uq_item_external_id"),
    )
    op.create_table(
        "interaction",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("item_id", BigId, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("event_id", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_interaction"),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], name="fk_interaction_user_id_user", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"], name="fk_interaction_item_id_item", ondelete="CASCADE"),
        sa.UniqueConstraint("event_id", name="uq_interaction_event_id"),
    )
    op.create_index("ix_interaction_user_id_occurred_at", "interaction", ["user_id", "occurred_at"])
    op.create_index("ix_interaction_item_id", "interaction", ["item_id"])


def downgrade() -> None:
    op.drop_table("interaction")
    op.drop_table("item")
    op.drop_table("user")

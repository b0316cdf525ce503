"""Background training: training_job (the queue) and model_version (published versions, one active).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.base import BigId, Json, UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("CURRENT_TIMESTAMP")
OPEN_JOB = sa.text("status IN ('queued', 'running')")
ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    op.create_table(
        "training_job",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("models", Json, nullable=False),
        sa.Column("dedupe_key", sa.String(1024), nullable=False),
        sa.Column("params", Json, nullable=False),
        sa.Column("promote", sa.String(16), server_default="auto", nullable=False),
        sa.Column("trigger", sa.String(16), server_default="api", nullable=False),
        sa.Column("status", sa.String(16), server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("worker", sa.String(256), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("progress", Json, nullable=True),
        sa.Column("result", Json, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("snapshot_max_id", BigId, nullable=True),
        sa.Column("created_at", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_training_job"),
    )
    op.create_index("ix_training_job_status_id", "training_job", ["status", "id"])
    op.create_index(
        "ix_training_job_dedupe_key_open",
        "training_job",
        ["dedupe_key"],
        unique=True,
        sqlite_where=OPEN_JOB,
        postgresql_where=OPEN_JOB,
    )
    op.create_table(
        "model_version",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), server_default="candidate", nullable=False),
        sa.Column("metric_name", sa.String(64), nullable=True),
        sa.Column("metric_value", sa.Float(), nullable=True),
        sa.Column("metrics", Json, nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("job_id", BigId, nullable=True),
        sa.Column("trained_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), server_default=NOW, nullable=False),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_model_version"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["training_job.id"], name="fk_model_version_job_id_training_job", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("name", "version", name="uq_model_version_name_version"),
    )
    op.create_index(
        "ix_model_version_name_active",
        "model_version",
        ["name"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_table("model_version")
    op.drop_table("training_job")

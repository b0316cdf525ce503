"""ORM tables: user, item, interaction, history_rewrite, catalogue_rewrite, training_job, model_version.

External ids are strings; internal ids integers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false, text, true
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, BigId

ID_LENGTH = 256  # longest accepted external id or event id
TYPE_LENGTH = 32
NOW = text("CURRENT_TIMESTAMP")


class User(Base):
    __tablename__ = "user"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)


class Item(Base):
    __tablename__ = "item"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    title: Mapped[str | None] = mapped_column(String(1024))
    categories: Mapped[list[str]] = mapped_column(default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(server_default=true())
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)


class Interaction(Base):
    """One event. value is the rating for explicit feedback and NULL otherwise."""

    __tablename__ = "interaction"
    __table_args__ = (
        # A user's history newest first, and keyset pagination over it.
        Index("ix_interaction_user_id_occurred_at", "user_id", "occurred_at"),
        # Counts and popularity by item; also serves ON DELETE CASCADE lookups from item.
        Index("ix_interaction_item_id", "item_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("user.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("item.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(TYPE_LENGTH))
    value: Mapped[float | None] = mapped_column(Float)
    occurred_at: Mapped[datetime]
    # Client-chosen id; re-sent events with the same id are stored once. NULLs never collide.
    event_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), unique=True)


class HistoryRewrite(Base):
    """One row (id 1) counting the writes that change users' histories other than a new event: an event
    deleted or updated, a user created or deleted. On SQLite, triggers keep it (migration 0003), and an API
    process that reuses users' histories between requests checks it after every commit
    (``app.serving.history.HistoryReader``): new events it finds by id, anything else empties its reuse."""

    __tablename__ = "history_rewrite"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigId, server_default="0")


class CatalogueRewrite(Base):
    """One row (id 1) counting the writes to the item table. On SQLite, triggers keep it (migration 0004),
    and an API process's catalogue reads the items again only when it moved; new events only update its
    popularity counts (``app.serving.history.CatalogueCache``)."""

    __tablename__ = "catalogue_rewrite"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigId, server_default="0")


JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
VERSION_STATUSES = ("candidate", "active", "retired")
NAME_LENGTH = 64


class TrainingJob(Base):
    """One training request, claimed by a worker process; ``dedupe_key``: the sorted models (+ params digest)."""

    __tablename__ = "training_job"
    __table_args__ = (
        # The queue scan (oldest queued first) and the stale-job scan (running by heartbeat).
        Index("ix_training_job_status_id", "status", "id"),
        # At most one queued-or-running job per dedupe key (models, params, promote): enqueues dedupe in the DB.
        Index(
            "ix_training_job_dedupe_key_open",
            "dedupe_key",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    models: Mapped[list[str]]
    dedupe_key: Mapped[str] = mapped_column(String(1024))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    promote: Mapped[str] = mapped_column(String(16), server_default="auto")
    trigger: Mapped[str] = mapped_column(String(16), server_default="api")
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(256))
    cancel_requested: Mapped[bool] = mapped_column(server_default=false())
    progress: Mapped[dict[str, Any] | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    # Highest interaction id in the snapshot the job trained on: "new events since" for the schedule.
    snapshot_max_id: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ModelVersion(Base):
    """A version folder in the model store, recorded once its files are complete; one active per model."""

    __tablename__ = "model_version"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_model_version_name_version"),
        Index(
            "ix_model_version_name_active",
            "name",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[str] = mapped_column(String(NAME_LENGTH))
    status: Mapped[str] = mapped_column(String(16), server_default="candidate")
    metric_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    metric_value: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    note: Mapped[str | None] = mapped_column(Text)  # why a version was not promoted, or how it was activated
    job_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("training_job.id", ondelete="SET NULL"))
    trained_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
    activated_at: Mapped[datetime | None]

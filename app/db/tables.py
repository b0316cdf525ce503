"""ORM tables: user, item, interaction. External ids are strings; internal ids are integers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, text, true
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

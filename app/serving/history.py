"""A user's history as serving reads it: one indexed query per request, so an event counts at once.

The query reads the database ids of the user's items in time order (ix_interaction_user_id_occurred_at);
the catalogue turns them into rows and each model into its own columns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, bindparam, select

from app.db.tables import Interaction, User
from app.serving.catalogue import Catalogue
from app.serving.registry import LoadedModel

_USER_ID = select(User.id).where(User.external_id == bindparam("user_id")).scalar_subquery()
_ITEMS = (
    select(Interaction.item_id).where(Interaction.user_id == _USER_ID).order_by(Interaction.occurred_at, Interaction.id)
)
_EXISTS = select(User.id).where(User.external_id == bindparam("user_id"))


def read_history(conn: Connection, user_id: str) -> tuple[bool, np.ndarray]:
    """(the user exists, [N] database ids of their items, oldest first)."""
    ids = np.fromiter(conn.execute(_ITEMS, {"user_id": user_id}).scalars(), dtype=np.int64)
    if ids.size:
        return True, ids
    return conn.execute(_EXISTS, {"user_id": user_id}).first() is not None, ids


@dataclass(frozen=True)
class UserHistory:
    """A user's items, oldest first, as catalogue rows (items newer than the catalogue left out)."""

    exists: bool
    rows: np.ndarray  # [N] catalogue rows
    catalogue: Catalogue
    digest: bytes  # identifies the ordered items exactly: part of every cached list's key

    @classmethod
    def of(cls, exists: bool, db_ids: np.ndarray, cat: Catalogue) -> UserHistory:
        rows = cat.rows_of_db_ids(db_ids)
        digest = hashlib.blake2b(np.ascontiguousarray(db_ids).tobytes(), digest_size=16).digest()
        return cls(exists, rows[rows >= 0], cat, digest)

    @classmethod
    def of_items(cls, item_ids: list[str], cat: Catalogue) -> UserHistory:
        """A session's items, given by external id."""
        rows = cat.rows_of(item_ids)
        return cls(True, rows[rows >= 0], cat, b"")

    @property
    def empty(self) -> bool:
        return self.rows.size == 0

    @property
    def item_ids(self) -> np.ndarray:
        return self.catalogue.item_ids[self.rows]

    def cols(self, lm: LoadedModel) -> np.ndarray:
        """[N] the items as columns of one model, -1 where it does not know them."""
        return self.catalogue.aligned(lm)[1][self.rows]

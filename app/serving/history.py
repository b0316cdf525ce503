"""What serving reads from the database: a user's events at request time and a cached catalogue.

A user's history is one indexed query (interaction by user_id, occurred_at), so events ingested a
moment ago count at once for exclude-seen and next-items in every API process, with no cache to
keep in sync. The catalogue (active flags, categories, popularity) changes slowly and is reloaded
every ``ttl_s`` seconds by whichever request first finds it stale, without blocking the others.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.frames import epoch_seconds, items_frame
from app.db.tables import Interaction, Item, User


@dataclass(frozen=True)
class UserHistory:
    exists: bool  # the user is in the database (possibly with no events)
    item_ids: np.ndarray  # [N] external ids, oldest first
    ts: np.ndarray  # [N] unix seconds

    @property
    def empty(self) -> bool:
        return self.item_ids.size == 0


def user_history(*, session: Session, user_id: str) -> UserHistory:
    """Every event of the user, oldest first; one query served by ix_interaction_user_id_occurred_at."""
    ev = Interaction
    stmt = (
        select(User.id, Item.external_id, epoch_seconds(ev.occurred_at))
        .select_from(User)
        .outerjoin(ev, ev.user_id == User.id)
        .outerjoin(Item, Item.id == ev.item_id)
        .where(User.external_id == user_id)
        .order_by(ev.occurred_at, ev.id)
    )
    rows = session.execute(stmt).all()
    if not rows or rows[0][1] is None:  # no such user, or (outer join) a user without events
        return UserHistory(bool(rows), np.empty(0, dtype=object), np.empty(0, dtype=np.int64))
    _, items, ts = zip(*rows, strict=True)
    return UserHistory(True, np.array(items, dtype=object), np.array(ts, dtype=np.int64))


def item_popularity(*, session: Session) -> pd.Series:
    """Events per item external id (items without events are absent)."""
    stmt = select(Item.external_id, func.count(Interaction.id)).join(Interaction, Interaction.item_id == Item.id)
    rows = session.execute(stmt.group_by(Item.external_id)).all()
    return pd.Series({r[0]: r[1] for r in rows}, dtype=np.float64)


@dataclass
class Catalogue:
    """Items in the database: ids, active flags, categories, popularity counts. Immutable once built."""

    items: pd.DataFrame  # items_frame columns, one row per item
    popularity: np.ndarray  # [C] events per item
    generation: int = 0
    built_at: float = field(default_factory=time.monotonic)
    _aligned: dict[str, tuple[np.ndarray, torch.Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.index = pd.Index(self.items["item_id"].astype(str))
        self.item_ids = self.index.to_numpy(dtype=object)
        self.active = self.items["active"].to_numpy(dtype=bool) if len(self.items) else np.zeros(0, bool)
        exploded = self.items["categories"].explode().dropna() if len(self.items) else pd.Series(dtype=object)
        self._cat_rows = exploded.astype(str).groupby(exploded.astype(str)).groups  # category -> row labels

    @property
    def size(self) -> int:
        return len(self.item_ids)

    def rows_of(self, item_ids: np.ndarray | list[str]) -> np.ndarray:
        return self.index.get_indexer(pd.Index(item_ids, dtype=object))

    def category_mask(self, categories: list[str]) -> np.ndarray:
        """[C] bool: items in any of the categories."""
        mask = np.zeros(self.size, dtype=bool)
        for c in categories:  # a handful of requested categories, each a vectorised assignment
            rows = self._cat_rows.get(c)
            if rows is not None:
                mask[np.asarray(rows, dtype=np.int64)] = True
        return mask

    def features_frame(self, rows: np.ndarray) -> pd.DataFrame:
        return self.items.iloc[rows]

    def aligned(self, key: str, item_ids: np.ndarray, device: torch.device) -> tuple[np.ndarray, torch.Tensor]:
        """Catalogue row of each model item (-1 if gone) and the [I] active mask, cached per model and generation."""
        cached = self._aligned.get(key)
        if cached is None:
            rows = self.rows_of(item_ids)
            active = np.where(rows >= 0, self.active[np.maximum(rows, 0)], False) if self.size else rows >= 0
            cached = self._aligned[key] = (rows, torch.as_tensor(active, device=device))
        return cached


class CatalogueCache:
    """Keeps a recent Catalogue; at most one request at a time rebuilds it, the others use the old one."""

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float = 10.0) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self._current: Catalogue | None = None
        self._lock = threading.Lock()

    def load(self) -> Catalogue:
        with self.sessions() as session:
            items = items_frame(session=session)
            pop = item_popularity(session=session)
        counts = pop.reindex(items["item_id"].astype(str)).fillna(0.0).to_numpy() if len(items) else np.zeros(0)
        generation = self._current.generation + 1 if self._current is not None else 1
        return Catalogue(items.reset_index(drop=True), counts, generation)

    def get(self, max_age_s: float | None = None) -> Catalogue:
        """The current catalogue. With ``max_age_s`` (an id was not found) wait for one at most that old."""
        def stale(c: Catalogue | None) -> bool:
            return c is None or (max_age_s is not None and time.monotonic() - c.built_at > max_age_s)

        current = self._current
        if stale(current):
            with self._lock:
                if stale(self._current):
                    self._current = self.load()
                assert self._current is not None
                return self._current
        if time.monotonic() - current.built_at > self.ttl_s and self._lock.acquire(blocking=False):
            try:
                self._current = self.load()
            finally:
                self._lock.release()
        return self._current

    def invalidate(self) -> None:
        """Force a reload on next use (after catalogue writes in this process)."""
        if self._current is not None:
            self._current.built_at = -1e18

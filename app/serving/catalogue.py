"""The catalogue serving reads: each item's ids, active flag, categories and popularity, as numpy arrays.

It is loaded in full once, then kept current off the request path by ``CatalogueKeeper``'s thread: items
and events past the last ids it read are appended and added to the popularity counts (range scans of the
primary keys); every item is read again only when an item was changed or deleted (``catalogue_rewrite``)
and popularity is counted again only when events were deleted or changed (``history_rewrite``), both
counts kept by triggers (migrations 0004, 0005). Requests only read the current, immutable ``Catalogue``;
an item id it lacks is looked up in the database (``find_items``), so a new item is never unknown.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db.tables import CatalogueRewrite, HistoryRewrite, Interaction, Item
from app.serving.registry import LoadedModel, positions

log = logging.getLogger(__name__)

POPULAR_KEPT = 10_000  # the most popular active items kept in order, enough for any popular list's filters
# More new events than this between two refreshes (a bulk load): popularity is counted again instead.
MAX_NEW_EVENTS = 1_000_000


@dataclass
class Catalogue:
    """Every item in the database, in id order; immutable once built (a refresh builds a new one)."""

    item_ids: np.ndarray  # [C] external ids (object)
    db_ids: np.ndarray  # [C] database ids, ascending
    active: np.ndarray  # [C] bool
    category_rows: dict[str, np.ndarray]  # category -> the rows of its items
    popularity: np.ndarray  # [C] events per item
    generation: int = 0  # moves with every change, popularity counts included
    item_generation: int = -1  # moves only when the items changed (ids, active flags, categories): -1 = generation
    _index: pd.Index = field(init=False, repr=False)
    _models: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _popular: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.item_generation < 0:
            self.item_generation = self.generation
        self._index = pd.Index(self.item_ids)
        self._db_to_row = np.full(int(self.db_ids.max()) + 1 if self.db_ids.size else 0, -1, dtype=np.int64)
        self._db_to_row[self.db_ids] = np.arange(self.db_ids.size)

    @property
    def size(self) -> int:
        return len(self.item_ids)

    def rows_of(self, item_ids: np.ndarray | list[str]) -> np.ndarray:
        """Row of each external id, -1 where the catalogue does not hold it."""
        return positions(self._index, item_ids)

    def rows_of_db_ids(self, db_ids: np.ndarray) -> np.ndarray:
        """Row of each database item id, -1 where the catalogue does not hold it (newer items)."""
        out = np.full(db_ids.size, -1, dtype=np.int64)
        known = (db_ids >= 0) & (db_ids < self._db_to_row.size)
        out[known] = self._db_to_row[db_ids[known]]
        return out

    def category_mask(self, categories: tuple[str, ...]) -> np.ndarray:
        """[C] bool: the items in any of ``categories``."""
        mask = np.zeros(self.size, dtype=bool)
        for c in categories:  # the few categories of one request, each a vectorised assignment
            rows = self.category_rows.get(c)
            if rows is not None:
                mask[rows] = True
        return mask

    def aligned(self, lm: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
        """([I] the catalogue row of each of the model's items, -1 if gone; [C] the model's column of each
        catalogue row, -1 where the model does not know the item), built once per model version."""
        key = f"{lm.name}:{lm.version}"
        cached = self._models.get(key)
        if cached is None:
            rows = self.rows_of(lm.item_ids)
            cols = np.full(self.size, -1, dtype=np.int64)
            cols[rows[rows >= 0]] = np.flatnonzero(rows >= 0)
            cached = self._models[key] = (rows, cols, np.asarray(lm.item_ids))
        return cached[0], cached[1]

    def popular_rows(self) -> np.ndarray:
        """The most popular active items' rows, most popular first (up to POPULAR_KEPT)."""
        if self._popular is None:
            score = np.where(self.active, self.popularity, -np.inf)
            k = min(POPULAR_KEPT, self.size)
            top = np.argpartition(-score, k - 1)[:k] if 0 < k < self.size else np.arange(self.size)
            top = top[np.argsort(-score[top], kind="stable")]
            self._popular = top[np.isfinite(score[top])]
        return self._popular

    def with_items(self, new: Catalogue) -> Catalogue:
        """This catalogue with the items of ``new`` (all newer) appended, their popularity included. The
        per-model look-ups built so far are kept, extended: a model loaded before the catalogue read its
        newest items (trained on them, and swapped in within a refresh interval) finds them now."""
        offset = self.size
        cats = dict(self.category_rows)
        for c, rows in new.category_rows.items():
            cats[c] = np.concatenate([cats[c], rows + offset]) if c in cats else rows + offset
        out = Catalogue(
            item_ids=np.concatenate([self.item_ids, new.item_ids]),
            db_ids=np.concatenate([self.db_ids, new.db_ids]),
            active=np.concatenate([self.active, new.active]),
            category_rows=cats,
            popularity=np.concatenate([self.popularity, new.popularity]),
            generation=self.generation + 1,
        )
        out._models = {k: _extended(rows, cols, ids, new, offset) for k, (rows, cols, ids) in self._models.items()}
        out.rows_of(new.item_ids[:1])  # pandas builds an index's hash table on first use: here, not in a request
        return out

    def with_popularity(self, popularity: np.ndarray) -> Catalogue:
        """The same items (and everything derived from them, shared) with other popularity counts."""
        out = copy.copy(self)
        out.popularity, out.generation, out._popular = popularity, self.generation + 1, None
        return out


def _extended(
    rows: np.ndarray, cols: np.ndarray, model_items: np.ndarray, new: Catalogue, offset: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A model's (rows, cols) look-up after ``new`` was appended at ``offset``: the model's items the
    catalogue lacked are looked up among the new ones (usually none or a few)."""
    cols = np.concatenate([cols, np.full(new.size, -1, dtype=np.int64)])
    missing = np.flatnonzero(rows < 0)
    if missing.size:
        found = new.rows_of(model_items[missing])
        hit = found >= 0
        if hit.any():
            rows = rows.copy()
            rows[missing[hit]] = found[hit] + offset
            cols[found[hit] + offset] = missing[hit]
    return rows, cols, model_items


@dataclass(frozen=True)
class Marks:
    """Where a catalogue's counts stand: the item-write and event-rewrite counts and the last event id."""

    items: int | None
    rewrites: int | None
    last_id: int
    last_item: int


_LAST_ID = select(func.max(Interaction.id))
_ITEM_WRITES = select(CatalogueRewrite.count).where(CatalogueRewrite.id == 1)
_REWRITES = select(HistoryRewrite.count).where(HistoryRewrite.id == 1)
_NEW_EVENTS = select(Interaction.item_id).where(
    Interaction.id > bindparam("after"), Interaction.id <= bindparam("upto")
)
_ITEMS = select(Item.id, Item.external_id, Item.active, Item.categories).order_by(Item.id)
_LAST_ITEM = select(func.max(Item.id))


def read_marks(session: Session | Connection) -> Marks:
    return Marks(
        session.execute(_ITEM_WRITES).scalar(),
        session.execute(_REWRITES).scalar(),
        int(session.execute(_LAST_ID).scalar() or 0),
        int(session.execute(_LAST_ITEM).scalar() or 0),
    )


def count_events(session: Session, upto: int, db_ids: np.ndarray, after_item: int = 0) -> np.ndarray:
    """[C] events per item of ``db_ids`` (ascending database ids), counting those with an id up to ``upto``;
    items past ``after_item`` only (a range of ix_interaction_item_id)."""
    stmt = select(Interaction.item_id, func.count()).where(Interaction.id <= upto)
    if after_item:
        stmt = stmt.where(Interaction.item_id > after_item)
    stmt = stmt.group_by(Interaction.item_id)
    counted = np.array(session.execute(stmt).all(), dtype=np.int64).reshape(-1, 2)  # [n, (item, count)]
    out = np.zeros(db_ids.size, dtype=np.float64)
    at = np.searchsorted(db_ids, counted[:, 0])
    known = (at < db_ids.size) & (db_ids[np.minimum(at, db_ids.size - 1)] == counted[:, 0]) if db_ids.size else at < 0
    out[at[known]] = counted[known, 1]
    return out


def load_catalogue(session: Session, upto: int, generation: int = 1, after_item: int = 0) -> Catalogue:
    """Every item (with a database id past ``after_item``), and the events up to id ``upto`` counted per item."""
    rows = session.execute(_ITEMS.where(Item.id > after_item)).all()
    frame = pd.DataFrame(rows, columns=["db_id", "item_id", "active", "categories"])
    db_ids = frame["db_id"].to_numpy(np.int64)
    exploded = frame["categories"].explode().dropna().astype(str)
    groups = exploded.groupby(exploded).indices if len(exploded) else {}
    category_rows = {str(c): exploded.index.to_numpy()[i] for c, i in groups.items()}
    return Catalogue(
        item_ids=frame["item_id"].astype(str).to_numpy(dtype=object),
        db_ids=db_ids,
        active=frame["active"].to_numpy(dtype=bool),
        category_rows=category_rows,
        popularity=count_events(session, upto, db_ids, after_item),
        generation=generation,
    )


def find_items(session: Session, item_ids: list[str]) -> pd.DataFrame:
    """The items of ``item_ids`` that the database holds now: item_id, title, categories, attributes, active."""
    if not item_ids:
        return pd.DataFrame(columns=["item_id", "title", "categories", "attributes", "active"])
    stmt = select(Item.external_id, Item.title, Item.categories, Item.attributes, Item.active).where(
        Item.external_id.in_(item_ids)
    )
    rows = session.execute(stmt).all()
    return pd.DataFrame(rows, columns=["item_id", "title", "categories", "attributes", "active"])


class CatalogueKeeper:
    """Holds the current Catalogue and keeps it current in a background thread (``start``), every
    ``interval_s``; ``current()`` waits only for the first load."""

    def __init__(self, sessions: sessionmaker[Session], interval_s: float = 1.0) -> None:
        self.sessions = sessions
        self.interval_s = interval_s
        self.loads = 0  # full loads
        self.appends = 0  # new items read alone
        self.updates = 0  # popularity brought up to date from new events alone
        self._current: Catalogue | None = None
        self._marks: Marks | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catalogue", daemon=True)

    def current(self, timeout_s: float | None = None) -> Catalogue:
        """The current catalogue; the first call waits for the first load (raises TimeoutError after
        ``timeout_s``), loading it itself when no thread runs."""
        if self._current is None:
            if not self._thread.is_alive():
                self.refresh()
            elif not self._ready.wait(timeout_s):
                raise TimeoutError("the catalogue is loading")
        assert self._current is not None
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def refresh(self) -> bool:
        """Bring the catalogue up to date; True when it changed."""
        with self._lock:
            with self.sessions() as session:
                marks = read_marks(session)
                before, current = self._marks, self._current
                if current is not None and marks == before:
                    return False
                if current is None or before is None or self._rewritten(before, marks):
                    new = load_catalogue(session, marks.last_id, current.generation + 1 if current else 1)
                    self.loads += 1
                else:
                    new = current
                    if marks.last_item > before.last_item:  # new items: read them alone, counted up to last_id
                        appended = load_catalogue(session, before.last_id, after_item=before.last_item)
                        new = new.with_items(appended)
                        self.appends += 1
                    if before.last_id < marks.last_id <= before.last_id + MAX_NEW_EVENTS:
                        new = self._count_new(session, new, before.last_id, marks.last_id)
                    elif marks.last_id != before.last_id:  # events gone without a rewrite count, or a bulk load
                        new = new.with_popularity(count_events(session, marks.last_id, new.db_ids))
            self._current, self._marks = new, marks
        self._ready.set()
        return True

    @staticmethod
    def _rewritten(before: Marks, now: Marks) -> bool:
        """Rows changed or deleted since ``before``: everything is read again."""
        return (now.items, now.rewrites) != (before.items, before.rewrites) or now.last_item < before.last_item

    def _count_new(self, session: Session, current: Catalogue, after: int, upto: int) -> Catalogue:
        ids = np.fromiter(session.execute(_NEW_EVENTS, {"after": after, "upto": upto}).scalars(), dtype=np.int64)
        rows = current.rows_of_db_ids(ids)
        if (rows < 0).any():  # an event on an item committed after the items were read: read everything
            self.loads += 1
            return load_catalogue(session, upto, current.generation + 1)
        self.updates += 1
        return current.with_popularity(current.popularity + np.bincount(rows, minlength=current.size))

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Refresh now rather than at the end of the interval (this process just wrote items)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.refresh()
            except (SQLAlchemyError, OSError) as exc:  # the database is away: keep serving the last catalogue
                log.warning("catalogue refresh failed", extra={"error": str(exc)})
            except Exception:
                log.exception("catalogue refresh failed")
            self._wake.wait(max(0.05, self.interval_s - (time.monotonic() - t0)))
            self._wake.clear()

"""What serving reads from the database: a user's events at request time and a cached catalogue.

A user's history is one indexed query (interaction by user_id, occurred_at), so events ingested a
moment ago count at once for exclude-seen and next-items in every API process. On SQLite the result
is reused until a commit changes it (``HistoryReader``), which every process finds out for itself.
The catalogue (active flags, categories, popularity) changes slowly and is reloaded every ``ttl_s``
seconds, ahead of time by the background refresher (``app.serving.refresh``) or else by whichever
request first finds it stale, without blocking the others.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from sqlalchemy import Connection, Engine, bindparam, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db.tables import CatalogueRewrite, HistoryRewrite, Interaction, Item, User
from app.serving.cache import ScoreCache
from app.serving.metrics import HISTORY_CACHE
from app.serving.registry import LoadedModel

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class UserHistory:
    exists: bool  # the user is in the database (possibly with no events)
    rows: np.ndarray  # [N] catalogue rows of the user's items, oldest first
    catalogue: Catalogue
    db_ids: np.ndarray | None = None  # [N] the same items' database ids (immutable per item)

    def fingerprint(self) -> tuple[bool, int, bytes]:
        """Identifies the history exactly: existence, length and a 128-bit digest of the ordered item ids.

        Scoring reads only the ordered items, so equal fingerprints give equal scores for the same models.
        """
        ids = self.db_ids if self.db_ids is not None else self.catalogue.db_ids[self.rows]
        data = np.ascontiguousarray(ids, dtype=np.int64).tobytes()
        return self.exists, int(ids.size), hashlib.blake2b(data, digest_size=16).digest()

    @property
    def empty(self) -> bool:
        return self.rows.size == 0

    @property
    def item_ids(self) -> np.ndarray:
        return self.catalogue.item_ids[self.rows]

    def cols(self, lm: LoadedModel) -> np.ndarray:
        """[N] the items as columns of one model, -1 where it does not know them."""
        return self.catalogue.model_cols(lm)[self.rows]


_EV = Interaction
# Built once: per request only the parameter changes, so SQLAlchemy reuses the compiled statement.
# Integer item ids only (mapped to external ids through the cached catalogue): no join, no strings.
_HISTORY = (
    select(User.id, _EV.item_id)
    .select_from(User)
    .outerjoin(_EV, _EV.user_id == User.id)
    .where(User.external_id == bindparam("user_id"))
    .order_by(_EV.occurred_at, _EV.id)
)

# The hot path's pair: the items alone (no user column repeated on every row), and, only when a user
# has no events, whether they exist at all.
_USER_ID = select(User.id).where(User.external_id == bindparam("user_id")).scalar_subquery()
_ITEMS = select(_EV.item_id).where(_EV.user_id == _USER_ID).order_by(_EV.occurred_at, _EV.id)
_EXISTS = select(User.id).where(User.external_id == bindparam("user_id"))


def user_item_ids(*, conn: Connection | Session, user_id: str) -> tuple[bool, np.ndarray]:
    """(user exists, [N] database item ids oldest first); one query on ix_interaction_user_id_occurred_at.

    Pass a Connection on the hot path: a Session adds ORM bookkeeping to a plain Core query.
    """
    rows = conn.execute(_HISTORY, {"user_id": user_id}).all()
    if not rows or rows[0][1] is None:  # no such user, or (outer join) a user without events
        return bool(rows), np.empty(0, dtype=np.int64)
    return True, np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))


def _pragma_version(conn: Any) -> int:
    cur = conn.cursor()
    try:
        cur.execute("PRAGMA data_version")
        return int(cur.fetchone()[0])
    finally:
        cur.close()


def _busy(exc: Exception) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class DataVersion:
    """SQLite's ``PRAGMA data_version``, read on a connection of its own that never writes: it changes
    whenever any other connection, in this process or another, commits to the database file. ``None``
    where there is no such signal (PostgreSQL, in-memory SQLite) or it cannot be read."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        url = engine.url
        in_memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
        self.usable = engine.dialect.name == "sqlite" and not in_memory
        self._conn: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> int | None:
        if not self.usable:
            return None
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._open()
                return _pragma_version(self._conn)
            except sqlite3.OperationalError as exc:
                if _busy(exc):  # the file is locked this moment: no signal this time; the connection stays
                    return None
                self._close()
                return None
            except Exception:  # a broken connection: no signal this time, a fresh connection next time
                self._close()
                return None

    def _open(self) -> Any:
        """A connection of its own, out of the engine's pool, that never waits for a lock: it is also read
        from the event loop (``peek``, ``borrow``), where SQLite's busy timeout must not apply. In WAL mode
        a read does not wait for writers anyway; a locked file answers at once, as no signal."""
        conn = self.engine.raw_connection()
        conn.detach()  # closed for good by close(), never handed back to the pool with the setting below
        cur = conn.cursor()
        try:
            cur.execute("PRAGMA busy_timeout=0")
        finally:
            cur.close()
        return conn

    def peek(self, wait_s: float = 0.002) -> int | None:
        """The version, for the event loop: one PRAGMA on the open connection (microseconds). None when there
        is no open connection yet or another thread's read (as short) did not end within ``wait_s``."""
        return self.borrow(_pragma_version, wait_s)

    def borrow(self, read: Callable[[Any], T], wait_s: float = 0.002) -> T | None:
        """``read(connection)`` on the open connection under its lock, for the event loop: None when there is
        no open connection yet, the lock was not free within ``wait_s``, or the read failed (the file locked,
        say). ``read`` must be short: a few indexed reads."""
        if not self.usable or self._conn is None or not self._lock.acquire(timeout=wait_s):
            return None
        try:
            return read(self._conn) if self._conn is not None else None
        except Exception:  # a broken connection: the next read under the lock (``__call__``) finds out
            return None
        finally:
            self._lock.release()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            self._close()


# More new events than this at once (a bulk import): the users are not listed, every history is read again.
MAX_CHANGED_ROWS = 10_000
_USERS_SINCE = (
    select(User.external_id)
    .join(Interaction, Interaction.user_id == User.id)
    .where(Interaction.id > bindparam("after"), Interaction.id <= bindparam("upto"))
    .distinct()
)
_LAST_ID = select(func.max(Interaction.id))
_REWRITES = select(HistoryRewrite.count).where(HistoryRewrite.id == bindparam("row"))  # the one row: row=1


def users_with_events(conn: Connection, after: int, upto: int) -> list[str]:
    """External ids of the users with events whose id is in (after, upto]: a range scan of the primary key."""
    return list(conn.execute(_USERS_SINCE, {"after": after, "upto": upto}).scalars())


def last_interaction_id(conn: Connection | Session) -> int:
    return int(conn.execute(_LAST_ID).scalar() or 0)


@dataclass(frozen=True)
class Compiled:
    """A Core statement compiled once for a dialect, to run on a driver connection (no SQLAlchemy per call)."""

    sql: str
    names: tuple[str, ...]  # parameter order, for drivers with positional parameters
    positional: bool

    @classmethod
    def of(cls, stmt: Any, engine: Engine) -> Compiled:
        c = stmt.compile(dialect=engine.dialect)
        return cls(str(c), tuple(c.positiontup or ()), bool(c.positional))

    def run(self, cur: Any, **params: Any) -> Any:
        cur.execute(self.sql, tuple(params[n] for n in self.names) if self.positional else params)
        return cur


@dataclass(frozen=True)
class Changes:
    """What a sync read: the users with new events since the last one (None: any history may have changed),
    the largest interaction id and the history_rewrite count (None: no such table)."""

    users: frozenset[str] | None
    mark: int
    rewrites: int | None


class HistoryReader:
    """``user_item_ids`` on the hot path: the same statement, compiled once for the engine's dialect and
    run on a pooled driver connection, without SQLAlchemy's per-execution and per-row work (~40% of it).

    With ``cache_size`` > 0 on SQLite, a user's history read earlier is reused until it changes. The
    reader checks the database's ``data_version`` on every call (it moves whenever any connection, in any
    process, commits); after a commit it syncs once: the interaction ids past the last one it saw name the
    users with new events, whose kept histories go, and the ``history_rewrite`` count (kept by triggers:
    an event deleted or updated, a user created or deleted) says whether anything else changed, in which
    case every kept history goes, as they do for a bulk load. So a commit costs one sync per process
    rather than a query per user, and an event counts at once for its user.

    A sync is three reads of compiled statements on a driver connection (~0.2 ms of CPU), and ``listeners``
    hear the users it found (the score refresher, which then refreshes them at once).
    """

    def __init__(
        self, engine: Engine, cache_size: int = 0, cache_bytes: int | None = None, version: DataVersion | None = None
    ) -> None:
        """``version``: the engine's commit signal to share (the catalogue's); by default one of its own."""
        self.engine = engine
        self.items_sql, self.exists_sql = Compiled.of(_ITEMS, engine), Compiled.of(_EXISTS, engine)
        self.last_id_sql, self.rewrites_sql = Compiled.of(_LAST_ID, engine), Compiled.of(_REWRITES, engine)
        self.users_since_sql = Compiled.of(_USERS_SINCE, engine)
        self.version = version if version is not None else DataVersion(engine)
        self.cache: ScoreCache[tuple[bool, np.ndarray]] = ScoreCache(
            cache_size if self.version.usable else 0, max_bytes=cache_bytes, weigh=lambda v: 64 + v[1].nbytes,
            lookups=HISTORY_CACHE, entries=None,
        )  # fmt: skip
        self.listeners: list[Callable[[frozenset[str] | None], None]] = []  # called after each sync, outside locks
        self.syncs = 0  # commits caught up with
        self.resets = 0  # of them, those that dropped every kept history
        self._lock = threading.Lock()  # the kept histories and the sync state
        self._sync_lock = threading.Lock()  # one sync at a time (its queries run outside ``_lock``)
        self._synced: int | None = None  # the data version the kept histories are current for
        self._mark: int | None = None  # the largest interaction id seen at the last sync
        self._rewrites: int | None = None  # the history_rewrite count seen at the last sync
        self._epoch = 0  # syncs applied
        self._changes: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=64)  # (epoch, users; None: all)

    def __call__(self, user_id: str) -> tuple[bool, np.ndarray]:
        if not self.cache.enabled:
            return self.query(user_id)
        version = self.version()
        if version is None:
            return self.query(user_id)
        self._sync_to(version)
        with self._lock:
            hit, value = self.cache.get(user_id, None)
            epoch = self._epoch
        if hit and value is not None:
            return value
        value = self._shared(user_id)
        with self._lock:
            if self._unchanged_since(epoch, user_id):  # no sync since the query began named this user
                self.cache.put(user_id, None, value)
        return value

    def peek(self, user_id: str) -> tuple[bool, np.ndarray] | None:
        """The history kept for ``user_id`` when nothing was committed since the last sync, else None: never
        a query (``DataVersion.peek``). The look-up is not counted: ``cache.count_hit`` once it is used."""
        if not self.cache.enabled:
            return None
        version = self.version.peek()
        if version is None or not self._lock.acquire(timeout=0.002):
            return None
        try:
            if version != self._synced:
                return None
            hit, value = self.cache.get(user_id, None, count=False)
        finally:
            self._lock.release()
        return value if hit else None

    def _unchanged_since(self, epoch: int, user_id: str) -> bool:
        """Under ``_lock``: no sync after ``epoch`` changed ``user_id`` (unknown, when too many ran since)."""
        if epoch == self._epoch:
            return True
        if not self._changes or self._changes[0][0] > epoch + 1:
            return False
        return not any(e > epoch and (users is None or user_id in users) for e, users in self._changes)

    def _sync_to(self, version: int) -> None:
        """Make the kept histories current for a database at ``version`` (read before calling)."""
        if version == self._synced:
            return
        with self._sync_lock:
            if version == self._synced:
                return
            conn = self.engine.raw_connection()
            try:
                changes = self._read_changes(conn)
            finally:
                conn.close()
            with self._lock:
                self._apply(version, changes)
        self._tell(changes.users)

    def _apply(self, version: int, changes: Changes) -> None:
        """Under both locks: drop the kept histories ``changes`` names and record the sync."""
        self._epoch += 1
        if changes.users is None:
            self.cache.clear()
            self.resets += 1
        else:
            for user_id in changes.users:
                self.cache.discard(user_id)
        self._changes.append((self._epoch, changes.users))
        self._mark, self._rewrites, self._synced = changes.mark, changes.rewrites, version
        self.syncs += 1

    def _tell(self, users: frozenset[str] | None) -> None:
        for listener in self.listeners:
            try:
                listener(users)
            except Exception:  # a listener's failure is its own; the sync is done
                log.exception("history sync listener failed")

    def _read_changes(self, conn: Any) -> Changes:
        """On driver connection ``conn`` (SQLite's, compiled statements): what changed since the last sync."""
        cur = conn.cursor()
        try:
            try:
                row = self.rewrites_sql.run(cur, row=1).fetchone()
                rewrites = None if row is None else int(row[0])
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                rewrites = None  # a database from before migration 0003: no rewrite count
            top = int(self.last_id_sql.run(cur).fetchone()[0] or 0)
            mark = self._mark
            if mark is None or top < mark or rewrites is None or rewrites != self._rewrites:  # emptied, rewritten
                return Changes(None, top, rewrites)
            if top - mark > MAX_CHANGED_ROWS:  # a bulk load: not followed user by user
                return Changes(None, top, rewrites)
            users = self.users_since_sql.run(cur, after=mark, upto=top).fetchall() if top > mark else []
            return Changes(frozenset(r[0] for r in users), top, rewrites)
        finally:
            cur.close()

    def close(self) -> None:
        self.version.close()

    def _shared(self, user_id: str) -> tuple[bool, np.ndarray]:
        exists, ids = self.query(user_id)
        ids.setflags(write=False)  # one array serves every request until the user's history changes
        return exists, ids

    def query(self, user_id: str) -> tuple[bool, np.ndarray]:
        """(user exists, [N] database item ids oldest first), read now."""
        conn = self.engine.raw_connection()  # from the engine's pool; close() returns it (rolled back)
        try:
            cur = conn.cursor()
            try:
                rows = self.items_sql.run(cur, user_id=user_id).fetchall()
                if not rows:  # no events: does the user exist?
                    return self.exists_sql.run(cur, user_id=user_id).fetchone() is not None, np.empty(0, np.int64)
            finally:
                cur.close()
        finally:
            conn.close()
        return True, np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


def item_popularity(*, session: Session, upto: int | None = None) -> dict[int, int]:
    """Events per database item id (items without events are absent); with ``upto``, only the events whose
    id is at most that."""
    stmt = select(_EV.item_id, func.count()).group_by(_EV.item_id)
    rows = session.execute(stmt if upto is None else stmt.where(_EV.id <= upto)).all()
    return {r[0]: r[1] for r in rows}


@dataclass(frozen=True)
class CatalogueMarks:
    """Where a catalogue's counts stand (SQLite): the catalogue_rewrite and history_rewrite counts and the
    largest interaction id counted."""

    items: int
    rewrites: int
    last_id: int


_ITEM_WRITES = select(CatalogueRewrite.count).where(CatalogueRewrite.id == 1)
_ITEMS_OF_EVENTS = select(_EV.item_id).where(_EV.id > bindparam("after"), _EV.id <= bindparam("upto"))


def catalogue_marks(*, session: Session) -> CatalogueMarks | None:
    """The marks now; None on a database from before migrations 0003 and 0004 (no counts to follow)."""
    try:
        items = session.execute(_ITEM_WRITES).scalar()
        rewrites = session.execute(_REWRITES, {"row": 1}).scalar()
    except SQLAlchemyError:
        session.rollback()
        return None
    if items is None or rewrites is None:
        return None
    return CatalogueMarks(int(items), int(rewrites), last_interaction_id(session))


def catalogue_frame(*, session: Session) -> pd.DataFrame:
    """Every item: db_id, item_id, title, categories, attributes, active."""
    stmt = select(Item.id, Item.external_id, Item.title, Item.categories, Item.attributes, Item.active)
    columns = ["db_id", "item_id", "title", "categories", "attributes", "active"]
    frame = pd.DataFrame.from_records(session.execute(stmt.order_by(Item.id)).all(), columns=columns)
    return frame.astype({"db_id": np.int64, "item_id": str, "active": bool})


@dataclass
class Catalogue:
    """Items in the database: ids, active flags, categories, popularity counts. Immutable once built."""

    items: pd.DataFrame  # catalogue_frame columns, one row per item
    popularity: np.ndarray  # [C] events per item
    generation: int = 0
    built_at: float = field(default_factory=time.monotonic)
    _aligned: dict[str, tuple[np.ndarray, torch.Tensor]] = field(default_factory=dict, repr=False)
    _cols: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.item_ids = self.items["item_id"].astype(str).to_numpy(dtype=object)
        self.pos = {i: r for r, i in enumerate(self.item_ids)}
        self.db_ids = db_ids = self.items["db_id"].to_numpy(np.int64)
        self._db_to_row = np.full(int(db_ids.max()) + 1 if db_ids.size else 0, -1, dtype=np.int64)
        self._db_to_row[db_ids] = np.arange(db_ids.size)
        self.active = self.items["active"].to_numpy(dtype=bool) if len(self.items) else np.zeros(0, bool)
        exploded = self.items["categories"].explode().dropna() if len(self.items) else pd.Series(dtype=object)
        self._cat_rows = exploded.astype(str).groupby(exploded.astype(str)).groups  # category -> row labels
        # What a ranked list depends on besides the scores: the items, their order, active flags and categories
        # (not popularity, which every event changes), so lists ranked on an earlier build stay reusable.
        layout = hashlib.blake2b(digest_size=16)
        layout.update(self.db_ids.tobytes())
        layout.update(self.active.tobytes())
        layout.update(pd.util.hash_pandas_object(exploded.astype(str), index=True).to_numpy().tobytes())
        layout.update(pd.util.hash_pandas_object(pd.Series(self.item_ids), index=False).to_numpy().tobytes())
        self.layout = layout.digest()

    @property
    def size(self) -> int:
        return len(self.item_ids)

    def history(self, exists: bool, db_ids: np.ndarray) -> UserHistory:
        """Database item ids -> a UserHistory of external ids; items newer than this catalogue are left out."""
        known = db_ids < self._db_to_row.size
        kept = db_ids[known]
        rows = self._db_to_row[kept]
        found = rows >= 0
        return UserHistory(exists, rows[found], self, kept[found])

    def rows_of(self, item_ids: np.ndarray | list[str]) -> np.ndarray:
        """Row of each external id, -1 where unknown: dict lookups, cheap for the ids of one request."""
        get = self.pos.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def category_mask(self, categories: list[str]) -> np.ndarray:
        """[C] bool: items in any of the categories."""
        mask = np.zeros(self.size, dtype=bool)
        for c in categories:  # a handful of requested categories, each a vectorised assignment
            rows = self._cat_rows.get(c)
            if rows is not None:
                mask[np.asarray(rows, dtype=np.int64)] = True
        return mask

    def rows_of_db_ids(self, db_ids: np.ndarray) -> np.ndarray:
        """Row of each database item id, -1 where this catalogue does not hold it."""
        out = np.full(db_ids.size, -1, dtype=np.int64)
        known = (db_ids >= 0) & (db_ids < self._db_to_row.size)
        out[known] = self._db_to_row[db_ids[known]]
        return out

    def with_popularity(self, popularity: np.ndarray, generation: int) -> Catalogue:
        """The same items (and everything derived from them, shared) with other popularity counts."""
        out = copy.copy(self)
        out.popularity, out.generation, out.built_at = popularity, generation, time.monotonic()
        return out

    def features_frame(self, rows: np.ndarray) -> pd.DataFrame:
        return self.items.iloc[rows]

    def aligned(self, lm: LoadedModel) -> tuple[np.ndarray, torch.Tensor]:
        """Catalogue row of each model column (-1 if gone) and the [I] active mask; cached per version."""
        key = f"{lm.name}:{lm.version}"
        cached = self._aligned.get(key)
        if cached is None:
            rows = self.rows_of(lm.item_ids)
            active = np.where(rows >= 0, self.active[np.maximum(rows, 0)], False) if self.size else rows >= 0
            cached = self._aligned[key] = (rows, torch.as_tensor(active, device=lm.device))
        return cached

    def model_cols(self, lm: LoadedModel) -> np.ndarray:
        """[C] the model column of each catalogue row, -1 where the model does not know the item."""
        key = f"{lm.name}:{lm.version}"
        cols = self._cols.get(key)
        if cols is None:
            cols = self._cols[key] = lm.items_of(self.item_ids)
        return cols


class CatalogueCache:
    """Keeps a recent Catalogue; at most one request at a time rebuilds it, the others use the old one.

    With ``watch`` (SQLite's ``DataVersion``) a catalogue past its ``ttl_s`` is kept as it is when no
    connection has committed since it was built. After a commit it is brought up to date, and only as far
    as needed: when no item was written (the catalogue_rewrite count, kept by triggers, migration 0004)
    and no event deleted or changed (history_rewrite, 0003), the events past the last id it counted are
    added to its popularity counts (a range scan of the primary key; the items, and every ranked list
    keyed on their layout, stay); otherwise, or for more than ``MAX_CHANGED_ROWS`` new events, it is
    loaded again (a catalogue query and a count over every interaction, ~25-35 ms of CPU on ML-100K).
    Without ``watch`` (PostgreSQL) it is loaded again at every expiry.
    """

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float = 10.0, watch: DataVersion | None = None) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self.watch = watch
        self.updates = 0  # catalogues brought up to date by their new events alone
        self._current: Catalogue | None = None
        self._version: int | None = None  # the watched data version the current catalogue was built at
        self._marks: CatalogueMarks | None = None  # where the current catalogue's counts stand (SQLite)
        self._lock = threading.Lock()

    def load(self) -> Catalogue:
        """Everything read again: the items and every popularity count."""
        follow = self.watch is not None and self.watch.usable
        with self.sessions() as session:
            marks = catalogue_marks(session=session) if follow else None  # read first: nothing counted twice
            items = catalogue_frame(session=session)
            pop = item_popularity(session=session, upto=marks.last_id if marks is not None else None)
        counts = items["db_id"].map(pop).fillna(0.0).to_numpy(np.float64) if len(items) else np.zeros(0)
        generation = self._current.generation + 1 if self._current is not None else 1
        self._marks = marks
        return Catalogue(items.reset_index(drop=True), counts, generation)

    def _update(self, current: Catalogue) -> Catalogue | None:
        """``current`` with the popularity of the events since its marks added; None when anything else
        changed (or too much did) and it must be loaded again."""
        before = self._marks
        if before is None:
            return None
        with self.sessions() as session:
            marks = catalogue_marks(session=session)
            if (
                marks is None
                or (marks.items, marks.rewrites) != (before.items, before.rewrites)
                or not before.last_id <= marks.last_id <= before.last_id + MAX_CHANGED_ROWS
            ):
                return None
            params = {"after": before.last_id, "upto": marks.last_id}
            ids = np.fromiter(session.execute(_ITEMS_OF_EVENTS, params).scalars(), dtype=np.int64)
        rows = current.rows_of_db_ids(ids)
        if (rows < 0).any():  # an item the catalogue does not hold (its insert bumps the count: not expected)
            return None
        self._marks = marks
        self.updates += 1
        popularity = current.popularity + np.bincount(rows, minlength=current.size)
        return current.with_popularity(popularity, current.generation + 1)

    def _rebuild(self) -> Catalogue:
        """Under the lock: the current catalogue, renewed, when nothing was committed since it was built;
        else brought up to date or loaded again (the version is read first, so a commit racing the reads
        only costs another round)."""
        version = self.watch() if self.watch is not None else None
        current = self._current
        if current is not None and version is not None and version == self._version:
            current.built_at = time.monotonic()
            return current
        updated = self._update(current) if current is not None and version is not None else None
        self._current = updated if updated is not None else self.load()
        self._version = version
        return self._current

    def get(self, max_age_s: float | None = None) -> Catalogue:
        """The current catalogue. With ``max_age_s`` (an id was not found) wait for one at most that old."""

        def stale(c: Catalogue | None) -> bool:
            return c is None or (max_age_s is not None and time.monotonic() - c.built_at > max_age_s)

        current = self._current
        if current is None or stale(current):
            with self._lock:
                if self._current is None or stale(self._current):
                    self._rebuild()
                assert self._current is not None
                return self._current
        if time.monotonic() - current.built_at > self.ttl_s and self._lock.acquire(blocking=False):
            try:
                current = self._rebuild()
            finally:
                self._lock.release()
        return current

    def peek(self) -> Catalogue | None:
        """The current catalogue if it is not past its TTL, else None: never a rebuild (for the event loop)."""
        current = self._current
        if current is None or time.monotonic() - current.built_at > self.ttl_s:
            return None
        return current

    def renew(self, ahead_s: float = 0.0) -> bool:
        """Off the request path (``ScoreRefresher``): what ``get`` does to an expired catalogue, done to one
        that expires within ``ahead_s``, so requests find it current. False when it was not due or another
        thread is rebuilding it."""
        current = self._current
        if current is None or time.monotonic() - current.built_at <= self.ttl_s - ahead_s:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._rebuild()
        finally:
            self._lock.release()
        return True

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()

    def invalidate(self) -> None:
        """Force a reload on next use (after catalogue writes in this process)."""
        self._version = None
        self._marks = None
        if self._current is not None:
            self._current.built_at = -1e18

"""Which users' histories changed, known without a query per request: SQLite's commit counter plus a scan
of the events committed since the last look. The response cache (``app.api.response_cache``) relies on it.

``PRAGMA data_version`` on a connection of its own changes whenever any other connection, in any process,
commits to the database file; reading it costs a few microseconds. When it moved, ``sync`` reads the
events past the last event id it saw and marks their users as changed at a new sequence number; an event
rewrite or deletion (``history_rewrite``, kept by triggers) or a bulk load marks every user. An answer
computed at sequence ``s`` for a user is still the answer as long as the database has not moved since the
last ``sync`` and the user was not marked after ``s``.

PostgreSQL has no such counter that is free to read: there ``ChangeFeed.open`` returns None and every
request reads the user's history (LISTEN/NOTIFY would be the way to add one).
"""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import Engine, bindparam, select

from app.db.tables import Interaction, User
from app.serving.catalogue import read_marks

# More new events than this between two syncs (a bulk load): every user is marked instead of each one.
MAX_SCANNED_EVENTS = 100_000

_USERS_AFTER = (
    select(User.external_id)
    .join(Interaction, Interaction.user_id == User.id)
    .where(Interaction.id > bindparam("after"), Interaction.id <= bindparam("upto"))
    .distinct()
)


class ChangeFeed:
    """Sequence numbers of history changes per user, for one SQLite database, kept in this process.

    ``seq`` counts the syncs that found changes. ``changed_at(user)`` is the sequence at which the user's
    history last changed as far as this process can tell: the user's own mark, or ``floor`` (every user,
    after a rewrite, a bulk load, or once the marks kept reach ``max_users`` and the oldest are dropped)."""

    def __init__(self, engine: Engine, path: str, max_users: int = 100_000) -> None:
        self.engine = engine
        self.max_users = max_users
        self.seq = 0
        self.floor = 0
        self._marks: dict[str, int] = {}  # user -> seq of their last change, oldest mark first
        self._counter = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._counter_lock = threading.Lock()  # the one connection is read from the loop and from sync
        self._sync_lock = threading.Lock()
        self._synced_version: int | None = None
        self._last_id = 0
        self._rewrites: int | None = None

    @classmethod
    def open(cls, engine: Engine, max_users: int = 100_000) -> ChangeFeed | None:
        """A feed for a file-backed SQLite engine; None for anything else."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return cls(engine, url.database, max_users)

    def close(self) -> None:
        with self._counter_lock:
            self._counter.close()

    def _version(self) -> int:
        with self._counter_lock:
            return int(self._counter.execute("PRAGMA data_version").fetchone()[0])

    def current(self) -> bool:
        """Nothing was committed since the last sync (cheap: no query)."""
        return self._synced_version is not None and self._version() == self._synced_version

    def changed_at(self, user_id: str) -> int:
        return max(self.floor, self._marks.get(user_id, 0))

    def sync(self) -> int:
        """Bring the marks up to date with the database; the sequence number an answer computed from now on
        is valid at. Blocking (reads the database when something was committed): call it off the event loop."""
        with self._sync_lock:
            version = self._version()  # read before the events: a commit after it moves the counter again
            if version == self._synced_version:
                return self.seq
            with self.engine.connect() as conn:
                marks = read_marks(conn)  # the catalogue's: the last event id and the event-rewrite count
                last_id, rewrites = marks.last_id, marks.rewrites
                first = self._synced_version is None
                everyone = (
                    first
                    or rewrites != self._rewrites
                    or last_id < self._last_id
                    or last_id - self._last_id > MAX_SCANNED_EVENTS
                )
                after = {"after": self._last_id, "upto": last_id}
                users = [] if everyone else list(conn.execute(_USERS_AFTER, after).scalars())
            if everyone or users:
                self.seq += 1
            if everyone:
                self.floor, self._marks = self.seq, {}
            for user in users:
                self._marks.pop(user, None)
                self._marks[user] = self.seq
            while len(self._marks) > self.max_users:  # the oldest marks go; the floor covers their users
                oldest = next(iter(self._marks))
                self.floor = max(self.floor, self._marks.pop(oldest))
            self._last_id, self._rewrites, self._synced_version = last_id, rewrites, version
            return self.seq

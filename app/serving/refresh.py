"""Background refresh: the cached scores of users with new events are recomputed before they ask again.

An event changes its user's history, so the score-cache entries of that user stop matching (their
fingerprint holds the history) and the user's next request would recompute them: for the hybrid, five
models for one user, the costliest thing a request can do. Instead every API process follows the
interaction table (``ChangeFeed``: a watermark on its primary key) and, a few times a second, or at once
when its history reader's sync has seen a user's new event (``wake``), hands the entries of the users
with new events that it holds to its serving lane as background work
(``RequestBatcher.submit_background``): they run when no request waits, one user at a time, and store
entries for the users' histories as they are now (``RecommendationService.refresh_steps``).

Nothing here decides what is served: a request uses an entry only when its own fingerprint, read at
request time, matches. A refresh that comes too late, or an event the feed misses (PostgreSQL can commit
a lower id after a higher one was read), only leaves that user's next request to compute its scores, as
it would without this. The same thread rebuilds the catalogue shortly before it expires, so requests do
not rebuild it themselves.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine

from app.serving.batching import Steps
from app.serving.history import MAX_CHANGED_ROWS, DataVersion, last_interaction_id, users_with_events
from app.serving.metrics import REFRESHES

log = logging.getLogger(__name__)

# Entries handed to the serving lane at a time (it runs them one per hop, between requests: see
# ``RequestBatcher``); between chunks the refresher checks whether it is stopping.
REFRESH_CHUNK = 4


class ChangeFeed:
    """The users with events past a watermark on the interaction id, read on demand (``poll``).

    On SQLite the database is read only when ``version`` (its ``PRAGMA data_version``) says some
    connection committed since the last poll; elsewhere each poll is one look-up of the largest id on the
    primary key, and a range scan of the new ids when there are any.
    """

    def __init__(self, engine: Engine, version: DataVersion | None = None, max_rows: int = MAX_CHANGED_ROWS) -> None:
        self.engine = engine
        self.version = version
        self.max_rows = max_rows  # more new events than this in one poll: a bulk load, not followed
        self.mark: int | None = None  # the largest interaction id seen; None until the first poll
        self.skipped = 0  # events passed over in bulk loads
        self._seen: int | None = None  # the data version of the last poll

    def poll(self) -> list[str]:
        """External ids of the users with events past the mark (each once), and the mark moved past them.

        The first poll only sets the mark: events from before the process started are not news."""
        version = self.version() if self.version is not None else None
        if version is not None and version == self._seen and self.mark is not None:
            return []  # nothing committed since the last poll
        with self.engine.connect() as conn:
            top = last_interaction_id(conn)
            mark = self.mark
            users: list[str] = []
            if mark is not None and mark < top <= mark + self.max_rows:
                users = users_with_events(conn, mark, top)
            elif mark is not None and top > mark:
                self.skipped += top - mark
        self.mark, self._seen = top, version  # also when ids went back (the table was emptied)
        return users


class ScoreRefresher:
    """A thread that, every ``interval_s``, polls ``feed`` and hands ``service.refresh_steps`` of the cached
    entries of the users it reports to ``submit`` (a callable that runs steps in the serving lane and
    returns each one's result or error), at most ``max_entries`` per round, ``REFRESH_CHUNK`` at a time."""

    def __init__(
        self,
        service: Any,  # RecommendationService (not imported: it imports this module's neighbours)
        feed: ChangeFeed,
        submit: Callable[[Sequence[Callable[[], Steps[Any]]]], list[Any]],
        interval_s: float,
        max_entries: int = 1024,
        stopping: threading.Event | None = None,
    ) -> None:
        """``stopping``: set by ``stop``; pass the event ``submit`` watches, so that it stops waiting too."""
        self.service = service
        self.feed = feed
        self.submit = submit
        self.interval_s = interval_s
        self.max_entries = max_entries
        self.stopping = stopping if stopping is not None else threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="score-refresh", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run a round now rather than at the end of the interval (some users are known to have new events)."""
        self._wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def tick(self) -> dict[str, int]:
        """One round: entries refreshed, found current (a request or an earlier round got there first) and
        failed. The catalogue is rebuilt first when it is about to expire."""
        svc = self.service
        counts = {"refreshed": 0, "current": 0, "failed": 0}
        if not svc.registry.ready:
            return counts
        svc.catalogue.renew(ahead_s=2 * self.interval_s)
        if not svc.cache.enabled:
            return counts
        users = self.feed.poll()
        keys = svc.cache.keys_of(users)[: self.max_entries] if users else []
        for start in range(0, len(keys), REFRESH_CHUNK):
            if self.stopping.is_set():
                break
            chunk = keys[start : start + REFRESH_CHUNK]
            for key, result in zip(chunk, self.submit([functools.partial(svc.refresh_steps, k) for k in chunk]),
                                   strict=True):  # fmt: skip
                if isinstance(result, BaseException):
                    counts["failed"] += 1
                    log.debug("score refresh failed", extra={"key": str(key), "error": repr(result)})
                else:
                    counts["refreshed" if result else "current"] += 1
        for result, n in counts.items():
            if n:
                REFRESHES.labels(result).inc(n)
        return counts

    def _run(self) -> None:
        while not self.stopping.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self.stopping.is_set():
                break
            try:
                self.tick()
            except Exception:  # noqa: BLE001  (the database may be briefly away; the next round retries)
                log.exception("score refresh round failed")

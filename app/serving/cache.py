"""A bounded per-process cache of users' score vectors, keyed so that it never serves a stale list.

An entry is the forward pass of one (requested model, user): the model that answered after any
fallback, its scores over the whole catalogue and how they were made. It is reused only while its
fingerprint matches the request's: the versions of every loaded model (any swap or activation
changes them) and a digest of the user's item history as the request reads it from the database
(any event ingested since, in any process, changes it). Nothing expires on a timer; filters,
exclude-seen, the active flags and top-N are applied to the cached scores on every request.

Each API process keeps its own cache: correctness comes from the key, not from invalidation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar, cast

from prometheus_client import Counter, Gauge

from app.serving.metrics import CACHE_ENTRIES, CACHE_REQUESTS

V = TypeVar("V")


class ScoreCache(Generic[V]):
    """LRU of at most ``size`` entries (0 disables it) and, with ``max_bytes``, at most that many bytes as
    ``weigh`` counts them; thread-safe, O(1) per call (amortised).

    ``get(key, fingerprint)`` answers ``(True, value)`` only when the entry stored under ``key``
    was stored with an equal ``fingerprint``; otherwise ``(False, None)`` and the caller computes
    and ``put``s, which replaces the outdated entry of that key.

    With ``group`` (key -> group, e.g. the user of a key), ``keys_of(groups)`` lists the keys held for
    those groups, from an index kept with the entries.
    """

    def __init__(
        self,
        size: int,
        max_bytes: int | None = None,
        weigh: Callable[[V], int] | None = None,
        *,
        lookups: Counter = CACHE_REQUESTS,
        entries: Gauge | None = CACHE_ENTRIES,
        group: Callable[[Hashable], Hashable] | None = None,
    ) -> None:
        """``lookups`` counts hits and misses (label ``result``); ``entries``, when given, tracks the size."""
        self._hit, self._miss, self._entries_gauge = lookups.labels("hit"), lookups.labels("miss"), entries
        self.size = max(0, int(size))
        self.max_bytes = max_bytes
        self.weigh = weigh or (lambda value: 0)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[Hashable, V, int]] = OrderedDict()
        self._group = group
        self._groups: dict[Hashable, set[Hashable]] = {}  # group -> its keys held (with ``group``)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, fingerprint: Hashable, *, count: bool = True) -> tuple[bool, V | None]:
        """With ``count`` False the look-up is not counted (``count_hit`` may count it once it is used)."""
        if not self.size:
            return False, None
        with self._lock:
            entry = self._entries.get(key)
            hit = entry is not None and entry[0] == fingerprint
            if hit:
                self._entries.move_to_end(key)
            if count:
                if hit:
                    self.hits += 1
                else:
                    self.misses += 1
        if count:
            (self._hit if hit else self._miss).inc()
        return (True, entry[1]) if hit and entry is not None else (False, None)

    def count_hit(self) -> None:
        """Count a hit found by an uncounted ``get``."""
        with self._lock:
            self.hits += 1
        self._hit.inc()

    def stored(self, key: Hashable) -> V | None:
        """The value stored under ``key``, whatever its fingerprint (not counted, not moved)."""
        with self._lock:
            entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def fresh(self, key: Hashable, fingerprint: Hashable) -> bool:
        """Whether ``key`` holds an entry stored with this ``fingerprint``; not counted as a look-up and the
        entry keeps its place (for background refreshes, which are not requests)."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry[0] == fingerprint

    def keys_of(self, groups: Iterable[Hashable]) -> list[Hashable]:
        """The keys held for any of ``groups`` (needs ``group``)."""
        with self._lock:
            return [k for g in groups for k in self._groups.get(g, ())]

    def through(self, key: Hashable, fingerprint: Hashable, compute: Callable[[], V]) -> V:
        """The value stored under ``key`` with this ``fingerprint``; else ``compute()``, stored and returned."""
        hit, value = self.get(key, fingerprint)
        if hit:
            return cast(V, value)
        value = compute()
        self.put(key, fingerprint, value)
        return value

    def put(self, key: Hashable, fingerprint: Hashable, value: V) -> None:
        if not self.size:
            return
        weight = int(self.weigh(value))
        if self.max_bytes is not None and weight > self.max_bytes:
            return  # larger than the whole budget: never kept
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[2]
            elif self._group is not None:
                self._groups.setdefault(self._group(key), set()).add(key)
            self._entries[key] = (fingerprint, value, weight)
            self.bytes += weight
            while len(self._entries) > self.size or (self.max_bytes is not None and self.bytes > self.max_bytes):
                gone, (_, _, gone_weight) = self._entries.popitem(last=False)
                self.bytes -= gone_weight
                if self._group is not None:
                    self._forget(gone)
            n = len(self._entries)
        if self._entries_gauge is not None:
            self._entries_gauge.set(n)

    def discard(self, key: Hashable) -> None:
        """Drop the entry of ``key``, if any."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[2]
                if self._group is not None:
                    self._forget(key)
            n = len(self._entries)
        if old is not None and self._entries_gauge is not None:
            self._entries_gauge.set(n)

    def _forget(self, key: Hashable) -> None:
        """Under the lock: ``key`` leaves its group's index."""
        assert self._group is not None
        g = self._group(key)
        keys = self._groups.get(g)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._groups[g]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._groups.clear()
            self.bytes = 0
        if self._entries_gauge is not None:
            self._entries_gauge.set(0)

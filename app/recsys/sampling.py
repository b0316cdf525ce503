"""Vectorised negative sampling: uniform draws, rejected by a sorted-key lookup and redrawn.

The lesson's sampler scans every interaction for every negative (quadratic); here a draw is
checked against the sorted array of (user * n_items + item) keys with one searchsorted.
"""

from __future__ import annotations

import numpy as np

from app.recsys.data import InteractionData


class NegativeSampler:
    """Draws items a user never interacted with, ``k`` per positive."""

    def __init__(self, data: InteractionData, seed: int = 0) -> None:
        self.n_items = data.n_items
        self.keys = np.unique(data.users * np.int64(data.n_items) + data.items)  # sorted positives
        counts = data.user_counts()
        self.full_users = np.flatnonzero(counts >= data.n_items)
        self.rng = np.random.default_rng(seed)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.n_items + items
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == keys if len(self.keys) else np.zeros(keys.shape, bool)

    def sample(self, users: np.ndarray, k: int = 1, max_rounds: int = 100) -> np.ndarray:
        """[len(users), k] negatives. Users who saw the whole catalogue get -1 (never a positive)."""
        users = np.asarray(users, dtype=np.int64)
        u = np.repeat(users, k)
        neg = self.rng.integers(0, self.n_items, size=u.shape[0])
        bad = np.flatnonzero(self.is_positive(u, neg))
        rounds = 0
        # Redraw only the collisions; their share shrinks geometrically for all but dense users.
        while bad.size and rounds < max_rounds:
            neg[bad] = self.rng.integers(0, self.n_items, size=bad.size)
            bad = bad[self.is_positive(u[bad], neg[bad])]
            rounds += 1
        if bad.size:
            neg[bad] = self._exact(u[bad])
        return neg.reshape(len(users), k)

    def _exact(self, users: np.ndarray) -> np.ndarray:
        """For the few users whose draws keep colliding: pick uniformly among their unseen items."""
        out = np.full(users.shape[0], -1, dtype=np.int64)
        uniq, inv = np.unique(users, return_inverse=True)
        for j, user in enumerate(uniq):  # only users with almost the whole catalogue reach here
            lo, hi = np.searchsorted(self.keys, [user * self.n_items, (user + 1) * self.n_items])
            seen = self.keys[lo:hi] - user * self.n_items
            free = np.setdiff1d(np.arange(self.n_items), seen, assume_unique=True)
            sel = inv == j
            if free.size:
                out[sel] = self.rng.choice(free, size=int(sel.sum()))
        return out

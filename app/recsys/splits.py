"""Deterministic train/validation/test splits of one InteractionData snapshot (shared id maps)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from app.recsys.data import InteractionData


@dataclass
class Split:
    train: InteractionData
    valid: InteractionData
    test: InteractionData
    name: str = ""


def _position_from_end(data: InteractionData) -> np.ndarray:
    """[N] 1 for each user's latest interaction, 2 for the one before, ..."""
    return data.indptr[data.users + 1] - np.arange(data.n_interactions)


def leave_one_out(data: InteractionData, *, min_history: int = 3) -> Split:
    """Each user's last item by time is the test item and the one before it the validation item.

    Users with fewer than ``min_history`` interactions keep everything in training.
    """
    back = _position_from_end(data)
    eligible = data.user_counts()[data.users] >= min_history
    test = eligible & (back == 1)
    valid = eligible & (back == 2)
    return Split(data.subset(~(test | valid)), data.subset(valid), data.subset(test), "loo")


def temporal_split(data: InteractionData, *, valid_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """Global cut by time: the last ``test_frac`` of events is test, the slice before it validation."""
    order = np.lexsort((np.arange(data.n_interactions), data.ts))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    n = data.n_interactions
    test = rank >= n - int(round(n * test_frac))
    valid = ~test & (rank >= n - int(round(n * (test_frac + valid_frac))))
    return Split(data.subset(~(test | valid)), data.subset(valid), data.subset(test), "temporal")


def ratio_split(data: InteractionData, *, valid_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0) -> Split:
    """Per-user random split: each user's events are shuffled and cut by the given fractions."""
    rng = np.random.default_rng(seed)
    key = rng.random(data.n_interactions)
    order = np.lexsort((key, data.users))
    pos = np.empty_like(order)
    pos[order] = np.arange(len(order)) - data.indptr[data.users[order]]
    counts = data.user_counts()[data.users].astype(np.float64)
    n_test = np.floor(counts * test_frac).astype(np.int64)
    n_valid = np.floor(counts * valid_frac).astype(np.int64)
    test = pos < n_test
    valid = ~test & (pos < n_test + n_valid)
    return Split(data.subset(~(test | valid)), data.subset(valid), data.subset(test), "ratio")


def file_split(
    train: pd.DataFrame,
    test: pd.DataFrame,
    items: pd.DataFrame | None = None,
    *,
    valid_frac: float = 0.1,
    seed: int = 0,
    text_buckets: int = 0,
) -> Split:
    """An explicit split such as MovieLens u1.base/u1.test; validation is carved from the train file."""
    both = pd.concat([train, test], ignore_index=True)
    data = InteractionData.from_frames(both, items, text_buckets=text_buckets, dedupe=False)
    # InteractionData sorts rows by (user, time, input order); apply the same order to the flags.
    users = data.user_index(both["user_id"].tolist())
    order = np.lexsort((np.arange(len(both)), both["ts"].to_numpy(dtype=np.int64), users))
    is_test = (np.arange(len(both)) >= len(train))[order]
    rng = np.random.default_rng(seed)
    is_valid = ~is_test & (rng.random(len(is_test)) < valid_frac)
    return Split(data.subset(~(is_test | is_valid)), data.subset(is_valid), data.subset(is_test), "file")

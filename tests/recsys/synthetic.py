"""Small synthetic data sets with planted structure, built in code for the recommender tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from app.recsys.data import InteractionData

CATEGORIES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]


def items_frame(n_items: int = 60, seed: int = 0) -> pd.DataFrame:
    """Items spread evenly over categories, with a year attribute and a title."""
    rng = np.random.default_rng(seed)
    cat = np.arange(n_items) % len(CATEGORIES)
    return pd.DataFrame(
        {
            "item_id": [f"i{j}" for j in range(n_items)],
            "title": [f"{CATEGORIES[c]} movie {j}" for j, c in enumerate(cat)],
            "categories": [[CATEGORIES[c]] for c in cat],
            "attributes": [{"year": int(y)} for y in rng.integers(1950, 2020, n_items)],
        }
    )


def taste_frame(n_users: int = 80, n_items: int = 60, per_user: int = 20, seed: int = 0) -> pd.DataFrame:
    """Each user likes one category: most events (and high ratings) fall in it, a few elsewhere."""
    rng = np.random.default_rng(seed)
    n_cat = len(CATEGORIES)
    fav = np.arange(n_users) % n_cat
    user = np.repeat(np.arange(n_users), per_user)
    in_taste = rng.random(user.size) < 0.85
    slot = rng.integers(0, n_items // n_cat, user.size)
    other = (fav[user] + rng.integers(1, n_cat, user.size)) % n_cat
    cat = np.where(in_taste, fav[user], other)
    item = slot * n_cat + cat
    rating = np.where(in_taste, rng.choice([4.0, 4.5, 5.0], user.size), rng.choice([1.0, 1.5, 2.0], user.size))
    ts = 1_000_000 + user * 1000 + np.tile(np.arange(per_user), n_users)
    return pd.DataFrame(
        {"user_id": [f"u{u}" for u in user], "item_id": [f"i{j}" for j in item], "value": rating, "ts": ts}
    )


def chain_frame(n_users: int = 120, n_items: int = 30, length: int = 12, seed: int = 0) -> pd.DataFrame:
    """Sequences where item i is always followed by item i+1 (mod n_items), from a random start."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, n_items, n_users)
    item = (start[:, None] + np.arange(length)[None, :]) % n_items  # [U, L]
    user = np.repeat(np.arange(n_users), length)
    ts = 1_000_000 + np.tile(np.arange(length), n_users) * 60 + user
    return pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in user],
            "item_id": [f"i{j}" for j in item.ravel()],
            "value": np.full(user.size, 4.0),
            "ts": ts,
        }
    )


def taste_data(**kw) -> InteractionData:
    n_items = kw.get("n_items", 60)
    return InteractionData.from_frames(taste_frame(**kw), items_frame(n_items))


def with_newcomer(train: InteractionData, n_events: int = 5) -> InteractionData:
    """``train``'s users plus one absent from it (row ``train.n_users``) who saw items 0..n_events-1."""
    items = np.arange(n_events)
    return InteractionData(
        user_ids=np.append(train.user_ids, "newcomer").astype(object),
        item_ids=train.item_ids,
        users=np.full(len(items), train.n_users),
        items=items,
        ratings=np.full(len(items), np.nan, dtype=np.float32),
        ts=np.arange(len(items)),
        item_features=np.zeros((train.n_items, 0), dtype=np.float32),
    )

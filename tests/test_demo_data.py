"""The synthetic data set has the structure it promises: long tail, tastes, drift, sequences, ratings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.ingest.demo import DemoConfig, generate

CFG = DemoConfig(users=500, items=800, events=25_000, seed=7, end_ts=1_700_000_000)  # ML-100K density


@pytest.fixture(scope="module")
def demo() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    items, users, chunks = generate(CFG, chunk_size=8_000)
    events = pd.concat(list(chunks), ignore_index=True)
    return items, users, events.sort_values(["user_id", "ts"], kind="stable", ignore_index=True)


def test_sizes_schema_and_determinism(demo: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    items, users, events = demo
    assert len(items) == CFG.items and len(users) == CFG.users
    assert 0.95 * CFG.events <= len(events) <= CFG.events
    assert not events.duplicated(["user_id", "item_id"]).any()  # one rating per user and item
    assert set(np.unique(events["value"])) <= set(np.arange(1, 11) / 2)
    assert events["ts"].max() <= CFG.end_ts and (events.groupby("user_id")["ts"].diff().dropna() >= 0).all()
    assert all(isinstance(c, list) and 1 <= len(c) <= 2 for c in items["categories"])
    assert all(t.endswith(f"({a['year']})") for t, a in zip(items["title"], items["attributes"], strict=True))
    again = pd.concat(list(generate(CFG, chunk_size=8_000)[2]), ignore_index=True)
    other = pd.concat(list(generate(DemoConfig(**{**CFG.__dict__, "seed": 8}), chunk_size=8_000)[2]))
    assert again.sort_values(["user_id", "ts"], kind="stable", ignore_index=True).equals(events)
    assert not other["item_id"].head(100).equals(events["item_id"].head(100))


def test_popularity_has_a_long_tail(demo: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    counts = demo[2]["item_id"].value_counts().to_numpy()  # descending
    top_decile = counts[: CFG.items // 10].sum() / counts.sum()
    assert top_decile > 0.3 and counts[0] > 10 * np.median(counts)


def genre_of(items: pd.DataFrame, events: pd.DataFrame) -> np.ndarray:
    primary = dict(zip(items["item_id"], (c[0] for c in items["categories"]), strict=True))
    return events["item_id"].map(primary).to_numpy()


def test_tastes_concentrate_on_genres_and_drive_ratings(demo: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    items, _, events = demo
    events = events.assign(genre=genre_of(items, events))
    share = events.groupby(["user_id", "genre"]).size() / events.groupby("user_id").size()
    top_share = share.groupby(level=0).max()
    assert top_share.mean() > 3 / 18  # far above a uniform 1/18
    top_genre = share.groupby(level=0).idxmax().map(lambda pair: pair[1])
    in_top = events["genre"].to_numpy() == events["user_id"].map(top_genre).to_numpy()
    assert events["value"][in_top].mean() > events["value"][~in_top].mean() + 0.3


def _successor_hit_rate(events: pd.DataFrame) -> float:
    """How often the next item is the one that most often follows the previous item."""
    same = events["user_id"].to_numpy()[1:] == events["user_id"].to_numpy()[:-1]
    pairs = pd.DataFrame({"prev": events["item_id"].to_numpy()[:-1], "next": events["item_id"].to_numpy()[1:]})[same]
    best = pairs.groupby("prev")["next"].agg(lambda s: s.value_counts().index[0])
    return float((pairs["next"].to_numpy() == pairs["prev"].map(best).to_numpy()).mean())


def test_sequences_carry_signal(demo: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    events = demo[2]
    shuffled = events.assign(ts=np.random.default_rng(0).permutation(len(events))).sort_values(
        ["user_id", "ts"], kind="stable", ignore_index=True
    )
    assert _successor_hit_rate(events) > 0.3 > 2 * _successor_hit_rate(shuffled)


def test_interest_drifts_over_time(demo: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    items, _, events = demo
    events = events.assign(genre=genre_of(items, events))
    events["pos"] = events.groupby("user_id").cumcount() / events.groupby("user_id")["ts"].transform("size")

    def drift(frame: pd.DataFrame) -> float:
        long = frame[frame.groupby("user_id")["ts"].transform("size") >= 40]
        early = long[long["pos"] < 0.25].groupby("user_id")["genre"].agg(lambda g: g.value_counts().index[0])
        late = long[long["pos"] >= 0.75].groupby("user_id")["genre"]
        return float(np.mean([(g != early[u]).mean() for u, g in late]))

    shuffled = events.assign(pos=events.groupby("user_id")["pos"].transform(np.random.default_rng(1).permutation))
    assert drift(events) > drift(shuffled) + 0.1

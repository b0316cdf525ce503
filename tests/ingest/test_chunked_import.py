"""`deeprec import movielens` stores the same rows whatever its chunk size, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db import bulk
from app.db.frames import interactions_frame, items_frame, users_frame
from app.db.session import make_sessionmaker
from app.ingest.movielens import import_movielens
from tests.ingest.support import reset


def stored(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Events, items and users by their external ids: chunks change the order rows are created in, not them."""
    with make_sessionmaker(engine)() as session:
        events = interactions_frame(session=session)
        items = items_frame(session=session).drop(columns="created_at_ts")
        users = users_frame(session=session).drop(columns="created_at_ts")
    return {
        "events": sorted(map(tuple, events.astype(str).to_numpy().tolist())),
        "items": sorted(map(tuple, items.astype(str).to_numpy().tolist())),
        "users": sorted(map(tuple, users.astype(str).to_numpy().tolist())),
    }


def write_ml_latest(path: Path, n: int = 60) -> Path:
    """ratings.csv and movies.csv in the ML-25M layout, with a repeated row that must be stored once."""
    path.mkdir()
    rng = np.random.default_rng(2)
    ratings = pd.DataFrame(
        {
            "userId": rng.integers(1, 9, n),
            "movieId": rng.integers(1, 15, n),
            "rating": rng.integers(1, 11, n) / 2,
            "timestamp": 1_500_000_000 + rng.integers(0, 10_000, n),
        }
    )
    pd.concat([ratings, ratings.iloc[[4]]]).to_csv(path / "ratings.csv", index=False)
    movies = pd.DataFrame(
        {"movieId": range(1, 16), "title": [f"Film {i} (19{80 + i})" for i in range(1, 16)], "genres": "Drama|War"}
    )
    movies.to_csv(path / "movies.csv", index=False)
    return path


@pytest.mark.parametrize("copy", [False, True])
def test_tiny_chunks_store_what_one_chunk_stores(
    settings: Settings, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy: bool
) -> None:
    folder = write_ml_latest(tmp_path / "ml")
    sessions = make_sessionmaker(engine)
    monkeypatch.setattr(bulk, "COPY_MIN_ROWS", 1 if copy else 10**9)  # COPY on PostgreSQL, or not
    whole = import_movielens(folder, settings, sessions, chunk_size=10_000)
    expected = stored(engine)
    reset(engine)
    chunked = import_movielens(folder, settings, sessions, chunk_size=7)
    assert stored(engine) == expected
    assert (whole.events, whole.inserted, whole.duplicates) == (chunked.events, chunked.inserted, chunked.duplicates)
    assert whole.events == 61 and whole.duplicates == 1 and whole.items == 15
    again = import_movielens(folder, settings, sessions, chunk_size=7)
    assert again.inserted == 0 and again.duplicates == 61  # a re-run stores nothing twice

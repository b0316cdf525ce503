"""The serving catalogue after a commit on MovieLens-100K (SQLite): brought up to date from the new events
against loaded again, in one process, CPU time per rebuild.

    python bench/catalogue.py [--events 20] [--commits 20]

ML-100K is imported into a fresh SQLite file in a temporary directory (the data is read from
DEEPREC_ML100K_DIR, never copied into the repository). Each commit adds --events events (new ids,
existing users and items, through the repository as the API does); after each, the catalogue is
brought up to date (``CatalogueCache`` watching the data version: only the new events are counted),
then loaded again from scratch (``invalidate``), and both are timed. The counts of the two are checked
to be equal every time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from app.paths import ml100k_available, ml100k_dir  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20, help="events per commit")
    p.add_argument("--commits", type=int, default=20)
    args = p.parse_args()
    if not ml100k_available():
        sys.exit(f"skipped: MovieLens 100K not found at {ml100k_dir()} (set DEEPREC_ML100K_DIR)")
    from serve import load_movielens

    from app.config import Settings
    from app.db.repository import add_interactions
    from app.db.session import make_engine, make_sessionmaker
    from app.serving.history import CatalogueCache, DataVersion

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, database_url=f"sqlite:///{Path(tmp) / 'deeprec.db'}")  # type: ignore[call-arg]
        load_movielens(settings)
        engine = make_engine(settings)
        sessions = make_sessionmaker(engine)
        cache = CatalogueCache(sessions, ttl_s=0.0, watch=DataVersion(engine))
        cache.get()
        rng = np.random.default_rng(0)
        updated, loaded = [], []
        for _ in range(args.commits):
            rows = pd.DataFrame({
                "user_id": rng.integers(1, 944, args.events).astype(str),
                "item_id": rng.integers(1, 1683, args.events).astype(str),
                "type": "view", "value": float("nan"), "ts": int(time.time()),
            })  # fmt: skip
            with sessions() as session:
                add_interactions(session=session, rows=rows)
                session.commit()
            c0 = time.thread_time()
            up = cache.get()
            updated.append(time.thread_time() - c0)
            cache.invalidate()
            c0 = time.thread_time()
            full = cache.get()
            loaded.append(time.thread_time() - c0)
            assert np.array_equal(up.popularity, full.popularity), "the updated counts differ from a full load"
        cache.close()
        engine.dispose()
    print(f"{args.commits} commits of {args.events} events, catalogue of 1,682 items over 100,000+ events")
    print(f"brought up to date: median {statistics.median(updated) * 1e3:.2f} ms of CPU ({cache.updates} updates)")
    print(f"loaded again:       median {statistics.median(loaded) * 1e3:.2f} ms of CPU")


if __name__ == "__main__":
    main()

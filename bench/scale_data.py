"""Data at scale: an ML-25M-sized ratings file, and the training snapshot read of a large database.

    .venv/bin/python bench/scale_data.py ml25m DIR [--rows 25000000] [--movies 62423] [--users 162541]
        writes DIR/ratings.csv and DIR/movies.csv in ML-25M's format (then `deeprec import movielens DIR`)
    .venv/bin/python bench/scale_data.py snapshot
        reads the training snapshot of DEEPREC_DATABASE_URL as the job runner does and prints its size

Run each under `/usr/bin/time -v` for the peak RSS (BENCHMARKS.md "Data at scale" has the commands).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

BLOCK = 1_000_000  # rows written per block: the file is written in bounded memory too


def write_ml25m(folder: Path, rows: int, movies: int, users: int, seed: int = 0) -> None:
    """ratings.csv (userId,movieId,rating,timestamp) with Zipf-like movie popularity, and movies.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight = 1.0 / np.arange(1, movies + 1) ** 0.9
    cdf = np.cumsum(weight) / weight.sum()
    genres = np.array(["Action", "Comedy", "Drama", "Thriller", "Romance", "Sci-Fi", "Horror", "Children"])
    ids = np.arange(1, movies + 1)
    pd.DataFrame(
        {
            "movieId": ids,
            "title": np.char.add(np.char.add("Movie ", ids.astype(str)), " (1999)"),
            "genres": np.char.add(np.char.add(rng.choice(genres, movies), "|"), rng.choice(genres, movies)),
        }
    ).to_csv(folder / "movies.csv", index=False)
    with open(folder / "ratings.csv", "w") as out:
        out.write("userId,movieId,rating,timestamp\n")
        for start in range(0, rows, BLOCK):
            n = min(BLOCK, rows - start)
            user = np.sort(rng.integers(1, users + 1, n))  # ML files are grouped by user
            block = pd.DataFrame(
                {
                    "userId": user,
                    "movieId": ids[np.searchsorted(cdf, rng.random(n))],
                    "rating": rng.integers(1, 11, n) / 2,
                    "timestamp": rng.integers(789_652_009, 1_574_327_703, n),
                }
            )
            block.to_csv(out, header=False, index=False)


def read_snapshot() -> None:
    from app.config import get_settings
    from app.jobs.snapshot import database_data

    start = time.perf_counter()
    data, max_id = database_data(get_settings())
    seconds = time.perf_counter() - start
    print(f"snapshot: {len(data.users):,} events, {data.n_users:,} users, {data.n_items:,} items in {seconds:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    ml = sub.add_parser("ml25m")
    ml.add_argument("folder", type=Path)
    ml.add_argument("--rows", type=int, default=25_000_095)
    ml.add_argument("--movies", type=int, default=62_423)
    ml.add_argument("--users", type=int, default=162_541)
    sub.add_parser("snapshot")
    args = parser.parse_args()
    if args.what == "ml25m":
        start = time.perf_counter()
        write_ml25m(args.folder, args.rows, args.movies, args.users)
        print(f"wrote {args.rows:,} ratings to {args.folder} in {time.perf_counter() - start:.1f}s")
    else:
        read_snapshot()


if __name__ == "__main__":
    main()

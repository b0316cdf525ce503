"""MovieLens folders (ml-100k, ml-1m, ml-latest-small) read with pandas into the frames the core uses.

Interactions: user_id, item_id, value (the rating), ts (unix seconds). Items: item_id, title,
categories (genres), attributes ({"year": ...} where the title or release date has one).
This is the one MovieLens parser of the project: importers and evaluation both call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
RATING_COLUMNS = ["user_id", "item_id", "value", "ts"]


@dataclass
class MovieLens:
    """One MovieLens folder; ``rating_train``/``rating_test`` are u1.base/u1.test where present."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    rating_train: pd.DataFrame | None = None
    rating_test: pd.DataFrame | None = None


def detect_format(path: Path) -> str:
    """'ml-100k' (u.data), 'ml-1m' (ratings.dat) or 'ml-latest' (ratings.csv)."""
    path = Path(path)
    for name, marker in (("ml-100k", "u.data"), ("ml-1m", "ratings.dat"), ("ml-latest", "ratings.csv")):
        if (path / marker).is_file():
            return name
    raise FileNotFoundError(f"{path} is not a MovieLens folder: expected u.data, ratings.dat or ratings.csv")


def load_movielens(path: Path | str) -> MovieLens:
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "ml-100k":
        train, test = path / "u1.base", path / "u1.test"
        split = (read_ml100k_ratings(train), read_ml100k_ratings(test)) if train.is_file() and test.is_file() else None
        items = read_ml100k_items(path / "u.item") if (path / "u.item").is_file() else _bare_items()
        return MovieLens(fmt, read_ml100k_ratings(path / "u.data"), items, *(split or (None, None)))
    if fmt == "ml-1m":
        ratings = _read_dat(path / "ratings.dat", RATING_COLUMNS)
        items = _bare_items()
        if (path / "movies.dat").is_file():
            items = _items_from_genre_strings(_read_dat(path / "movies.dat", ["item_id", "title", "genres"]))
        return MovieLens(fmt, _typed(ratings), items)
    ratings = pd.read_csv(path / "ratings.csv").rename(
        columns={"userId": "user_id", "movieId": "item_id", "rating": "value", "timestamp": "ts"}
    )
    items = _bare_items()
    if (path / "movies.csv").is_file():
        raw = pd.read_csv(path / "movies.csv").rename(columns={"movieId": "item_id"})
        items = _items_from_genre_strings(raw)
    return MovieLens(fmt, _typed(ratings[RATING_COLUMNS]), items)


def read_ml100k_ratings(path: Path) -> pd.DataFrame:
    """u.data, u1.base, u1.test: tab-separated user, item, rating, timestamp."""
    return _typed(pd.read_csv(path, sep="\t", names=RATING_COLUMNS))


def read_ml100k_items(path: Path) -> pd.DataFrame:
    """u.item: id|title|release date|video date|url|19 genre flags, latin-1."""
    cols = ["item_id", "title", "release", "video", "url", *ML100K_GENRES]
    raw = pd.read_csv(path, sep="|", names=cols, encoding="latin-1", dtype={"title": str, "release": str})
    rows, genre = np.nonzero(raw[ML100K_GENRES].fillna(0).to_numpy(dtype=bool))  # one per set flag, row-major
    categories = pd.Series(np.asarray(ML100K_GENRES, dtype=object)[genre]).groupby(rows).agg(list)
    categories = categories.reindex(np.arange(len(raw)))
    year = _title_year(raw["title"]).fillna(pd.to_datetime(raw["release"], format="%d-%b-%Y", errors="coerce").dt.year)
    return _items_frame(raw["item_id"], raw["title"], categories, year)


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    """ml-1m's '::'-separated, latin-1 files."""
    return pd.read_csv(path, sep="::", engine="python", names=names, encoding="latin-1")


def _items_from_genre_strings(raw: pd.DataFrame) -> pd.DataFrame:
    genres = raw["genres"].fillna("").astype(str).replace("(no genres listed)", "")
    categories = genres.str.split("|").apply(lambda gs: [g for g in gs if g])
    return _items_frame(raw["item_id"], raw["title"], categories, _title_year(raw["title"]))


def _items_frame(ids: pd.Series, titles: pd.Series, categories: pd.Series, year: pd.Series) -> pd.DataFrame:
    cats = categories.apply(lambda c: c if isinstance(c, list) else [])
    year_vals = year.to_numpy(dtype=np.float64)
    attributes = [{"year": int(y)} if np.isfinite(y) else {} for y in year_vals]
    return pd.DataFrame(
        {
            "item_id": ids.astype(str).to_numpy(),
            "title": titles.fillna("").astype(str).str.strip().to_numpy(),
            "categories": cats.to_numpy(),
            "attributes": attributes,
        }
    )


def _title_year(titles: pd.Series) -> pd.Series:
    return pd.to_numeric(titles.astype(str).str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce")


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": df["user_id"].astype(str).to_numpy(),
            "item_id": df["item_id"].astype(str).to_numpy(),
            "value": df["value"].astype(np.float32).to_numpy(),
            "ts": df["ts"].astype(np.int64).to_numpy(),
        }
    )


def _bare_items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": [], "title": [], "categories": [], "attributes": []})

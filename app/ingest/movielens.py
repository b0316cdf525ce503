"""`deeprec import movielens PATH`: ML-100K, ML-1M and ML-latest(-small)/ML-25M folders.

Genres become categories by name, years become the `year` attribute, user demographics become
user attributes. Ratings stream in chunks; each gets the event_id ml:user:item:ts.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.ingest.loader import ImportReport, Loader, add_event_ids, check_events

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
FORMATS = {"u.data": "ml-100k", "ratings.dat": "ml-1m", "ratings.csv": "ml-latest"}


def detect_format(path: Path) -> str:
    for marker, name in FORMATS.items():
        if (path / marker).is_file():
            return name
    raise FileNotFoundError(f"{path} is not a MovieLens folder: expected u.data, ratings.dat or ratings.csv")


def _title_year(titles: pd.Series) -> pd.Series:
    return pd.to_numeric(titles.str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce")


def _items(ids: pd.Series, titles: pd.Series, categories: pd.Series, year: pd.Series) -> pd.DataFrame:
    years = year.to_numpy(np.float64)
    return pd.DataFrame(
        {
            "item_id": ids.astype(str).str.strip().to_numpy(),
            "title": titles.fillna("").astype(str).str.strip().to_numpy(),
            "categories": categories.to_numpy(),
            "attributes": [{"year": int(y)} if np.isfinite(y) else {} for y in years],
        }
    )


def _split_dat(path: Path, names: list[str]) -> pd.DataFrame:
    """ML-1M '::'-separated latin-1 files; titles may hold ':' so split on the two-character separator."""
    lines = pd.Series(path.read_text(encoding="latin-1").splitlines())
    lines = lines[lines.str.strip() != ""]
    return lines.str.split("::", n=len(names) - 1, expand=True).set_axis(names, axis=1)


def _genre_lists(genres: pd.Series) -> pd.Series:
    cleaned = genres.fillna("").astype(str).replace("(no genres listed)", "")
    return cleaned.str.split("|").map(lambda gs: [g for g in gs if g])


def read_items(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "ml-100k":
        genres = list(ML100K_GENRES)
        if (path / "u.genre").is_file():
            table = _split_pipe(path / "u.genre", 2)
            genres = table.sort_values(1, key=lambda s: s.astype(int))[0].tolist()
        raw = pd.read_csv(path / "u.item", sep="|", header=None, encoding="latin-1", dtype=str, quoting=csv.QUOTE_NONE)
        flags = raw.iloc[:, 5 : 5 + len(genres)].fillna("0").astype(int).to_numpy(bool)  # [n_items, n_genres]
        rows, cols = np.nonzero(flags)
        cats = pd.Series(np.asarray(genres, dtype=object)[cols]).groupby(rows).agg(list)
        cats = cats.reindex(range(len(raw))).map(lambda c: c if isinstance(c, list) else [])
        released = pd.to_datetime(raw[2], format="%d-%b-%Y", errors="coerce").dt.year
        return _items(raw[0], raw[1], cats, _title_year(raw[1]).fillna(released))
    if fmt == "ml-1m":
        raw = _split_dat(path / "movies.dat", ["item_id", "title", "genres"])
    else:
        raw = pd.read_csv(path / "movies.csv", dtype=str).rename(columns={"movieId": "item_id"})
    return _items(raw["item_id"], raw["title"], _genre_lists(raw["genres"]), _title_year(raw["title"].astype(str)))


def _split_pipe(path: Path, n: int) -> pd.DataFrame:
    lines = pd.Series(path.read_text(encoding="latin-1").splitlines())
    return lines[lines.str.strip() != ""].str.split("|", n=n - 1, expand=True).reset_index(drop=True)


def read_users(path: Path, fmt: str) -> pd.DataFrame | None:
    """user_id and attributes; ML-latest has no user file."""
    if fmt == "ml-100k" and (path / "u.user").is_file():
        raw = _split_pipe(path / "u.user", 5).set_axis(["user_id", "age", "gender", "occupation", "zip"], axis=1)
        raw["age"] = pd.to_numeric(raw["age"], errors="coerce").astype("Int64")
    elif fmt == "ml-1m" and (path / "users.dat").is_file():
        raw = _split_dat(path / "users.dat", ["user_id", "gender", "age_group", "occupation", "zip"])
        for col in ("age_group", "occupation"):
            raw[col] = pd.to_numeric(raw[col], errors="coerce").astype("Int64")
    else:
        return None
    attrs = raw.drop(columns="user_id").astype(object).where(raw.drop(columns="user_id").notna(), None)
    return pd.DataFrame({"user_id": raw["user_id"].str.strip(), "attributes": attrs.to_dict("records")})


def read_ratings(path: Path, fmt: str, chunk_size: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """(line number of the chunk's first row, frame with user_id, item_id, type, value, ts)."""
    names = ["user_id", "item_id", "value", "ts"]
    dtypes = {"user_id": str, "item_id": str, "value": "float64", "ts": "float64"}
    if fmt == "ml-100k":
        reader = pd.read_csv(path / "u.data", sep="\t", header=None, names=names, dtype=dtypes, chunksize=chunk_size)
        line = 1
    elif fmt == "ml-1m":  # '::' read as ':' by the fast C parser: the empty columns between are skipped
        padded = ["user_id", "_", "item_id", "__", "value", "___", "ts"]
        reader = pd.read_csv(
            path / "ratings.dat", sep=":", header=None, names=padded, usecols=names, dtype=dtypes, chunksize=chunk_size
        )
        line = 1
    else:
        reader = pd.read_csv(
            path / "ratings.csv",
            header=0,
            names=names,
            dtype=dtypes,
            chunksize=chunk_size,
        )
        line = 2
    for chunk in reader:
        frame = chunk[names].reset_index(drop=True).assign(type="rating")
        yield line, frame[["user_id", "item_id", "type", "value", "ts"]]
        line += len(chunk)


def import_movielens(
    path: Path, settings: Settings, sessions: sessionmaker[Session], *, chunk_size: int = 50_000
) -> ImportReport:
    """Items, then users, then ratings in chunks of chunk_size (one transaction each)."""
    fmt = detect_format(path)
    loader = Loader(sessions)
    has_items = (path / {"ml-100k": "u.item", "ml-1m": "movies.dat", "ml-latest": "movies.csv"}[fmt]).is_file()
    if has_items:
        loader.items(read_items(path, fmt))
    users = read_users(path, fmt)
    if users is not None:
        loader.users(users)

    def checked() -> Iterator[pd.DataFrame]:
        for first_line, frame in read_ratings(path, fmt, chunk_size):
            check_events(frame, settings, first_line=first_line)
            yield add_event_ids(frame, "ml")

    loader.events(checked())
    return loader.finish()

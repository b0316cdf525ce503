"""`deeprec import movielens|csv` and `deeprec demo-data` through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session

from app import cli
from app.config import Settings, get_settings
from app.db import repository as repo
from app.ingest.movielens import ML100K_GENRES
from app.paths import ml100k_available, ml100k_dir

GENRES = ML100K_GENRES
Run = Callable[..., int]
Out = pytest.CaptureFixture[str]


@pytest.fixture
def deeprec(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., int]]:
    """Runs `deeprec ARGS` against the test database."""
    monkeypatch.setenv("DEEPREC_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DEEPREC_MODELS_DIR", str(settings.models_dir))
    monkeypatch.setenv("DEEPREC_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    yield lambda *argv: cli.main([str(a) for a in argv])
    get_settings.cache_clear()


def flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


def write_ml100k(path: Path) -> Path:
    path.mkdir()
    (path / "u.data").write_text("1\t10\t4\t881250949\n1\t20\t3\t881250950\n2\t10\t5\t881250951\n3\t30\t1\t881250952\n")
    items = [
        f"10|Café Society (1995)|01-Jan-1995||http://x|{flags('Comedy', 'Romance')}",
        f"20|Alien|05-Jul-1979||http://y|{flags('Horror', 'Sci-Fi')}",
        f"30|unknown|||http://z|{flags('unknown')}",
    ]
    (path / "u.item").write_bytes("\n".join(items).encode("latin-1") + b"\n")
    (path / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    (path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    return path


def write_ml1m(path: Path) -> Path:
    path.mkdir()
    (path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    movies = "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Star Wars: Episode IV (1977)::Action|Sci-Fi\n"
    (path / "movies.dat").write_bytes(movies.encode("latin-1"))
    (path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return path


def write_ml_latest(path: Path) -> Path:
    path.mkdir()
    ratings = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,964982224\n"
    (path / "ratings.csv").write_text(ratings)
    (path / "movies.csv").write_text(
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n3,Untitled,(no genres listed)\n'
    )
    return path


def frames(session: Session) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    events = repo.interactions_frame(session=session)
    items = repo.items_frame(session=session).set_index("item_id")
    users = repo.users_frame(session=session).set_index("user_id")
    return events, items, users


def test_import_ml100k_layout(deeprec: Run, tmp_path: Path, session: Session) -> None:
    assert deeprec("import", "movielens", write_ml100k(tmp_path / "ml-100k")) == 0
    events, items, users = frames(session)
    assert len(events) == 4 and set(events["type"]) == {"rating"}
    assert events[["user_id", "item_id", "value", "ts"]].iloc[0].tolist() == ["1", "10", 4.0, 881250949]
    assert items.loc["10", "title"] == "Café Society (1995)" and items.loc["10", "categories"] == ["Comedy", "Romance"]
    assert items.loc["10", "attributes"] == {"year": 1995} and items.loc["20", "attributes"] == {"year": 1979}
    assert items.loc["20", "categories"] == ["Horror", "Sci-Fi"] and items.loc["30", "attributes"] == {}
    assert users.loc["2", "attributes"] == {"age": 53, "gender": "F", "occupation": "other", "zip": "94043"}


def test_import_ml1m_layout(deeprec: Run, tmp_path: Path, session: Session) -> None:
    assert deeprec("import", "movielens", write_ml1m(tmp_path / "ml-1m")) == 0
    events, items, users = frames(session)
    assert sorted(zip(events["user_id"], events["item_id"], events["value"], strict=True)) == [
        ("1", "1193", 5.0), ("1", "661", 3.0), ("2", "1193", 4.0),
    ]  # fmt: skip
    assert items.loc["661", "title"] == "Star Wars: Episode IV (1977)"
    assert items.loc["661", "categories"] == ["Action", "Sci-Fi"] and items.loc["661", "attributes"] == {"year": 1977}
    assert users.loc["2", "attributes"] == {"gender": "M", "age_group": 56, "occupation": 16, "zip": "70072"}


def test_import_ml_latest_layout_twice(deeprec: Run, tmp_path: Path, session: Session) -> None:
    folder = write_ml_latest(tmp_path / "ml-latest-small")
    assert deeprec("import", "movielens", folder) == 0
    assert deeprec("import", "movielens", folder) == 0  # event ids make a re-import a no-op
    events, items, users = frames(session)
    assert len(events) == 3 and sorted(events["value"]) == [0.5, 4.0, 4.5] and users.empty is False
    assert items.loc["1", "title"] == "American President, The (1995)"
    assert items.loc["1", "categories"] == ["Comedy", "Drama", "Romance"]
    assert items.loc["1", "attributes"] == {"year": 1995}
    assert items.loc["3", "categories"] == [] and items.loc["3", "attributes"] == {}


def test_import_csv(deeprec: Run, tmp_path: Path, session: Session, capsys: Out) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "user,item,rating,timestamp\n"
        "alice,book-1,4.5,1700000000\n"
        "alice,book-2,,2023-11-15T10:00:00Z\n"
        "bob,book-1,2,2023-11-15 12:30:00\n"
    )
    assert deeprec("import", "csv", path) == 0
    assert deeprec("import", "csv", path) == 0
    assert "0 new, 3 duplicates" in capsys.readouterr().out
    events = repo.interactions_frame(session=session)
    assert events["type"].tolist() == ["rating", "view", "rating"]
    assert events["ts"].tolist() == [1700000000, 1700042400, 1700051400]
    assert events["value"].isna().tolist() == [False, True, False]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("u1,i1,4,1700000000\nu2,i2,9,1700000000\n", "line 3: rating: 9.0 outside the rating scale 0.5-5.0"),
        ("u1,i1,4,1700000000\n,i2,3,1700000000\n", "line 3: user_id: empty"),
        ("u1,i1,4,1700000000\nu2,a/b,3,1700000000\n", "line 3: item_id: empty, longer than"),
        ("u1,i1,4,1700000000\n..,i2,3,1700000000\n", "line 3: user_id: empty, longer than"),
        ("u1,i1,4,someday\n", "line 2: timestamp: 'someday' is neither Unix seconds nor ISO-8601"),
        ("u1,i1,four,1700000000\n", "line 2: rating: 'four' is not a number"),
        ("u1,i1,4,99999999999\n", "line 2: timestamp: 99999999999.0 is missing or in the future"),
    ],
)
def test_import_csv_rejects_bad_rows(
    deeprec: Run, tmp_path: Path, session: Session, capsys: Out, rows: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("user,item,rating,timestamp\n" + rows)
    assert deeprec("import", "csv", path) == 2
    assert message in capsys.readouterr().err
    assert repo.counts(session=session).interactions == 0  # the bad chunk is stored not at all


def test_import_needs_a_movielens_folder(deeprec: Run, tmp_path: Path, capsys: Out) -> None:
    assert deeprec("import", "movielens", tmp_path) == 2
    assert "is not a MovieLens folder" in capsys.readouterr().err


def test_demo_data_and_if_empty(deeprec: Run, session: Session, capsys: Out) -> None:
    assert deeprec("demo-data", "--users", 100, "--items", 400, "--events", 2000, "--seed", 3, "--chunk-size", 500) == 0
    counts = repo.counts(session=session)
    assert counts.users == 100 and counts.items == 400 and 1900 <= counts.interactions <= 2000
    assert deeprec("demo-data", "--if-empty", "--events", 1000) == 0
    assert "leaving it as it is" in capsys.readouterr().out
    assert repo.counts(session=session) == counts
    items = repo.items_frame(session=session)
    assert all(isinstance(c, list) and c for c in items["categories"]) and "year" in items.loc[0, "attributes"]


def test_missing_command_module_exits_2(deeprec: Run, monkeypatch: pytest.MonkeyPatch, capsys: Out) -> None:
    monkeypatch.setitem(cli.EXTERNAL, "train", ("app.not_built_yet", "add_train_parser", "train models"))
    assert deeprec("train", "--model", "default", "--if-missing") == 2
    assert "deeprec train: not available in this build (app.not_built_yet is missing)" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not ml100k_available(), reason=f"MovieLens 100K not found at {ml100k_dir()} (DEEPREC_ML100K_DIR)")
def test_full_ml100k_import_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'ml.db'}"
    monkeypatch.setenv("DEEPREC_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        assert cli.main(["import", "movielens", str(ml100k_dir())]) == 0
    finally:
        get_settings.cache_clear()
    from app.db.session import make_engine, make_sessionmaker

    engine = make_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    with make_sessionmaker(engine)() as session:
        assert repo.counts(session=session) == repo.Counts(users=943, items=1682, interactions=100_000)
        values = repo.interactions_frame(session=session)["value"].to_numpy()
    engine.dispose()
    assert np.isin(values, [1, 2, 3, 4, 5]).all()

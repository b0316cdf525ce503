"""MovieLens parsers on tiny folders written here in each format, and on ML-100K when present."""

import pytest

from app.paths import ml100k_available, ml100k_dir
from app.recsys.data import InteractionData
from app.recsys.movielens import ML100K_GENRES, detect_format, load_movielens


def _flags(*genres):
    return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)


def write_ml100k(path, with_split=True):
    """A 3-user, 3-item ml-100k folder (the same shape the CLI test uses)."""
    path.mkdir(parents=True, exist_ok=True)
    rows = ["1\t10\t4\t100", "1\t20\t3\t200", "2\t10\t5\t150", "2\t30\t2\t160", "3\t20\t4\t120", "3\t30\t1\t130"]
    (path / "u.data").write_text("\n".join(rows) + "\n")
    items = [
        f"10|Toy Story (1995)|01-Jan-1995||http://x|{_flags('Animation', 'Comedy')}",
        f"20|Heat (1995)|01-Jan-1995||http://x|{_flags('Action')}",
        f"30|Caf\xe9 Noir|01-Jan-1997||http://x|{_flags()}",
    ]
    (path / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    if with_split:
        (path / "u1.base").write_text("\n".join(rows[:4]) + "\n")
        (path / "u1.test").write_text("\n".join(rows[4:]) + "\n")
    return path


def test_ml100k_folder(tmp_path):
    ml = load_movielens(write_ml100k(tmp_path / "ml-100k"))
    assert ml.name == "ml-100k"
    assert list(ml.interactions.columns) == ["user_id", "item_id", "value", "ts"]
    assert ml.interactions["value"].tolist()[:2] == [4.0, 3.0]
    items = ml.items.set_index("item_id")
    assert items.loc["10", "categories"] == ["Animation", "Comedy"]
    assert items.loc["30", "categories"] == [] and items.loc["30", "title"] == "Caf\xe9 Noir"
    assert items.loc["10", "attributes"] == {"year": 1995}
    assert items.loc["30", "attributes"] == {"year": 1997}  # from the release date when the title has none
    assert len(ml.rating_train) == 4 and len(ml.rating_test) == 2
    data = InteractionData.from_frames(ml.interactions, ml.items)
    assert data.n_items == 3 and "Comedy" in data.feature_schema.categories


def test_ml1m_and_latest_folders(tmp_path):
    m1 = tmp_path / "ml-1m"
    m1.mkdir()
    (m1 / "ratings.dat").write_text("1::5::4::978300760\n2::6::3::978300761\n")
    movies = "5::Jumanji (1995)::Adventure|Children's\n6::B\xe9b\xe9 (2000)::Drama\n"
    (m1 / "movies.dat").write_bytes(movies.encode("latin-1"))
    ml = load_movielens(m1)
    assert ml.name == "ml-1m" and ml.rating_train is None
    assert ml.items.set_index("item_id").loc["5", "categories"] == ["Adventure", "Children's"]
    latest = tmp_path / "ml-latest-small"
    latest.mkdir()
    (latest / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,7,3.5,964982703\n1,8,5.0,964982704\n")
    movies = 'movieId,title,genres\n7,"Heat, The (1995)",Action|Crime\n8,X,(no genres listed)\n'
    (latest / "movies.csv").write_text(movies)
    ml = load_movielens(latest)
    items = ml.items.set_index("item_id")
    assert ml.name == "ml-latest" and ml.interactions["value"].tolist() == [3.5, 5.0]
    assert items.loc["7", "categories"] == ["Action", "Crime"] and items.loc["8", "categories"] == []
    assert items.loc["7", "attributes"] == {"year": 1995} and items.loc["8", "attributes"] == {}
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path)


@pytest.mark.skipif(not ml100k_available(), reason="MovieLens 100K not found (set DEEPREC_ML100K_DIR)")
def test_real_ml100k():
    ml = load_movielens(ml100k_dir())
    assert len(ml.interactions) == 100_000 and len(ml.items) == 1682
    assert len(ml.rating_train) == 80_000 and len(ml.rating_test) == 20_000
    assert ml.items.set_index("item_id").loc["1", "categories"] == ["Animation", "Children's", "Comedy"]

"""`deeprec evaluate` end to end on a small MovieLens-format folder written here: table, JSON, PNG."""

import builtins
import json

import numpy as np
import pytest

from app.cli import main
from app.commands.evaluate import evaluate
from app.recsys.models import get_model_class
from tests.serving.support import N_USERS, seed_database

GENRES = 19  # ml-100k's u.item has 19 genre flags


@pytest.fixture(scope="module")
def ml_folder(tmp_path_factory):
    """40 users with 12 ratings each over 30 items, in ml-100k's layout, with u1.base/u1.test."""
    path = tmp_path_factory.mktemp("ml-100k")
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, 41):
        taste = u % 3
        items = rng.choice(np.arange(taste + 1, 31, 3), size=8, replace=False).tolist()
        items += rng.choice(np.arange(1, 31), size=6, replace=False).tolist()
        for t, i in enumerate(dict.fromkeys(items)):
            rows.append(f"{u}\t{i}\t{4 if (i - 1) % 3 == taste else 2}\t{880000000 + u * 1000 + t}")
    (path / "u.data").write_text("\n".join(rows) + "\n")
    split = int(len(rows) * 0.8)
    (path / "u1.base").write_text("\n".join(rows[:split]) + "\n")
    (path / "u1.test").write_text("\n".join(rows[split:]) + "\n")
    flags = ["|".join("1" if j == 1 + (i - 1) % 3 else "0" for j in range(GENRES)) for i in range(1, 31)]
    items = [f"{i}|Movie {i} (199{i % 10})|01-Jan-1995||http://example.org|{flags[i - 1]}" for i in range(1, 31)]
    (path / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    return path


def test_evaluate_writes_table_json_and_chart(ml_folder, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["evaluate", "--models", "popularity,mf,not_a_model", "--protocol", "loo,sampled", "--k", "5,10",
            "--data", str(ml_folder), "--seeds", "2", "--epochs", "2", "--negatives", "20", "--out", str(out),
            "--quiet", "--threads", "1", "--plot"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "NDCG@10" in printed and "SAMPLED" in printed and "unavailable" in printed
    (loo,) = json.loads((out / "evaluate-loo.json").read_text())
    assert loo["protocol"] == "loo" and loo["sampled"] is False and loo["seeds"] == [0, 1]
    mf = loo["models"]["mf"]
    assert mf["status"] == "ok" and len(mf["runs"]) == 2
    assert mf["mean"]["ndcg@10"] == pytest.approx(np.mean([r["ndcg@10"] for r in mf["runs"]]))
    assert set(mf["std"]) >= {"ndcg@10", "hr@5", "coverage@10", "novelty@5", "train_s"}
    assert loo["models"]["not_a_model"]["status"] == "unavailable"
    (sampled,) = json.loads((out / "evaluate-sampled.json").read_text())
    assert sampled["sampled"] is True and "SAMPLED" in sampled["label"]
    for name in ("evaluate-loo.png", "evaluate-sampled.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_rating_uses_the_u1_files(ml_folder, tmp_path, capsys):
    out = tmp_path / "rating"
    argv = ["evaluate", "--models", "popularity,mf", "--protocol", "rating", "--data", str(ml_folder),
            "--seeds", "1", "--epochs", "2", "--out", str(out), "--quiet", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    (res,) = json.loads((out / "evaluate-rating-u1.json").read_text())
    assert res["models"]["popularity"]["status"] == "not applicable"
    if get_model_class("mf").supports_rating:
        run = res["models"]["mf"]["runs"][0]
        assert run["n_ratings"] > 0 and 0 < run["mae"] <= run["rmse"]
    assert "RMSE" in capsys.readouterr().out
    assert not (out / "evaluate-rating-u1.png").exists()  # charts only with --plot


def test_evaluate_rejects_bad_arguments(ml_folder, tmp_path, capsys):
    assert main(["evaluate", "--data", str(ml_folder), "--protocol", "nope", "--out", str(tmp_path)]) == 2
    assert main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2  # not a MovieLens folder
    assert "deeprec evaluate:" in capsys.readouterr().err


def test_evaluate_plot_without_matplotlib_says_what_to_install(ml_folder, tmp_path, capsys, monkeypatch):
    """Without the [plot] extra, --plot stops before training and names the extra; no --plot needs nothing."""
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    argv = ["evaluate", "--models", "popularity", "--data", str(ml_folder), "--seeds", "1", "--k", "5",
            "--out", str(tmp_path), "--quiet", "--threads", "1"]  # fmt: skip
    assert main([*argv, "--plot"]) == 2
    err = capsys.readouterr().err
    assert "deeprec evaluate: charts need matplotlib" in err and "pip install 'deeprec[plot]'" in err
    assert not list(tmp_path.iterdir())  # it stopped before evaluating anything
    assert main(argv) == 0
    assert (tmp_path / "evaluate-loo.json").is_file() and not (tmp_path / "evaluate-loo.png").exists()


def test_evaluate_from_the_database(settings, session, tmp_path):
    with pytest.raises(ValueError, match="no interactions"):
        evaluate(models="popularity", protocols=["loo"], ks=(5,), seeds=1, data=None, out=tmp_path, settings=settings)
    seed_database(session)
    loo, rating = evaluate(models="popularity", protocols=["loo", "rating"], ks=(5, 10), seeds=1, data=None,
                           out=tmp_path, settings=settings, threads=1, plot=True)  # fmt: skip
    assert loo.data["source"] == "database" and loo.data["test_users"] == N_USERS
    assert 0 <= loo.models["popularity"].mean["ndcg@10"] <= 1
    assert rating.protocol == "rating-temporal"  # the database has no explicit u1 split
    assert (tmp_path / "evaluate-loo.json").is_file() and (tmp_path / "evaluate-rating-temporal.png").is_file()

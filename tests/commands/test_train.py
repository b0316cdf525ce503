"""`deeprec train` / `deeprec models`: from the database into the store, on SQLite and PostgreSQL."""

import argparse
import json

import pytest
import torch

from app.commands import train as cmd
from app.recsys.store import ModelStore
from tests.serving.support import seed_database


def parse(*argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cmd.add_train_parser(sub)
    cmd.add_models_parser(sub)
    return parser.parse_args(argv)


def test_flags_become_overrides():
    args = parse("train", "--model", "mf", "--epochs", "3", "--dim", "16", "--param", "mf.reg=0.01",
                 "--param", "max_len=20", "--lr", "0.01")  # fmt: skip
    params = cmd.parse_params(args)
    assert params == {"epochs": 3, "dim": 16, "lr": 0.01, "max_len": 20, "mf": {"reg": 0.01}}
    with pytest.raises(SystemExit):
        cmd.parse_params(parse("train", "--param", "novalue"))


def test_train_saves_activates_and_skips_if_missing(settings, session):
    seed_database(session)
    summary = cmd.train(settings, ["popularity,mf"], params={"epochs": 1, "batch_size": 256})
    assert [row["model"] for row in summary] == ["popularity", "mf"]
    store = ModelStore(settings.models_dir)
    for row in summary:
        assert store.active_version(row["model"]) == row["version"]
        assert store.info(row["model"], row["version"]).metrics["test_ndcg@10"] == row["test_ndcg@10"]
    assert cmd.train(settings, ["mf"], if_missing=True) == []
    again = cmd.train(settings, ["mf"], params={"epochs": 1}, activate=False)
    assert store.active_version("mf") == summary[1]["version"] != again[0]["version"]
    assert store.versions("mf") == sorted([summary[1]["version"], again[0]["version"]])


def test_empty_database_is_a_clear_error(settings):
    with pytest.raises(SystemExit, match="no interactions"):
        cmd.train(settings, ["popularity"])


def test_unknown_model_and_parameter_exit_2(settings, session, monkeypatch, capsys):
    seed_database(session)
    monkeypatch.setattr(cmd, "get_settings", lambda: settings)
    assert cmd.run_train(parse("train", "--model", "nope")) == 2
    assert "valid:" in capsys.readouterr().err
    assert cmd.run_train(parse("train", "--model", "mf", "--param", "epoks=1")) == 2


def test_models_lists_versions(settings, session, monkeypatch, capsys):
    seed_database(session)
    monkeypatch.setattr(cmd, "get_settings", lambda: settings)
    assert cmd.run_train(parse("train", "--model", "popularity", "--quiet")) == 0
    capsys.readouterr()
    assert cmd.run_models(parse("models", "--json")) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["active"]) for r in rows] == [("popularity", True)]
    assert cmd.run_models(parse("models")) == 0
    assert "* popularity" in capsys.readouterr().out


def test_if_missing_trains_only_what_has_no_version(settings, session):
    seed_database(session)
    first = {r["model"]: r["version"] for r in cmd.train(settings, ["popularity,mf"], params={"epochs": 1})}
    again = cmd.train(settings, ["popularity,mf,gru4rec"], params={"epochs": 1}, if_missing=True)
    assert [r["model"] for r in again] == ["gru4rec"]
    store = ModelStore(settings.models_dir)
    assert {n: store.versions(n) for n in first} == {n: [v] for n, v in first.items()}


def test_hybrid_reuses_active_members_trained_on_the_same_data(settings, session, monkeypatch):
    from app.recsys import pipeline

    seed_database(session)
    monkeypatch.setattr(pipeline, "dependencies", lambda name: ("popularity", "mf") if name == "hybrid" else ())
    first = {r["model"]: r["version"] for r in cmd.train(settings, ["popularity,mf"], params={"epochs": 1})}
    summary = cmd.train(settings, ["hybrid"], params={"epochs": 1}, reuse_members=True)
    assert [r["model"] for r in summary] == ["hybrid"]  # the members were not trained again
    store = ModelStore(settings.models_dir)
    assert store.versions("mf") == [first["mf"]]
    hybrid = store.load("hybrid")
    assert sorted(hybrid.members) == ["mf", "popularity"]
    assert torch.equal(hybrid.members["mf"].net.item.weight, store.load("mf").net.item.weight)


RANKING = {"epochs": 1, "batch_size": 256}
RATING = {**RANKING, "objective": "rating"}


@pytest.fixture
def small_hybrid(monkeypatch):
    """The ranking hybrid over popularity and mf only (quick); the rating hybrid keeps its rating members."""
    from app.recsys import pipeline

    real = pipeline.dependencies

    def dependencies(name, objective=None):
        if objective == "rating":
            return real(name, objective)
        return ("popularity", "mf") if name == "hybrid" else ()

    monkeypatch.setattr(pipeline, "dependencies", dependencies)


def active(settings, names):
    from app.jobs.publish import open_store

    store = open_store(settings)  # the model_version table
    return {n: store.active_version(n) for n in names}


def test_ranking_then_rating_hybrid_both_stay_active(settings, session, small_hybrid):
    seed_database(session)
    ranking = {r["model"]: r["version"] for r in cmd.train(settings, ["hybrid"], params=RANKING)}
    assert list(ranking) == ["popularity", "mf", "hybrid"]
    # The active mf is a ranking model: the rating hybrid trains its own rating members instead.
    rating = {r["model"]: r["version"] for r in cmd.train(settings, ["hybrid"], params=RATING, reuse_members=True)}
    assert list(rating) == ["mf-rating", "content-rating", "gmf-rating", "hybrid-rating"]
    assert active(settings, [*ranking, *rating]) == {**ranking, **rating}
    store = ModelStore(settings.models_dir)
    assert store.load("hybrid").extra["objective"] == "implicit"
    assert type(store.load("hybrid-rating")).__name__ == "RatingStack"  # its own model, not a flag on the hybrid
    assert store.versions("mf") == [ranking["mf"]] and store.versions("hybrid") == [ranking["hybrid"]]
    assert cmd.train(settings, ["hybrid"], params=RATING, if_missing=True) == []  # the rating names have versions


def test_rating_then_ranking_hybrid_and_reuse_of_rating_members(settings, session, small_hybrid, monkeypatch, capsys):
    seed_database(session)
    rating = {r["model"]: r["version"] for r in cmd.train(settings, ["hybrid"], params=RATING)}
    assert list(rating) == ["mf-rating", "content-rating", "gmf-rating", "hybrid-rating"]
    missing = cmd.train(settings, ["hybrid"], params=RANKING, if_missing=True)  # the plain names have none yet
    ranking = {r["model"]: r["version"] for r in missing}
    assert list(ranking) == ["popularity", "mf", "hybrid"]
    again = cmd.train(settings, ["hybrid"], params=RATING, reuse_members=True)
    assert [r["model"] for r in again] == ["hybrid-rating"]  # the active rating members were reused
    assert active(settings, [*ranking, *rating]) == {**ranking, **rating, "hybrid-rating": again[0]["version"]}
    store = ModelStore(settings.models_dir)
    stack = store.load("hybrid-rating")
    assert torch.equal(stack.members["mf"].net.item.weight, store.load("mf-rating").net.item.weight)
    monkeypatch.setattr(cmd, "get_settings", lambda: settings)
    assert cmd.run_models(parse("models", "--json")) == 0
    listed = {(r["name"], r["version"]) for r in json.loads(capsys.readouterr().out) if r["active"]}
    assert {"hybrid", "hybrid-rating", "mf", "mf-rating"} <= {n for n, _ in listed}


def test_legacy_plain_name_rating_member_is_not_reused_for_ranking(settings, session, small_hybrid):
    """An older store kept a rating mf under the plain name: the ranking hybrid trains its own mf."""
    from app.db.frames import database_frames
    from app.recsys.data import InteractionData
    from app.recsys.pipeline import train_models

    seed_database(session)
    cmd.train(settings, ["popularity"], params=RANKING)
    data = InteractionData.from_frames(*database_frames(settings))
    rated = train_models(data, "mf", params=RATING)[0].model
    store = ModelStore(settings.models_dir)
    store.activate("mf", store.save(rated))  # the plain name, as before rating versions had their own
    summary = cmd.train(settings, ["hybrid"], params=RANKING, reuse_members=True)
    assert [r["model"] for r in summary] == ["mf", "hybrid"]
    assert store.load("mf").extra["objective"] == "implicit"


def test_a_model_too_large_is_refused_with_its_reason(settings, session, monkeypatch, capsys):
    from app.recsys import planning

    seed_database(session)
    monkeypatch.setattr(cmd, "get_settings", lambda: settings)
    monkeypatch.setattr(planning, "available_memory", lambda: 1 << 20)
    assert cmd.run_train(parse("train", "--model", "mf", "--quiet")) == 2
    err = capsys.readouterr().err
    assert err.startswith("deeprec train: mf does not fit") and "GiB is available" in err
    assert "Traceback" not in err
    assert ModelStore(settings.models_dir).models() == []


def test_default_prints_what_it_picked_and_why(settings, session, monkeypatch, capsys):
    from app.recsys import pipeline

    seed_database(session)
    monkeypatch.setattr(cmd, "get_settings", lambda: settings)
    monkeypatch.setattr(pipeline, "DEFAULT_MODELS", ("popularity", "ease"))
    args = parse("train", "--model", "default", "--param", "ease.max_items=10", "--quiet")
    assert cmd.run_train(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("default:") and "popularity  kept" in line for line in out)
    assert any("ease  dropped: 31 items is above its max_items=10" in line for line in out)
    assert ModelStore(settings.models_dir).models() == ["popularity"]

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

"""POST /v1/predict fills ``rating`` from the rating stack, ``hybrid-rating``, served beside the ranking hybrid.

The default training includes the stack, so ratings are there from the first run; only a data set without
explicit ratings answers ``rating: null``, and ``detail`` says so. /v1/models lists the ensembles' weights,
and a request may re-blend the ranking hybrid's members (``weights=``).
"""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from app.recsys.data import InteractionData
from app.recsys.pipeline import train_models
from app.recsys.store import ModelStore, served_name_of
from tests.api.test_recommend import wait_ready
from tests.serving import support
from tests.serving.support import seed_database

ITEMS = ["i1", "i2", "i3", "i4"]


def _data(rated: bool = True) -> InteractionData:
    data = InteractionData.from_frames(support.events(), support.catalogue().iloc[: support.N_ITEMS])
    return data if rated else dataclasses.replace(data, ratings=np.full(data.n_interactions, np.nan, np.float32))


def _train(models, params, **kw) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {r.name: r.model for r in train_models(_data(kw.pop("rated", True)), models, params=params, **kw)}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rating_run():
    """A run with objective 'rating' asked for the hybrid: the rating stack and its rating members."""
    return _train("hybrid", {"epochs": 3, "batch_size": 128, "objective": "rating"})


@pytest.fixture(scope="module")
def default_run():
    """The default set (what `deeprec train` and `make run` train) on data with ratings."""
    return _train("default", {"epochs": 2, "batch_size": 128})


def _serve(tmp_path, session, make_client, models, base=None):
    """Serve ``models`` under their served names, on a copy of ``base`` (a trained store) or an empty store."""
    seed_database(session)
    models_dir = support.private_copy(base, tmp_path) if base is not None else tmp_path / "models"
    store = ModelStore(models_dir)
    for model in models:
        name = served_name_of(model)
        store.activate(name, store.save(model, name=name))
    client = make_client(models_dir=models_dir)
    wait_ready(client)
    return client


def _expected(model, user_id: str) -> list[float]:
    u = torch.full((len(ITEMS),), list(model.user_ids).index(user_id))
    i = torch.as_tensor([list(model.item_ids).index(x) for x in ITEMS])
    return model.predict_ratings(u, i).tolist()


def _ratings(client, model: str | None) -> tuple[dict, list[float]]:
    body = {"user_id": "u1", "item_ids": ITEMS} | ({"model": model} if model else {})
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 200, r.text
    return r.json(), [p["rating"] for p in r.json()["predictions"]]


def test_the_default_training_fills_rating(tmp_path, session, make_client, default_run):
    assert list(default_run)[-2:] == ["hybrid", "hybrid-rating"]
    stack = default_run["hybrid-rating"]
    client = _serve(tmp_path, session, make_client, default_run.values())
    body, ratings = _ratings(client, None)
    assert body["model"] == "hybrid" and body["detail"] is None  # the ranking hybrid scores
    assert ratings == pytest.approx(_expected(stack, "u1"), abs=1e-5)  # the stack rates
    lo, hi = stack.extra["rating_min"], stack.extra["rating_max"]
    assert all(lo <= r <= hi for r in ratings)

    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["hybrid"]["weights"] == pytest.approx(default_run["hybrid"].weights)
    assert set(listed["hybrid"]["weights"]) == {"ease", "content", "mf", "gru4rec", "popularity"}
    assert listed["hybrid-rating"]["weights"] == pytest.approx(stack.weights)
    assert listed["mf"]["weights"] is None


def test_weights_reblend_the_hybrid_per_request(tmp_path, session, make_client, default_run):
    client = _serve(tmp_path, session, make_client, default_run.values())
    url = "/v1/users/u1/recommendations"

    def ranked(**params):
        r = client.get(url, params={"n": 8, **params})
        assert r.status_code == 200, r.text
        return [(i["item_id"], i["reason"]) for i in r.json()["items"]]

    learned, mf = ranked(), ranked(weights="mf:1")
    assert mf != learned and {why for _, why in mf} == {"mf"}
    assert ranked(weights="mf:2") == mf  # normalised
    assert ranked(weights="mf:0.5,gru4rec:0.5") == ranked(weights="gru4rec:1,mf:1") != mf
    for bad, says in [("sasrec:1", "not a member"), ("mf:x", "member:number"), ("mf:-1", ">= 0")]:
        r = client.get(url, params={"weights": bad})
        assert r.status_code == 422 and says in r.text, r.text
        assert r.headers["content-type"].startswith("application/json")
    assert client.get(url, params={"weigths": "mf:1"}).status_code == 422  # misspelt: never silently ignored
    r = client.get(url, params={"weights": "mf:1", "model": "mf"})
    assert r.status_code == 422 and "not a ranking hybrid" in r.text


def test_predict_says_why_rating_is_null_without_explicit_ratings(tmp_path, session, make_client):
    run = _train("default", {"epochs": 1, "batch_size": 128}, rated=False, default=["popularity", "mf"])
    assert "hybrid-rating" not in run
    client = _serve(tmp_path, session, make_client, run.values())
    body, ratings = _ratings(client, None)
    assert ratings == [None] * len(ITEMS) and "no explicit ratings" in body["detail"]


def test_lowest_validation_rmse_rater_answers(trained_store, tmp_path, session, make_client, rating_run):
    stack, content = rating_run["hybrid-rating"], rating_run["content"]
    assert stack.metrics["valid_rmse"] < content.metrics["valid_rmse"]  # the stack fits the validation ratings
    client = _serve(tmp_path, session, make_client, [content, stack], base=trained_store)
    _, via_mf = _ratings(client, "mf")  # mf is implicit: the best rater answers
    assert via_mf == pytest.approx(_expected(stack, "u1"), abs=1e-5)
    _, own = _ratings(client, "content-rating")  # a rating model asked for by name rates its own scores
    assert own == pytest.approx(_expected(content, "u1"), abs=1e-5)


@pytest.fixture(scope="module")
def ranking_hybrid(trained_store):
    """A ranking hybrid over the trained store's mf and content (only its weights are fitted)."""
    store = ModelStore(trained_store)
    members = {n: store.load(n) for n in ("mf", "content")}
    params = {"epochs": 2, "batch_size": 128, "hybrid": {"members": ["mf", "content"]}}
    return _train(["hybrid"], params, reuse=members, closed=True)["hybrid"]


def test_ranking_and_rating_hybrids_serve_side_by_side(
    trained_store, tmp_path, session, make_client, rating_run, ranking_hybrid
):
    stack = rating_run["hybrid-rating"]
    client = _serve(tmp_path, session, make_client, [ranking_hybrid, *rating_run.values()], base=trained_store)
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["hybrid"]["loaded"] and listed["hybrid-rating"]["loaded"] and listed["mf-rating"]["loaded"]
    versions = client.get("/v1/models/hybrid-rating/versions").json()
    assert versions["active_version"] == listed["hybrid-rating"]["active_version"] is not None

    recs = client.get("/v1/users/u1/recommendations", params={"n": 3}).json()
    assert recs["model"] == "hybrid" and recs["strategy"] == "personalized"  # the ranking hybrid ranks
    body, ratings = _ratings(client, None)
    assert body["model"] == "hybrid" and [p["model"] for p in body["predictions"]] == ["hybrid"] * len(ITEMS)
    assert ratings == pytest.approx(_expected(stack, "u1"), abs=1e-5)  # the rating stack rates
    body, own = _ratings(client, "mf-rating")  # a rating model asked for by name rates its own scores
    assert body["model"] == "mf-rating" and own == pytest.approx(_expected(rating_run["mf"], "u1"), abs=1e-5)

    r = client.get("/v1/users/u1/recommendations", params={"n": 3, "model": "hybrid-rating"})
    assert r.status_code == 200 and r.json()["model"] == "hybrid-rating"
    r = client.get("/v1/users/u1/recommendations", params={"model": "hybrid-ratings"})
    assert r.status_code == 422
    assert {"hybrid", "hybrid-rating", "mf-rating"} <= set(r.json()["valid_models"])
    assert "popularity-rating" not in r.json()["valid_models"]
    assert "hybrid-rating-rating" not in r.json()["valid_models"]
    bad = {"user_id": "u1", "item_ids": ITEMS, "model": "gru4rec-rating"}  # gru4rec has no rating version
    assert client.post("/v1/predict", json=bad).status_code == 422
    metrics = client.get("/metrics").text
    assert 'deeprec_inference_seconds_count{model="hybrid-rating"}' in metrics


def test_a_rating_stack_the_old_class_saved_as_hybrid_is_refused_clearly(
    trained_store, tmp_path, session, make_client, rating_run
):
    """Before the split, a rating run could leave a stack as the plain 'hybrid': refused, the rest served."""
    seed_database(session)
    models_dir = support.private_copy(trained_store, tmp_path)
    store = ModelStore(models_dir)
    version = store.save(rating_run["hybrid-rating"], name="hybrid")
    meta_file = store.path("hybrid", version) / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["name"], meta["dims"]["rating"] = "hybrid", 1
    meta_file.write_text(json.dumps(meta))
    manifest_file = store.path("hybrid", version) / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    entry = manifest["files"]["meta.json"]
    entry["sha256"], entry["size"] = hashlib.sha256(meta_file.read_bytes()).hexdigest(), meta_file.stat().st_size
    manifest_file.write_text(json.dumps(manifest))
    store.activate("hybrid", version)
    client = make_client(models_dir=models_dir)
    with pytest.raises(AssertionError, match="retrain it as 'hybrid-rating'"):  # readiness names the model and why
        wait_ready(client, timeout_s=5)
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert not listed["hybrid"]["loaded"] and "hybrid-rating" in listed["hybrid"]["error"]
    assert listed["mf"]["loaded"]

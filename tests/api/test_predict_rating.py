"""POST /v1/predict rates with the rating hybrid once one is active: it is the lowest-validation-RMSE rater.

The rating hybrid is served as ``hybrid-rating`` beside the ranking ``hybrid``; a store from before
that kept it under the plain name (the first tests here) still serves its ratings.
"""

import pytest
import torch

from app.recsys.data import InteractionData
from app.recsys.pipeline import train_models
from app.recsys.store import ModelStore, served_name_of
from tests.api.test_recommend import wait_ready
from tests.serving import support
from tests.serving.support import seed_database

ITEMS = ["i1", "i2", "i3", "i4"]


@pytest.fixture(scope="module")
def rating_run():
    """The rating hybrid and its members, trained on ratings of the events the database holds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = InteractionData.from_frames(support.events(), support.catalogue().iloc[: support.N_ITEMS])
        params = {"epochs": 3, "batch_size": 128, "objective": "rating"}
        return {r.name: r.model for r in train_models(data, "hybrid", params=params)}
    finally:
        torch.set_num_threads(threads)


def _serve(trained_store, tmp_path, session, make_client, models, served=False):
    """Serve the trained store plus ``models``: under their served names, or (legacy) their plain names."""
    seed_database(session)
    models_dir = support.private_copy(trained_store, tmp_path)
    store = ModelStore(models_dir)
    for model in models:
        name = served_name_of(model) if served else model.name
        store.activate(name, store.save(model, name=name))
    client = make_client(models_dir=models_dir)
    wait_ready(client)
    return client


def _expected(model, user_id: str) -> list[float]:
    users = list(model.user_ids)
    items = list(model.item_ids)
    u = torch.full((len(ITEMS),), users.index(user_id))
    i = torch.as_tensor([items.index(x) for x in ITEMS])
    return model.predict_ratings(u, i).tolist()


def _ratings(client, model: str | None) -> tuple[dict, list[float]]:
    body = {"user_id": "u1", "item_ids": ITEMS} | ({"model": model} if model else {})
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 200, r.text
    return r.json(), [p["rating"] for p in r.json()["predictions"]]


def test_predict_rates_with_the_active_rating_hybrid(trained_store, tmp_path, session, make_client, rating_run):
    hybrid = rating_run["hybrid"]
    client = _serve(trained_store, tmp_path, session, make_client, [hybrid])
    body, ratings = _ratings(client, None)  # the default model is the hybrid: it scores and rates
    assert body["model"] == "hybrid"
    assert ratings == pytest.approx(_expected(hybrid, "u1"), abs=1e-5)
    lo, hi = hybrid.extra["rating_min"], hybrid.extra["rating_max"]
    assert all(lo <= r <= hi for r in ratings)
    body, via_mf = _ratings(client, "mf")  # an implicit model scores; the rating hybrid still rates
    assert body["model"] == "mf" and via_mf == pytest.approx(ratings)


def test_lowest_validation_rmse_rater_answers(trained_store, tmp_path, session, make_client, rating_run):
    hybrid, content = rating_run["hybrid"], rating_run["content"]
    assert hybrid.metrics["valid_rmse"] < content.metrics["valid_rmse"]  # the stack fits the validation ratings
    client = _serve(trained_store, tmp_path, session, make_client, [content, hybrid])
    _, via_mf = _ratings(client, "mf")  # mf is implicit: the best rater answers
    assert via_mf == pytest.approx(_expected(hybrid, "u1"), abs=1e-5)
    _, own = _ratings(client, "content")  # a rating model asked for by name rates its own scores
    assert own == pytest.approx(_expected(content, "u1"), abs=1e-5)


@pytest.fixture(scope="module")
def ranking_hybrid(trained_store):
    """A ranking hybrid over the trained store's mf and content (only its weights are fitted)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = InteractionData.from_frames(support.events(), support.catalogue().iloc[: support.N_ITEMS])
        store = ModelStore(trained_store)
        members = {n: store.load(n) for n in ("mf", "content")}
        params = {"epochs": 2, "batch_size": 128, "hybrid": {"members": ["mf", "content"]}}
        return train_models(data, ["hybrid"], params=params, reuse=members, closed=True)[0].model
    finally:
        torch.set_num_threads(threads)


def test_ranking_and_rating_hybrids_serve_side_by_side(
    trained_store, tmp_path, session, make_client, rating_run, ranking_hybrid
):
    stack = rating_run["hybrid"]
    served = [ranking_hybrid, *rating_run.values()]
    client = _serve(trained_store, tmp_path, session, make_client, served, served=True)
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["hybrid"]["loaded"] and listed["hybrid-rating"]["loaded"] and listed["mf-rating"]["loaded"]
    versions = client.get("/v1/models/hybrid-rating/versions").json()
    assert versions["active_version"] == listed["hybrid-rating"]["active_version"] is not None

    recs = client.get("/v1/users/u1/recommendations", params={"n": 3}).json()
    assert recs["model"] == "hybrid" and recs["strategy"] == "personalized"  # the ranking hybrid ranks
    body, ratings = _ratings(client, None)
    assert body["model"] == "hybrid" and [p["model"] for p in body["predictions"]] == ["hybrid"] * len(ITEMS)
    assert ratings == pytest.approx(_expected(stack, "u1"), abs=1e-5)  # the rating hybrid rates
    body, own = _ratings(client, "mf-rating")  # a rating model asked for by name rates its own scores
    assert body["model"] == "mf-rating" and own == pytest.approx(_expected(rating_run["mf"], "u1"), abs=1e-5)

    r = client.get("/v1/users/u1/recommendations", params={"n": 3, "model": "hybrid-rating"})
    assert r.status_code == 200 and r.json()["model"] == "hybrid-rating"
    r = client.get("/v1/users/u1/recommendations", params={"model": "hybrid-ratings"})
    assert r.status_code == 422
    assert {"hybrid", "hybrid-rating", "mf-rating"} <= set(r.json()["valid_models"])
    assert "popularity-rating" not in r.json()["valid_models"]
    bad = {"user_id": "u1", "item_ids": ITEMS, "model": "gru4rec-rating"}  # gru4rec has no rating version
    assert client.post("/v1/predict", json=bad).status_code == 422
    metrics = client.get("/metrics").text
    assert 'deeprec_inference_seconds_count{model="hybrid-rating"}' in metrics

"""The service gives the offline evaluation's numbers: data in through the API, a training job, then
leave-one-out metrics computed from GET recommendations / next-items equal evaluate_full_ranking on
the very versions being served, and POST /v1/predict rates every item, feature-only ones included.
"""

import math

import numpy as np
import pandas as pd
import pytest

from app.jobs.worker import Worker
from app.recsys.data import InteractionData
from app.recsys.evaluation import evaluate_full_ranking
from app.recsys.splits import Split
from app.recsys.store import ModelStore
from tests.recsys.synthetic import items_frame, taste_frame

N_USERS, N_ITEMS = 40, 30
NEW_ITEM = "feature-only"  # in the catalogue, never interacted with
FAST = {"epochs": 2, "batch_size": 128, "content": {"objective": "rating"}}


def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(history ingested through the API, each user's held-out last event, items with one feature-only)."""
    events = taste_frame(n_users=N_USERS, n_items=N_ITEMS, per_user=12)
    events = events.sort_values("ts").drop_duplicates(["user_id", "item_id"], keep="last")
    last = events.groupby("user_id")["ts"].transform("max") == events["ts"]
    new = {"item_id": [NEW_ITEM], "title": ["Comedy new"], "categories": [["Comedy"]], "attributes": [{"year": 2001}]}
    items = pd.concat([items_frame(N_ITEMS), pd.DataFrame(new)], ignore_index=True)
    return events[~last], events[last], items


def ingest(client, history: pd.DataFrame, items: pd.DataFrame) -> None:
    body = [{"item_id": r.item_id, "title": r.title, "categories": r.categories, "attributes": r.attributes}
            for r in items.itertuples()]  # fmt: skip
    assert client.post("/v1/items", json={"items": body}).status_code in (200, 201)
    rows = [{"user_id": r.user_id, "item_id": r.item_id, "rating": float(r.value), "timestamp": int(r.ts)}
            for r in history.itertuples()]  # fmt: skip
    assert client.post("/v1/interactions", json={"interactions": rows}).status_code in (200, 201)


def service_metrics(client, path: str, model: str, test: pd.DataFrame) -> dict[str, float]:
    """HR@10 / NDCG@10 of the held-out events, from the service's top-10 lists."""
    hits, gains = [], []
    for r in test.itertuples():
        resp = client.get(path.format(user=r.user_id), params={"n": 10, "model": model})
        assert resp.status_code == 200, resp.text
        ids = [i["item_id"] for i in resp.json()["items"]]
        assert len(ids) == 10
        pos = ids.index(r.item_id) if r.item_id in ids else None
        hits.append(pos is not None)
        gains.append(0.0 if pos is None else 1.0 / math.log2(pos + 2))
    return {"hr@10": float(np.mean(hits)), "ndcg@10": float(np.mean(gains))}


def offline_split(history: pd.DataFrame, test: pd.DataFrame, items: pd.DataFrame) -> Split:
    full = InteractionData.from_frames(pd.concat([history, test]), items)
    held = full.ts == full.ts[full.indptr[1:] - 1][full.users]  # each user's latest event
    return Split(full.subset(~held), full.subset(np.zeros(full.n_interactions, bool)), full.subset(held), "loo")


def test_service_matches_offline_evaluation(client, settings):
    history, test, items = frames()
    ingest(client, history, items)
    job = client.post("/v1/train", json={"models": ["mf", "sasrec", "content"], "params": FAST, "promote": "always"})
    assert job.status_code == 202, job.text
    worker = Worker(settings)
    try:
        assert worker.run_once() == "succeeded"
    finally:
        worker.engine.dispose()
    client.app.state.version_poller.check()
    active = {m["name"]: m["active_version"] for m in client.get("/v1/models").json()["models"]}
    store = ModelStore(settings.models_dir)
    split = offline_split(history, test, items)
    assert len(split.test.users) == N_USERS

    for name, path in (("mf", "/v1/users/{user}/recommendations"), ("sasrec", "/v1/users/{user}/next-items")):
        served = store.load(name, active[name])
        assert list(served.item_ids) == list(split.train.item_ids)  # the snapshot the job read is this one
        offline = evaluate_full_ranking(served, split, ks=(10,))
        online = service_metrics(client, path, name, test)
        assert offline["hr@10"] > 0, name  # the comparison is not between two empty results
        assert online["hr@10"] == pytest.approx(offline["hr@10"], abs=1e-9), name
        assert online["ndcg@10"] == pytest.approx(offline["ndcg@10"], abs=1e-6), name

    all_items = items["item_id"].tolist()
    for user in ("u0", "u7"):
        r = client.post("/v1/predict", json={"user_id": user, "item_ids": all_items, "model": "content"})
        assert r.status_code == 200, r.text
        preds = {p["item_id"]: p for p in r.json()["predictions"]}
        assert set(preds) == set(all_items)
        ratings = [preds[i]["rating"] for i in all_items]
        assert all(x is not None and 0.0 < x < 6.0 for x in ratings), ratings
        assert preds[NEW_ITEM]["rating"] is not None

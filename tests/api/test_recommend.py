"""Serving endpoints over HTTP on SQLite and PostgreSQL: every endpoint, every error, never a 500."""

import json
import os
import threading
import time

import pytest
import torch

from app.api import serving_app
from tests.serving import support
from tests.serving.support import NEW_ITEM, add_event, seed_database

ROUTES = [
    "/v1/users/{user_id}/recommendations",
    "/v1/predict",
    "/v1/users/{user_id}/next-items",
    "/v1/sessions/next-items",
    "/v1/items/{item_id}/similar",
    "/v1/models",
    "/v1/models/{name}/versions",
    "/metrics",
]


def wait_ready(client, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready: {client.get('/readyz').json()}")


@pytest.fixture
def api(trained_store, tmp_path, session, make_client):
    seed_database(session)
    client = make_client(models_dir=support.private_copy(trained_store, tmp_path))
    wait_ready(client)
    return client


def test_recommendations(api):
    r = api.get("/v1/users/u1/recommendations", params={"n": 5, "model": "mf"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"user_id", "model", "version", "strategy", "items"}
    assert body["user_id"] == "u1" and body["strategy"] == "personalized" and len(body["items"]) == 5
    assert set(body["items"][0]) == {"item_id", "score", "reason", "retrieved_by"}
    versions = {m["name"]: m["active_version"] for m in api.get("/v1/models").json()["models"]}
    assert body["version"] == versions["mf"]


def test_recommendation_filters(api):
    r = api.get("/v1/users/u1/recommendations", params={"n": 4, "model": "mf", "categories": "Drama,Horror"})
    ids = [int(i["item_id"][1:]) for i in r.json()["items"]]
    assert ids and all(j % 5 in (2, 3) for j in ids)
    top = ids[0]
    r = api.get("/v1/users/u1/recommendations", params={"model": "mf", "exclude": f"i{top}, i0"})
    assert f"i{top}" not in {i["item_id"] for i in r.json()["items"]}


def test_exclude_seen_counts_events_ingested_through_the_api(api):
    top = api.get("/v1/users/u7/recommendations", params={"n": 1, "model": "mf"}).json()["items"][0]["item_id"]
    r = api.post("/v1/interactions", json={"interactions": [{"user_id": "u7", "item_id": top, "type": "view"}]})
    assert r.status_code < 300, r.text
    after = api.get("/v1/users/u7/recommendations", params={"n": 10, "model": "mf"}).json()["items"]
    assert top not in {i["item_id"] for i in after}
    kept = api.get("/v1/users/u7/recommendations", params={"n": 40, "model": "mf", "exclude_seen": "false"})
    assert top in {i["item_id"] for i in kept.json()["items"]}


def test_unknown_user_falls_back(api, session):
    assert api.get("/v1/users/nobody/recommendations").json()["strategy"] == "popular"
    add_event(session, "newbie", "i2")
    body = api.get("/v1/users/newbie/recommendations", params={"model": "mf"}).json()
    assert body["strategy"] == "sequential" and body["detail"]


@pytest.mark.parametrize("n", [0, -1, 1001, "x"])
def test_bad_n_is_422(api, n):
    for url in ("/v1/users/u1/recommendations", "/v1/users/u1/next-items", "/v1/items/i1/similar"):
        assert api.get(url, params={"n": n}).status_code == 422
    assert api.post("/v1/sessions/next-items", json={"item_ids": ["i1"], "n": n}).status_code == 422


def test_unknown_model_is_422_with_valid_list(api):
    r = api.get("/v1/users/u1/recommendations", params={"model": "nope"})
    assert r.status_code == 422 and "mf" in r.json()["valid_models"]
    r = api.get("/v1/users/u1/next-items", params={"model": "mf"})
    assert r.status_code == 422 and set(r.json()["valid_models"]) >= {"gru4rec"}
    assert "mf" not in r.json()["valid_models"]
    assert api.post("/v1/predict", json={"user_id": "u1", "item_ids": ["i1"], "model": "zz"}).status_code == 422
    assert api.get("/v1/models/zz/versions").status_code == 422


def test_predict(api):
    r = api.post("/v1/predict", json={"user_id": "u1", "item_ids": ["i1", "i2", NEW_ITEM], "model": "mf"})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["item_id"] for p in preds] == ["i1", "i2", NEW_ITEM]
    assert all(set(p) >= {"item_id", "score", "rating"} for p in preds)
    assert preds[2]["model"] == "content"


def test_predict_errors(api):
    r = api.post("/v1/predict", json={"user_id": "u1", "item_ids": ["i1", "zz"]})
    assert r.status_code == 404 and r.json()["unknown_item_ids"] == ["zz"]
    r = api.post("/v1/predict", json={"user_id": "ghost", "item_ids": ["i1"]})
    assert r.status_code == 404 and r.json()["unknown_user_ids"] == ["ghost"]
    assert api.post("/v1/predict", json={"user_id": "u1", "item_ids": []}).status_code == 422
    assert api.post("/v1/predict", json={"user_id": "u1", "item_ids": ["i1"] * 1001}).status_code == 422
    assert api.post("/v1/predict", content=b"not json", headers={"content-type": "application/json"}).status_code == 422


def test_next_items_and_sessions(api):
    body = api.get("/v1/users/u1/next-items", params={"n": 3}).json()
    assert body["strategy"] == "sequential" and len(body["items"]) == 3
    assert api.get("/v1/users/ghost/next-items").status_code == 404
    r = api.post("/v1/sessions/next-items", json={"item_ids": ["i1", "i2", "zz"], "n": 4})
    assert r.status_code == 200 and r.json()["unknown_item_ids"] == ["zz"] and len(r.json()["items"]) == 4
    assert api.post("/v1/sessions/next-items", json={"item_ids": []}).status_code == 422


def test_similar(api):
    body = api.get("/v1/items/i1/similar", params={"n": 5}).json()
    assert body["item_id"] == "i1" and body["strategy"] == "similar" and len(body["items"]) == 5
    assert api.get(f"/v1/items/{NEW_ITEM}/similar").json()["strategy"] == "content"
    r = api.get("/v1/items/nope/similar")
    assert r.status_code == 404 and r.json()["unknown_item_ids"] == ["nope"]


def test_models_and_versions(api):
    models = {m["name"]: m for m in api.get("/v1/models").json()["models"]}
    for name in support.SERVED:
        m = models[name]
        assert m["loaded"] and m["device"] == "cpu" and m["active_version"] and m["trained_at"]
        assert "valid_ndcg@10" in m["metrics"]
    r = api.get("/v1/models/mf/versions").json()
    assert r["active_version"] == models["mf"]["active_version"]
    assert [v["active"] for v in r["versions"]] == [True]


@pytest.mark.parametrize(
    "url",
    [
        "/v1/users/" + "u" * 300 + "/recommendations",
        "/v1/users/%F0%9F%98%80/recommendations?categories=%00,,&exclude=,,,",
        "/v1/users/u1/recommendations?exclude_seen=maybe",
        "/v1/items/%20/similar?model=",
        "/v1/users/u1/next-items?model=",
        "/v1/users/u1/recommendations?n=99999999999999999999999",
    ],
)
def test_bad_input_is_never_a_500(api, url):
    assert api.get(url).status_code < 500


def test_503_with_retry_after_while_models_load(trained_store, tmp_path, session, make_client, monkeypatch):
    seed_database(session)
    release = threading.Event()
    real = serving_app.load_models
    monkeypatch.setattr(serving_app, "load_models", lambda registry: release.wait(30) and real(registry))
    client = make_client(models_dir=support.private_copy(trained_store, tmp_path))
    try:
        r = client.get("/v1/users/u1/recommendations")
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["models"]["ok"]
    finally:
        release.set()
    wait_ready(client)
    assert client.get("/v1/users/u1/recommendations").status_code == 200


def test_no_trained_model_serves_popularity(session, client):
    seed_database(session)
    wait_ready(client)
    body = client.get("/v1/users/u1/recommendations").json()
    assert body["strategy"] == "popular" and body["version"] is None and "no trained model" in body["detail"]


def test_openapi_lists_every_route_with_examples(api):
    spec = api.get("/openapi.json").json()
    for route in ROUTES:
        assert route in spec["paths"], route
    for route in ROUTES[:-1]:
        for op in spec["paths"][route].values():
            ok = op["responses"]["200"]["content"]["application/json"]
            schema_ref = ok["schema"].get("$ref", "").rsplit("/", 1)[-1]
            has_example = "example" in ok or "example" in spec["components"]["schemas"].get(schema_ref, {})
            assert has_example, route
    docs = api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_request_id_and_metrics(api):
    r = api.get("/v1/models", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    generated = api.get("/v1/models").headers["X-Request-ID"]
    assert len(generated) >= 16
    assert api.get("/v1/models", headers={"X-Request-ID": "bad id\n"}).headers["X-Request-ID"] != "bad id\n"
    api.get("/v1/users/u1/recommendations", params={"model": "mf"})
    text = api.get("/metrics").text
    assert 'deeprec_http_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="200"}' in text
    assert "deeprec_http_request_duration_seconds_bucket" in text
    assert 'deeprec_inference_seconds_count{model="mf"}' in text
    assert 'deeprec_model_loaded{device="cpu",model="mf"' in text
    assert f'deeprec_process{{pid="{os.getpid()}"}} 1.0' in text  # which process answered (workers keep their own)


def test_logs_are_json_with_the_request_id(session, make_client, capsys):
    seed_database(session)
    client = make_client(log_level="INFO")
    wait_ready(client)
    capsys.readouterr()
    client.get("/v1/users/u1/recommendations", headers={"X-Request-ID": "trace-42"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = [x for x in lines if x.get("logger") == "deeprec.access" and x.get("request_id") == "trace-42"]
    assert access and access[0]["route"] == "/v1/users/{user_id}/recommendations" and access[0]["status"] == 200
    assert access[0]["ms"] >= 0 and access[0]["level"] == "INFO"


def test_cuda_requested_without_a_gpu_refuses_to_start(make_client, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        make_client(device="cuda")


def test_scoring_runs_off_the_event_loop(api, monkeypatch):
    import asyncio

    from app.serving.pipeline import RecommendationService

    seen = []
    original = RecommendationService.recommend

    def spy(self, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            seen.append("event loop")
        except RuntimeError:  # no loop running in this thread: a threadpool worker
            seen.append("worker thread")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RecommendationService, "recommend", spy)
    assert api.get("/v1/users/u1/recommendations").status_code == 200
    assert seen == ["worker thread"]

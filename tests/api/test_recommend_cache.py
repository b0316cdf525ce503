"""Serving over HTTP with the per-user score cache on and off: the same bytes either way, the bytes the
declared response models would write, and new events count at once."""

import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.api.recommend_schemas import PredictRead, RecommendationsRead, SessionRecommendationsRead, SimilarRead
from app.config import Settings
from tests.api.test_recommend import wait_ready
from tests.serving import support
from tests.serving.support import seed_database

GETS = [
    ("/v1/users/u1/recommendations", {}),
    ("/v1/users/u1/recommendations", {"n": 1000}),
    ("/v1/users/u2/recommendations", {"n": 4, "model": "mf", "categories": "Drama,Horror", "exclude": "i1,i3"}),
    ("/v1/users/u3/recommendations", {"n": 6, "model": "content", "exclude_seen": "false"}),
    ("/v1/users/u4/recommendations", {"model": "gru4rec"}),
    ("/v1/users/nobody/recommendations", {"n": 3}),
    ("/v1/users/u5/next-items", {"n": 5}),
    ("/v1/items/i3/similar", {"n": 5}),
]
MODELS = {"recommendations": RecommendationsRead, "next-items": RecommendationsRead, "similar": SimilarRead}


@pytest.fixture
def clients(trained_store, tmp_path, session, make_client):
    """(cache on, cache off), on one database and one model store."""
    seed_database(session)
    models_dir = support.private_copy(trained_store, tmp_path)
    on = make_client(models_dir=models_dir, recommendation_cache_size=100)
    off = make_client(models_dir=models_dir, recommendation_cache_size=0, response_cache_mb=0)
    wait_ready(on)
    wait_ready(off)
    return on, off


def test_cached_and_uncached_responses_are_the_same_bytes(clients):
    on, off = clients
    for _ in range(2):  # the second round is served from the cache
        for path, params in GETS:
            a, b = on.get(path, params=params), off.get(path, params=params)
            assert a.status_code == b.status_code == 200, (path, a.text)
            assert a.content == b.content, path
            model = MODELS[path.rsplit("/", 1)[1]]
            assert a.content == model.model_validate_json(a.content).model_dump_json().encode()
            assert a.headers["content-type"] == "application/json"
    body = {"user_id": "u1", "item_ids": ["i1", "i2", support.NEW_ITEM]}
    for _ in range(2):
        a, b = on.post("/v1/predict", json=body), off.post("/v1/predict", json=body)
        assert a.status_code == 200 and a.content == b.content
        assert a.content == PredictRead.model_validate_json(a.content).model_dump_json().encode()
    a = on.post("/v1/sessions/next-items", json={"item_ids": ["i1", "nope"], "n": 3})
    assert a.status_code == 200 and a.json()["unknown_item_ids"] == ["nope"]
    assert a.content == SessionRecommendationsRead.model_validate_json(a.content).model_dump_json().encode()
    metrics = on.get("/metrics").text
    assert 'deeprec_recommendation_cache_total{result="hit"}' in metrics


def test_events_ingested_after_a_cached_response_count_at_once(clients):
    on, off = clients
    first = on.get("/v1/users/u6/recommendations", params={"n": 3}).json()
    assert on.get("/v1/users/u6/recommendations", params={"n": 3}).json() == first  # cached
    top = first["items"][0]["item_id"]
    r = on.post("/v1/interactions", json={"interactions": [{"user_id": "u6", "item_id": top, "type": "view"}]})
    assert r.status_code < 300, r.text
    after = on.get("/v1/users/u6/recommendations", params={"n": 3})
    assert top not in {i["item_id"] for i in after.json()["items"]}
    assert after.content == off.get("/v1/users/u6/recommendations", params={"n": 3}).content


@pytest.mark.parametrize("concurrency", [1, 3])
def test_serving_work_in_one_process_is_bounded_by_the_setting(
    trained_store, tmp_path, session, make_client, concurrency
):
    seed_database(session)
    client = make_client(models_dir=support.private_copy(trained_store, tmp_path), serving_concurrency=concurrency)
    wait_ready(client)
    svc = client.app.state.recommender
    lock, now, most = threading.Lock(), [0], [0]
    original = svc.recommend

    def tracked(*args, **kwargs):
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        try:
            time.sleep(0.05)  # long enough for the other requests to arrive while this one runs
            return original(*args, **kwargs)
        finally:
            with lock:
                now[0] -= 1

    svc.recommend = tracked
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda u=u: statuses.append(client.get(f"/v1/users/u{u}/recommendations").status_code))
        for u in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 6
    assert 1 <= most[0] <= concurrency
    if concurrency > 1:
        assert most[0] > 1  # the bound, not a lock, keeps them apart


def test_concurrent_requests_answer_each_their_own(trained_store, tmp_path, session, make_client):
    """Many clients at once (the cache off, so every request is computed): each response is for the user
    it asked about, with the list that user gets when asked alone."""
    seed_database(session)
    models_dir = support.private_copy(trained_store, tmp_path)
    busy = make_client(models_dir=models_dir, recommendation_cache_size=0, serving_concurrency=2)
    wait_ready(busy)
    users = [f"u{u}" for u in range(support.N_USERS)]
    paths = [f"/v1/users/{u}/recommendations?n=6&model=content" for u in users]
    paths += [f"/v1/users/{u}/next-items?n=6" for u in users]
    with ThreadPoolExecutor(max_workers=12) as pool:
        together = list(pool.map(busy.get, paths))
    for path, r in zip(paths, together, strict=True):
        assert r.status_code == 200, (path, r.text)
        body, expected = r.json(), busy.get(path).json()
        assert body["user_id"] == path.split("/")[3] and body == expected


def test_the_service_settles_its_heap_once_models_are_loaded(trained_store, tmp_path, session, make_client):
    """By default (DEEPREC_GC_FREEZE) the objects alive once the models are loaded are frozen out of later
    garbage collections; the service still answers."""
    assert Settings(_env_file=None).gc_freeze is True
    seed_database(session)
    gc.unfreeze()
    try:
        client = make_client(models_dir=support.private_copy(trained_store, tmp_path), gc_freeze=True)
        wait_ready(client)
        assert client.app.state.registry.freeze_heap and gc.get_freeze_count() > 0
        assert client.get("/v1/users/u1/recommendations").status_code == 200
    finally:
        gc.unfreeze()

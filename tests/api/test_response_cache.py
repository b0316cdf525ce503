"""The cache of whole answers (app.api.response_cache): a repeated GET list request is answered from memory
with the bytes the pipeline would write, and never after the user's events, the items or the models
changed. On PostgreSQL it is off (no change feed) and every answer is computed."""

import time

import pytest
from prometheus_client import REGISTRY

from app.recsys.data import InteractionData
from app.recsys.pipeline import train_models
from app.recsys.store import ModelStore
from tests.api.test_recommend import wait_ready
from tests.serving import support
from tests.serving.support import add_event, seed_database


def looked_up(result: str) -> float:
    return REGISTRY.get_sample_value("deeprec_response_cache_total", {"result": result}) or 0.0


@pytest.fixture
def served(trained_store, tmp_path, session, make_client, db_url):
    """(client with the response cache on where the backend has a change feed, client with it off), on one
    database and one model store, and whether the first one caches."""
    seed_database(session)
    models_dir = support.private_copy(trained_store, tmp_path)
    on, off = make_client(models_dir=models_dir), make_client(models_dir=models_dir, response_cache_mb=0)
    wait_ready(on)
    wait_ready(off)
    caching = db_url.startswith("sqlite")
    assert (on.app.state.response_cache is not None) == caching
    assert off.app.state.response_cache is None
    return on, off, caching


PATHS = [
    "/v1/users/u1/recommendations?n=5",
    "/v1/users/u2/recommendations?n=4&model=mf&categories=Drama,Horror&exclude=i1,i3",
    "/v1/users/u3/next-items?n=3",
    "/v1/items/i3/similar?n=5",
]


def test_a_repeated_request_gets_the_computed_bytes_from_the_cache(served):
    on, off, caching = served
    for path in PATHS:
        first = on.get(path)
        hits = looked_up("hit")
        again = on.get(path)
        assert first.status_code == again.status_code == 200, first.text
        assert again.content == first.content == off.get(path).content
        assert looked_up("hit") == hits + caching, path
        assert again.headers["content-type"] == "application/json"
        assert again.headers["x-request-id"] != first.headers["x-request-id"]  # the outer middleware still runs
    metrics = on.get("/metrics").text  # a cached answer is counted under its route, not as unmatched
    assert 'route="/v1/users/{user_id}/recommendations",status="200"' in metrics


def test_an_event_committed_by_another_connection_counts_at_once(served, session):
    on, off, _ = served
    path = "/v1/users/u6/recommendations?n=3"
    top = on.get(path).json()["items"][0]["item_id"]
    assert on.get(path).json()["items"][0]["item_id"] == top
    add_event(session, "u6", top)  # the test's own engine: for the service, another process
    after = on.get(path)
    assert top not in {i["item_id"] for i in after.json()["items"]}
    assert after.content == off.get(path).content
    nxt = on.get("/v1/users/u6/next-items?n=3").json()  # next items follow the new last item
    assert nxt == off.get("/v1/users/u6/next-items?n=3").json()


def test_other_users_events_leave_an_answer_cached(served, session):
    on, _, caching = served
    path = "/v1/users/u7/recommendations?n=3"
    first = on.get(path)
    add_event(session, "u8", "i2")
    hits = looked_up("hit")
    assert on.get(path).content == first.content
    assert looked_up("hit") == hits + caching


def test_a_forgotten_user_is_not_answered_from_the_cache(served):
    on, off, caching = served
    path = "/v1/users/u5/recommendations?n=3"
    before = on.get(path).json()
    on.get(path)
    assert off.delete("/v1/users/u5").status_code == 200  # through another process
    misses = looked_up("miss")
    after = on.get(path).json()
    assert looked_up("miss") == misses + caching  # computed again, from no history
    assert after == off.get(path).json() != before  # the seen items it left out are no longer known


def test_popular_lists_are_computed_every_time(served, session):
    on, _, _ = served
    path = "/v1/users/nobody/recommendations?n=3"
    first = on.get(path).json()
    assert first["strategy"] == "popular"
    hits = looked_up("hit")
    on.get(path)
    assert looked_up("hit") == hits  # popular counts move with everyone's events


def test_an_item_made_inactive_leaves_the_cached_answers(served):
    on, off, _ = served
    path = "/v1/items/i3/similar?n=5"
    gone = on.get(path).json()["items"][0]["item_id"]
    on.get(path)
    assert on.put(f"/v1/items/{gone}", json={"active": False}).status_code == 200
    deadline = time.monotonic() + 10  # each process's catalogue is current within DEEPREC_CATALOGUE_REFRESH_S
    for client in (on, off):
        while gone in {i["item_id"] for i in client.get(path).json()["items"]}:
            assert time.monotonic() < deadline, "an inactive item is still served"
            time.sleep(0.05)
    assert on.get(path).content == off.get(path).content


def test_a_new_model_version_is_served_at_once(served, tmp_path):
    on, _, caching = served
    path = "/v1/users/u1/recommendations?n=5&model=mf"
    before = on.get(path).json()
    store: ModelStore = on.app.state.registry.store
    data = InteractionData.from_frames(support.events(), support.catalogue().iloc[: support.N_ITEMS])
    (trained,) = train_models(data, ["mf"], params={"epochs": 1, "batch_size": 128, "seed": 7})
    version = store.save(trained.model)
    store.activate("mf", version)
    on.app.state.registry.refresh()
    misses = looked_up("miss")
    after = on.get(path).json()
    assert after["version"] == version != before["version"]
    assert looked_up("miss") == misses + caching


def test_a_key_is_checked_before_a_cached_answer_is_served(trained_store, tmp_path, session, make_client, db_url):
    seed_database(session)
    client = make_client(models_dir=support.private_copy(trained_store, tmp_path), api_keys="read:r1,write:w1")
    path = "/v1/users/u1/recommendations?n=3"
    deadline = time.monotonic() + 30
    while client.get(path, headers={"X-API-Key": "r1"}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.get(path, headers={"X-API-Key": "w1"}).status_code == 200  # write includes read
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"X-API-Key": "nope"}).status_code == 401
    assert client.get(path + "&bogus=1", headers={"X-API-Key": "r1"}).status_code == 422

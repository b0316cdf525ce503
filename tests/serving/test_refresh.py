"""Background refresh: the change feed reports each user with new events once; the refresher recomputes the
cached entries of those users for their histories now, so their next request is a cache hit that equals
a fresh computation; background work never goes ahead of a request in the serving lane; and the app
runs the refresher in every process, stopping it on shutdown.
"""

import asyncio
import threading
import time

import anyio
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, event

from app.api.batcher import RequestBatcher, background_submitter
from app.db.repository import delete_user
from app.db.tables import Interaction
from app.serving.batching import drive
from app.serving.history import CatalogueCache, DataVersion
from app.serving.refresh import ChangeFeed, ScoreRefresher
from app.serving.service import NEXT_ITEMS, Filters, RecommendationService
from tests.api.test_recommend import wait_ready
from tests.serving.support import add_event, private_copy, seed_database
from tests.serving.test_batching import asks, squares
from tests.serving.test_cache import as_tuple


def counting_statements(engine):
    """The number of statements ``engine`` has sent so far, as a callable."""
    sent = []
    event.listen(engine, "before_cursor_execute", lambda *args: sent.append(1))
    return lambda: len(sent)


def test_change_feed_reports_each_user_with_new_events_once(engine, session):
    seed_database(session)
    watch = DataVersion(engine)
    feed = ChangeFeed(engine, watch, max_rows=5)
    assert feed.poll() == []  # the first poll only sets the mark: older events are not news
    assert feed.poll() == []
    add_event(session, "u1", "i2")
    add_event(session, "u3", "i4")
    add_event(session, "u1", "i5")
    assert sorted(feed.poll()) == ["u1", "u3"]
    statements = counting_statements(engine)
    assert feed.poll() == []
    assert statements() == (0 if watch.usable else 1)  # SQLite: nothing committed, nothing read
    for k in range(6):  # more than max_rows at once: a bulk load, passed over
        add_event(session, f"u{k}", "i1")
    assert feed.poll() == [] and feed.skipped == 6
    add_event(session, "u7", "i1")
    assert feed.poll() == ["u7"]
    session.execute(delete(Interaction))  # the table emptied: the mark follows the ids back
    session.commit()
    assert feed.poll() == [] and feed.mark == 0
    feed.max_rows = 10**9  # PostgreSQL's ids go on from where they were
    add_event(session, "u8", "i3")
    assert feed.poll() == ["u8"]


@pytest.fixture
def stack(loaded):
    """(cached service, uncached service, refresher): the refresher runs its chunks alone, in this thread."""
    registry, sessions = loaded
    cached = RecommendationService(registry, sessions, CatalogueCache(sessions, ttl_s=10.0), cache_size=1000)
    plain = RecommendationService(registry, sessions, CatalogueCache(sessions, ttl_s=0.0), cache_size=0)
    run_here = lambda makes: cached.run_many([make() for make in makes])  # noqa: E731
    refresher = ScoreRefresher(cached, ChangeFeed(cached.engine), run_here, interval_s=0.2)
    refresher.tick()  # sets the feed's mark
    return cached, plain, refresher


def test_entries_of_users_with_new_events_are_recomputed_before_they_ask(stack, session):
    cached, plain, refresher = stack
    f = Filters(n=5)
    for model in (None, "mf"):
        cached.recommend("u4", model=model, filters=f)
    cached.next_items("u4", model="gru4rec", filters=f)
    cached.recommend("u9", filters=f)  # another user: no event, not refreshed
    assert refresher.tick() == {"refreshed": 0, "current": 0, "failed": 0}
    top = cached.recommend("u4", model="mf", filters=f).items[0].item_id
    add_event(session, "u4", top)
    assert sorted(cached.cache.keys_of(["u4"])) == [("hybrid", "u4"), ("mf", "u4"), (NEXT_ITEMS + "gru4rec", "u4")]
    refreshed = REGISTRY.get_sample_value("deeprec_score_refresh_total", {"result": "refreshed"}) or 0.0
    assert refresher.tick() == {"refreshed": 3, "current": 0, "failed": 0}
    assert REGISTRY.get_sample_value("deeprec_score_refresh_total", {"result": "refreshed"}) == refreshed + 3
    hits, misses = cached.cache.hits, cached.cache.misses
    for model in (None, "mf"):
        after = cached.recommend("u4", model=model, filters=f)
        assert top not in {i.item_id for i in after.items}
        assert as_tuple(after) == as_tuple(plain.recommend("u4", model=model, filters=f))
    nxt = cached.next_items("u4", model="gru4rec", filters=f)
    assert as_tuple(nxt) == as_tuple(plain.next_items("u4", model="gru4rec", filters=f))
    assert nxt.items[0].reason == f"next after {top}"
    assert (cached.cache.hits - hits, cached.cache.misses - misses) == (3, 0)  # every one was current
    assert refresher.tick() == {"refreshed": 0, "current": 0, "failed": 0}  # nothing new


def test_a_refreshed_entry_holds_the_list_its_user_asked_for_last(stack, session, db_url):
    """The refresher ranks the new scores for the filters of the user's last request, so on SQLite that
    request, asked again, is answered from memory (``recommend_ready``), as computed now."""
    cached, plain, refresher = stack
    f = Filters(n=3, categories=("Drama",))
    top = cached.recommend("u6", model="mf", filters=f).items[0].item_id
    add_event(session, "u6", top)
    assert refresher.tick()["refreshed"] == 1
    ready = cached.recommend_ready("u6", model="mf", filters=f)
    if not db_url.startswith("sqlite"):  # no commit signal: histories are always queried, in the lane
        assert ready is None
        return
    assert ready is not None and top not in {i.item_id for i in ready.items}
    assert as_tuple(ready) == as_tuple(plain.recommend("u6", model="mf", filters=f))


def test_an_entry_a_request_recomputed_first_is_left_alone(stack, session):
    cached, plain, refresher = stack
    cached.recommend("u2", model="mf")
    add_event(session, "u2", "i7")
    misses = cached.cache.misses
    cached.recommend("u2", model="mf")  # the user asked before the refresher came round
    assert cached.cache.misses == misses + 1
    assert refresher.tick() == {"refreshed": 0, "current": 1, "failed": 0}


def test_a_user_deleted_meanwhile_only_fails_their_own_refresh(stack, session):
    cached, plain, refresher = stack
    for user in ("u5", "u6"):
        cached.recommend(user, model="mf")
        add_event(session, user, "i3")
    delete_user(session=session, user_id="u5")
    session.commit()
    counts = refresher.tick()  # u5's events went with them: only u6 is reported
    assert counts["refreshed"] == 1 and counts["failed"] == 0
    out = cached.recommend("u5", model="mf")
    assert as_tuple(out) == as_tuple(plain.recommend("u5", model="mf"))  # now an unknown user: popular


def counted_rounds(refresher):
    """A semaphore released after each of ``refresher``'s rounds (its thread looks ``tick`` up every round)."""
    rounds = threading.Semaphore(0)
    tick = refresher.tick
    refresher.tick = lambda: (tick(), rounds.release())[0]
    return rounds


def test_a_woken_refresher_runs_a_round_at_once(stack, session):
    """The history reader's sync wakes the refresher (the app wires it): a round runs without waiting for the
    end of its interval, here an hour."""
    cached, _, refresher = stack
    slow = ScoreRefresher(cached, refresher.feed, refresher.submit, interval_s=3600)
    rounds = counted_rounds(slow)
    cached.recommend("u3", model="mf")
    add_event(session, "u3", "i2")
    slow.start()
    try:
        slow.wake()
        assert rounds.acquire(timeout=60)  # an hour otherwise
        assert cached.cache.fresh(("mf", "u3"), (cached.snapshot().token, cached.history("u3").fingerprint()))
    finally:
        slow.stop()
    assert not slow._thread.is_alive()  # stop wakes it too


def test_catalogue_is_renewed_ahead_of_its_expiry(engine, session):
    seed_database(session)
    from app.db.session import make_sessionmaker

    cache = CatalogueCache(make_sessionmaker(engine), ttl_s=10.0)
    first = cache.get()
    assert not cache.renew(ahead_s=1.0)  # fresh
    first.built_at -= 9.5  # expires within the next second
    assert cache.renew(ahead_s=1.0)
    assert time.monotonic() - cache.get().built_at < 1.0  # requests find it current


@pytest.mark.parametrize("per_hop", [1, 2])
def test_background_work_goes_after_queued_requests_in_hops_of_its_own(per_hop):
    hops = []

    def run_many(steps):
        hops.append(len(steps))
        return drive(steps, {"sq": squares}, 8)

    async def main():
        batcher = RequestBatcher(run_many, anyio.CapacityLimiter(1), max_batch=3, background_per_hop=per_hop)
        first = asyncio.create_task(batcher.submit(lambda: asks(("sq", 1, 0))))
        await asyncio.sleep(0)  # in its hop, alone
        background = asyncio.create_task(
            batcher.submit_background([lambda x=x: asks(("sq", 10, x)) for x in (1, "bad", 3, 4)])
        )
        await asyncio.sleep(0)
        requests = [asyncio.create_task(batcher.submit(lambda x=x: asks(("sq", 2, x)))) for x in (5, 6)]
        return await first, await background, await asyncio.gather(*requests)

    first, background, requests = asyncio.run(main())
    assert first == [0] and requests == [[10], [12]]
    assert background[0] == [10] and isinstance(background[1], ValueError) and background[2:] == [[30], [40]]
    # the lone request; then the two requests queued after the background work, without any of it (the room
    # left is not filled); then the background work, per_hop pieces a hop
    assert hops == [1, 2, *[per_hop] * (4 // per_hop)]


def test_a_stopping_refresher_stops_waiting_for_the_loop():
    """Shutdown joins the refresher from the loop's thread: a submit waiting on the loop must give up."""
    release, stopping = threading.Event(), threading.Event()

    def run_many(steps):
        release.wait(30)  # a long hop: the background work waits behind it
        return drive(steps, {"sq": squares}, 8)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        batcher = RequestBatcher(run_many, anyio.CapacityLimiter(1), max_batch=2)
        asyncio.run_coroutine_threadsafe(batcher.submit(lambda: asks(("sq", 1, 1))), loop)  # holds the lane
        threading.Timer(0.2, stopping.set).start()
        out = background_submitter(batcher, loop, stopping)([lambda: asks(("sq", 1, 2))])
        assert isinstance(out[0], RuntimeError) and stopping.is_set()
    finally:
        release.set()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def refreshing_app(make_client, trained_store, tmp_path, interval_s):
    """(client, service, refresher) of a seeded app, models loaded, its refresher every ``interval_s``."""
    client = make_client(models_dir=private_copy(trained_store, tmp_path), score_refresh_interval_s=interval_s)
    with client.app.state.sessionmaker() as session:
        seed_database(session)
    wait_ready(client)
    return client, client.app.state.recommender, client.app.state.score_refresher


def test_the_app_refreshes_in_the_background_and_stops_on_shutdown(make_client, trained_store, tmp_path):
    """The service with its refresher on: after an event, the user's next request is a cache hit that
    equals a fresh computation; shutdown stops the refresher."""
    client, svc, refresher = refreshing_app(make_client, trained_store, tmp_path, interval_s=0.05)
    url = "/v1/users/u3/recommendations?n=5&model=mf"
    item = client.get(url).json()["items"][0]["item_id"]
    time.sleep(0.2)  # a round has set the feed's mark
    body = {"interactions": [{"user_id": "u3", "item_id": item, "type": "view"}]}
    assert client.post("/v1/interactions", json=body).status_code in (200, 201)
    deadline = time.monotonic() + 30
    while not svc.cache.fresh(("mf", "u3"), (svc.registry.models.token, svc.history("u3").fingerprint())):
        assert time.monotonic() < deadline, "the refresher did not refresh the entry"
        time.sleep(0.05)
    hits = svc.cache.hits
    after = client.get(url).json()
    assert svc.cache.hits == hits + 1
    assert item not in {i["item_id"] for i in after["items"]}
    plain = RecommendationService(svc.registry, svc.sessions, CatalogueCache(svc.sessions), cache_size=0)
    expected = plain.recommend("u3", model="mf", filters=Filters(n=5))
    assert [(i["item_id"], i["score"]) for i in after["items"]] == [(i.item_id, i.score) for i in expected.items]
    client.__exit__(None, None, None)  # shutdown
    assert not refresher._thread.is_alive()


def test_the_apps_history_sync_wakes_its_refresher(make_client, trained_store, tmp_path, db_url):
    """SQLite: the sync after a commit names the users with new events and wakes the refresher at once (here
    its interval is an hour). PostgreSQL keeps no histories, so there is no sync: the interval alone runs it."""
    client, svc, refresher = refreshing_app(make_client, trained_store, tmp_path, interval_s=3600)
    rounds = counted_rounds(refresher)
    url = "/v1/users/u3/recommendations?n=5&model=mf"
    assert client.get(url).status_code == 200
    body = {"interactions": [{"user_id": "u3", "item_id": "i2", "type": "view"}]}
    assert client.post("/v1/interactions", json=body).status_code in (200, 201)
    assert client.get(url).status_code == 200  # its history is read again: after a sync, on SQLite
    if db_url.startswith("sqlite"):
        assert rounds.acquire(timeout=60)
    else:
        assert svc._read_history.syncs == 0
    client.__exit__(None, None, None)
    assert not refresher._thread.is_alive()

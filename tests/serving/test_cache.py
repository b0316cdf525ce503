"""The per-user score cache: reused lists equal freshly computed ones, and nothing stale is ever served
(new events, another active version); its size bound holds and size 0 turns it off.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from app.db.repository import ItemUpsert, upsert_items
from app.db.session import SQLITE_BUSY_TIMEOUT_MS, make_sessionmaker
from app.recsys.store import ModelStore
from app.serving.cache import ScoreCache
from app.serving.history import CatalogueCache, DataVersion
from app.serving.results import NotReady, UnknownModel
from app.serving.service import RERANK_ABOVE_N, Filters, RecommendationService
from tests.serving.support import N_ITEMS, N_USERS, add_event, events, seed_database

USERS = [f"u{u}" for u in range(0, N_USERS, 3)]
FILTERS = [
    Filters(n=5),
    Filters(n=1000),
    Filters(n=4, categories=("Drama", "Horror")),
    Filters(n=6, exclude=("i1", "i2", "i3", "nope")),
    Filters(n=7, exclude_seen=False),
    Filters(n=3, categories=("Comedy",), exclude=("i0",), exclude_seen=False),
]


@pytest.fixture
def stack(loaded):
    """(cached service, uncached service) on one registry and one database."""
    registry, sessions = loaded
    cached = RecommendationService(registry, sessions, CatalogueCache(sessions, ttl_s=0.0), cache_size=1000)
    plain = RecommendationService(registry, sessions, CatalogueCache(sessions, ttl_s=0.0), cache_size=0)
    return cached, plain


def as_tuple(out):
    return (out.model, out.version, out.strategy, out.detail, [(i.item_id, i.score, i.reason) for i in out.items])


@pytest.mark.parametrize("model", [None, "mf", "gru4rec", "content"])
def test_filters_on_cached_scores_equal_uncached_lists(stack, model):
    cached, plain = stack
    for user in USERS:
        cached.recommend(user, model=model, filters=Filters(n=2))  # fills the cache
    hits = cached.cache.hits
    for user in USERS:
        for f in FILTERS:
            assert as_tuple(cached.recommend(user, model=model, filters=f)) == as_tuple(
                plain.recommend(user, model=model, filters=f)
            ), (user, f)
    assert cached.cache.hits - hits == len(USERS) * len(FILTERS)  # every one of them was served from the cache
    if model is None:  # the default is the hybrid: its reasons name members, also when reused
        out = cached.recommend("u1", filters=Filters(n=10))
        assert out.model == "hybrid" and {i.reason for i in out.items} <= {"mf", "gru4rec", "content", "popularity"}


def test_an_ingested_event_changes_the_next_response_at_once(stack, session):
    cached, plain = stack
    top = cached.recommend("u4", filters=Filters(n=3)).items[0].item_id
    assert cached.recommend("u4", filters=Filters(n=3)).items[0].item_id == top  # a hit
    misses = cached.cache.misses
    add_event(session, "u4", top)
    after = cached.recommend("u4", filters=Filters(n=3))
    assert cached.cache.misses == misses + 1  # the history changed: recomputed, not reused
    assert top not in {i.item_id for i in after.items}
    assert as_tuple(after) == as_tuple(plain.recommend("u4", filters=Filters(n=3)))
    seq = cached.recommend("u4", model="gru4rec", filters=Filters(n=3))  # sequence models see the new event
    assert seq.items[0].reason == f"next after {top}"


def test_a_newly_active_version_is_served_at_once(stack, models_dir):
    cached, plain = stack
    before = cached.recommend("u2", model="mf", filters=Filters(n=8))
    assert cached.recommend("u2", model="mf", filters=Filters(n=8)).items == before.items  # cached
    store = ModelStore(models_dir)
    mf = store.load("mf", before.version)
    with torch.no_grad():  # a different model: item factors negated, so the ranking turns around
        for name, p in mf.net.named_parameters():
            if "item" in name:
                p.neg_()
    version = store.save(mf)
    store.activate("mf", version)
    cached.registry.refresh()
    after = cached.recommend("u2", model="mf", filters=Filters(n=8))
    assert after.version == version != before.version
    assert [i.item_id for i in after.items] != [i.item_id for i in before.items]
    assert as_tuple(after) == as_tuple(plain.recommend("u2", model="mf", filters=Filters(n=8)))


def test_predict_reuses_cached_scores_exactly(stack):
    from app.serving import items as item_service

    cached, plain = stack
    ids = [f"i{j}" for j in range(0, N_ITEMS, 2)]
    first = item_service.predict(cached, "u3", ids)
    hits = cached.cache.hits
    again = item_service.predict(cached, "u3", ids)
    assert cached.cache.hits == hits + 1
    assert again == first == item_service.predict(plain, "u3", ids)


def test_size_bound_and_size_zero(stack):
    cached, plain = stack
    small = RecommendationService(cached.registry, cached.sessions, cached.catalogue, cache_size=3)
    for user in USERS:
        assert as_tuple(small.recommend(user, model="mf")) == as_tuple(plain.recommend(user, model="mf"))
        assert len(small.cache) <= 3
    assert len(small.cache) == 3
    small.recommend(USERS[-1], model="mf")  # most recent: still there
    assert small.cache.hits == 1
    small.recommend(USERS[0], model="mf")  # evicted long ago
    assert small.cache.hits == 1
    for _ in range(2):
        plain.recommend("u1", model="mf")
    assert len(plain.cache) == 0 and plain.cache.hits == plain.cache.misses == 0


def test_score_cache_lru_and_fingerprints():
    cache: ScoreCache[str] = ScoreCache(2)
    cache.put("a", 1, "A1")
    cache.put("b", 1, "B1")
    assert cache.get("a", 1) == (True, "A1")
    assert cache.get("a", 2) == (False, None)  # another fingerprint never matches
    cache.put("c", 1, "C1")  # evicts b, the least recently used
    assert cache.get("b", 1) == (False, None)
    assert cache.get("c", 1) == (True, "C1") and cache.get("a", 1) == (True, "A1")
    cache.put("a", 2, "A2")  # replaces a's outdated entry
    assert cache.get("a", 1) == (False, None) and cache.get("a", 2) == (True, "A2") and len(cache) == 2
    off: ScoreCache[str] = ScoreCache(0)
    off.put("a", 1, "A1")
    assert off.get("a", 1) == (False, None) and len(off) == 0 and not off.enabled


def test_score_cache_memory_bound():
    cache: ScoreCache[str] = ScoreCache(100, max_bytes=10, weigh=len)  # a value weighs its length
    cache.put("a", 1, "aaaa")
    cache.put("b", 1, "bbbb")
    assert cache.bytes == 8 and len(cache) == 2
    cache.put("c", 1, "cccc")  # 12 bytes > 10: the least recently used entry goes
    assert cache.get("a", 1) == (False, None) and cache.get("c", 1) == (True, "cccc") and cache.bytes == 8
    cache.put("b", 2, "bb")  # replacing an entry counts its new weight only
    assert cache.bytes == 6 and cache.get("b", 2) == (True, "bb")
    cache.put("d", 1, "d" * 11)  # larger than the whole budget: not kept, nothing evicted for it
    assert cache.get("d", 1) == (False, None) and len(cache) == 2 and cache.bytes == 6
    cache.clear()
    assert cache.bytes == 0 and len(cache) == 0


def test_service_cache_memory_bound(stack):
    cached, plain = stack
    cached.recommend(USERS[0], model=None, filters=Filters(n=5))
    one = cached.cache.bytes
    assert one >= 4 * N_ITEMS  # at least the float32 score vector over the catalogue
    small = RecommendationService(
        cached.registry, cached.sessions, cached.catalogue, cache_size=1000, cache_bytes=int(one * 1.5)
    )
    lists = [as_tuple(small.recommend(u, model=None, filters=Filters(n=5))) for u in USERS[:3]]
    assert len(small.cache) == 1 and small.cache.bytes <= int(one * 1.5)  # the budget holds one user's entry
    assert lists == [as_tuple(plain.recommend(u, model=None, filters=Filters(n=5))) for u in USERS[:3]]


def test_history_fingerprint_tracks_order_and_content(stack, session):
    cached, _ = stack
    before = cached.history("u5").fingerprint()
    assert cached.history("u5").fingerprint() == before
    ev = events()
    oldest = int(ev.loc[ev["user_id"] == "u5", "ts"].min())
    add_event(session, "u5", "i0", ts=oldest - 10)  # an old event arriving late, not the latest one
    after = cached.history("u5").fingerprint()
    assert after != before and after[1] == before[1] + 1


def test_next_items_reuse_scores_until_the_sequence_changes(stack, session):
    cached, plain = stack
    for f in (Filters(n=3), Filters(n=3), Filters(n=50, exclude_seen=False)):
        assert as_tuple(cached.next_items("u8", model=None, filters=f)) == as_tuple(
            plain.next_items("u8", model=None, filters=f)
        )
    assert cached.cache.hits >= 2
    add_event(session, "u8", "i5")
    out = cached.next_items("u8", model=None, filters=Filters(n=3))
    assert out.items[0].reason == "next after i5" and "i5" not in {i.item_id for i in out.items}
    assert as_tuple(out) == as_tuple(plain.next_items("u8", model=None, filters=Filters(n=3)))


def test_a_deactivated_item_leaves_a_repeated_cached_list(stack, session):
    cached, plain = stack
    first = cached.recommend("u9", filters=Filters(n=5))
    assert cached.recommend("u9", filters=Filters(n=5)).items == first.items  # the same list, reused
    top = first.items[0].item_id
    upsert_items(session=session, items=[ItemUpsert(top, active=False)])
    session.commit()
    after = cached.recommend("u9", filters=Filters(n=5))  # same scores, new catalogue: ranked again
    assert top not in {i.item_id for i in after.items}
    assert as_tuple(after) == as_tuple(plain.recommend("u9", filters=Filters(n=5)))


def counting_queries(svc, monkeypatch):
    """The number of history queries ``svc`` has sent to the database so far, as a callable."""
    reader = svc._read_history
    query, calls = reader.query, []
    monkeypatch.setattr(reader, "query", lambda user_id: calls.append(user_id) or query(user_id))
    return lambda: len(calls)


def test_history_reads_are_reused_until_that_users_history_changes(stack, session, db_url, monkeypatch):
    """SQLite: a user's history is read again only after a commit changed it (an event of theirs, found by
    id); PostgreSQL has no commit signal and queries on every request. Either way every event counts at once."""
    cached, plain = stack
    queries = counting_queries(cached, monkeypatch)
    on_sqlite = db_url.startswith("sqlite")
    assert cached._read_history.cache.enabled == on_sqlite
    first = cached.history("u5")
    again = cached.history("u5")
    other = cached.history("u6")
    assert again.fingerprint() == first.fingerprint()
    assert queries() == (2 if on_sqlite else 3)
    top = cached.recommend("u5", model="mf", filters=Filters(n=1)).items[0].item_id
    add_event(session, "u5", top)  # another connection commits
    after = cached.history("u5")
    assert after.item_ids[-1] == top and after.fingerprint() == plain.history("u5").fingerprint()
    assert top not in {i.item_id for i in cached.recommend("u5", model="mf", filters=Filters(n=3)).items}
    before = queries()
    assert cached.history("u6").fingerprint() == other.fingerprint() == plain.history("u6").fingerprint()
    assert queries() - before == (0 if on_sqlite else 1)  # u6's history did not change: kept
    if on_sqlite:  # one array serves every request until the user's history changes: nobody may change it
        assert not cached._read_history("u5")[1].flags.writeable
        assert cached._read_history.resets == 1  # the first sync only; the event was followed by id


def test_other_rewrites_of_histories_drop_every_kept_one(stack, session, db_url, monkeypatch):
    """A deleted user, a user created without events, an event deleted or rewritten by any client of the
    database (the triggers of migration 0003 count them), and a bulk load: every kept history is read again;
    a user's attributes changed: nothing is."""
    from sqlalchemy import text

    import app.serving.history as history
    from app.db.repository import delete_user, upsert_user

    cached, plain = stack
    reader = cached._read_history
    kept = db_url.startswith("sqlite")  # PostgreSQL: histories are queried on every request, nothing is kept
    assert reader.cache.enabled == kept

    def resets():
        return reader.resets if kept else None

    def same(user):
        assert cached.history(user).fingerprint() == plain.history(user).fingerprint(), user

    for user in ("u1", "u2", "ghost"):
        same(user)
    assert not cached.history("ghost").exists
    start = reader.resets
    delete_user(session=session, user_id="u1")
    session.commit()
    assert not cached.history("u1").exists
    assert resets() == (start + 1 if kept else None)
    same("u2")
    upsert_user(session=session, user_id="ghost")
    session.commit()
    assert cached.history("ghost").exists
    assert resets() == (start + 2 if kept else None)
    upsert_user(session=session, user_id="u2", attributes={"tier": "gold"})  # not part of a history
    session.commit()
    same("u2")
    assert resets() == (start + 2 if kept else None)
    u2 = "(SELECT id FROM \"user\" WHERE external_id = 'u2')"
    latest = f"(SELECT max(id) FROM interaction WHERE user_id = {u2})"
    session.execute(text(f"UPDATE interaction SET item_id = (SELECT min(id) FROM item) WHERE id = {latest}"))
    session.commit()
    same("u2")
    assert resets() == (start + 3 if kept else None)
    monkeypatch.setattr(history, "MAX_CHANGED_ROWS", 2)
    for item in ("i1", "i2", "i3"):
        add_event(session, "u3", item)
    add_event(session, "u2", "i4")  # in the same sync as the others: more than 2 new events at once
    same("u2")
    assert resets() == (start + 4 if kept else None)


def test_the_commit_signal_has_a_connection_of_its_own_that_never_waits_for_a_lock(engine):
    """The loop reads on DataVersion's connection: SQLite's busy timeout would block it, so that one
    connection has none, and it is out of the engine's pool, whose connections keep theirs."""
    watch = DataVersion(engine)
    if not watch.usable:  # PostgreSQL: no data_version, so no such connection
        assert watch() is None and watch.peek() is None and watch.borrow(lambda conn: 1) is None
        return
    assert watch.peek() is None and watch() is not None  # opened by the first read off the loop
    assert watch.borrow(lambda conn: conn.execute("PRAGMA busy_timeout").fetchone()[0]) == 0
    watch.close()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS


def test_a_history_read_that_raced_with_its_users_event_is_not_kept(stack, session, db_url, monkeypatch):
    """A read that began before a sync naming its user (an event committed while it ran) is not kept
    (PostgreSQL keeps none: the next read is a query anyway)."""
    cached, plain = stack
    reader = cached._read_history
    cached.history("u4")
    add_event(session, "u4", "i9")  # u4's kept history goes at the next sync
    query = reader.query

    def racing(user_id):
        out = query(user_id)  # the history before the event below
        add_event(session, "u4", "i8")
        if reader.cache.enabled:
            reader._sync_to(reader.version())  # another thread's request syncs meanwhile
        return out

    monkeypatch.setattr(reader, "query", racing)
    stale = reader("u4")
    monkeypatch.setattr(reader, "query", query)
    assert stale[1].size + 1 == plain.history("u4").db_ids.size  # that read missed the second event
    assert cached.history("u4").fingerprint() == plain.history("u4").fingerprint()  # and was not kept


def test_history_cache_sees_a_commit_from_another_process(stack, settings):
    """SQLite: data_version moves for a commit in any process; PostgreSQL: the history is queried anyway."""
    cached, _ = stack
    before = cached.history("u6")
    item = next(i for i in cached.catalogue.get().item_ids if i not in set(before.item_ids))
    code = (
        "import sys; from app.db.session import make_engine, make_sessionmaker; from app.config import Settings; "
        "from tests.serving.support import add_event; "
        "s = make_sessionmaker(make_engine(Settings(database_url=sys.argv[1])))(); add_event(s, 'u6', sys.argv[2])"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code, settings.database_url, str(item)], check=True, cwd=root, timeout=120)
    after = cached.history("u6")
    assert list(after.item_ids) == [*before.item_ids, item]


def test_catalogue_is_rebuilt_after_its_ttl_only_when_something_was_committed(engine, session):
    """With the data version watched (SQLite), an expired catalogue is kept while nothing was committed
    (no query, same generation, so ranked lists stay reusable) and rebuilt after any commit; without that
    signal (PostgreSQL) it is rebuilt on every expiry."""
    seed_database(session)
    sessions = make_sessionmaker(engine)
    watch = DataVersion(engine)
    assert watch.usable == (engine.dialect.name == "sqlite")  # the test database is a file
    cache = CatalogueCache(sessions, ttl_s=0.0, watch=watch)
    loads = []
    original = cache.load
    cache.load = lambda: loads.append(1) or original()
    try:
        first = cache.get()
        again = cache.get()
        if watch.usable:
            assert again is first and again.generation == first.generation and len(loads) == 1
            assert cache.get(max_age_s=0.0) is first  # an id not found: nothing new to find either
        else:
            assert again.generation == first.generation + 1 and len(loads) == 2
        upsert_items(session=session, items=[ItemUpsert("fresh", "Fresh", ["Drama"], {})])
        session.commit()
        fresh = cache.get()
        assert fresh.generation > again.generation and "fresh" in fresh.pos
        cache.invalidate()
        assert cache.get().generation == fresh.generation + 1  # a forced reload, committed or not
    finally:
        cache.close()


def test_new_events_update_the_catalogues_popularity_without_reading_its_items(engine, session, monkeypatch):
    """SQLite: after new events only, the catalogue adds them to its popularity counts (no full load, the same
    items and layout); an item written, an event deleted, or more new events than MAX_CHANGED_ROWS: it is
    loaded again. PostgreSQL: loaded again at every expiry. Either way its counts equal a fresh count."""
    import numpy as np
    from sqlalchemy import text

    import app.serving.history as history

    seed_database(session)
    sessions = make_sessionmaker(engine)
    watch = DataVersion(engine)
    cache = CatalogueCache(sessions, ttl_s=0.0, watch=watch)
    fresh = CatalogueCache(sessions, ttl_s=0.0)  # nothing watched: a full load every time
    loads = []
    original = cache.load
    cache.load = lambda: loads.append(1) or original()

    def same():
        got, want = cache.get(), fresh.get()
        assert list(got.item_ids) == list(want.item_ids) and list(got.active) == list(want.active)
        np.testing.assert_array_equal(got.popularity, want.popularity)
        return got

    followed = watch.usable
    try:
        first = same()
        for user, item in (("u1", "i3"), ("u2", "i3"), ("u4", "i5")):
            add_event(session, user, item)
        after = same()
        assert after.popularity[after.pos["i3"]] == first.popularity[first.pos["i3"]] + 2
        assert len(loads) == (1 if followed else 2) and cache.updates == (1 if followed else 0)
        if followed:
            assert after.items is first.items and after.layout == first.layout and after is not first
        upsert_items(session=session, items=[ItemUpsert("i5", active=False)])
        session.commit()
        assert not same().active[first.pos["i5"]]
        session.execute(text("DELETE FROM interaction WHERE id = (SELECT max(id) FROM interaction)"))
        session.commit()
        same()
        monkeypatch.setattr(history, "MAX_CHANGED_ROWS", 2)
        for item in ("i1", "i2", "i3"):
            add_event(session, "u6", item)
        same()
        assert len(loads) == (4 if followed else 5) and cache.updates == (1 if followed else 0)  # each: loaded again
        add_event(session, "u6", "i4")
        same()
        assert cache.updates == (2 if followed else 0)
    finally:
        cache.close()


def test_a_ready_answer_comes_from_memory_only_and_equals_the_computed_one(stack, session, db_url, monkeypatch):
    """``recommend_ready`` and ``next_items_ready`` (the event loop's path) answer only what memory holds: the
    history kept and nothing committed since (SQLite), cached scores and the list ranked for the same
    filters; else None, and the request goes to the serving lane. Their answer is the lane's."""
    _, plain = stack
    cached = RecommendationService(plain.registry, plain.sessions, CatalogueCache(plain.sessions), cache_size=100)
    on_sqlite = db_url.startswith("sqlite")
    f = Filters(n=4, categories=("Drama",))
    g = Filters(n=3)
    assert cached.recommend_ready("u2", filters=f) is None  # nothing cached yet
    assert cached.next_items_ready("u2", model=None, filters=g) is None
    computed = cached.recommend("u2", filters=f)
    nxt = cached.next_items("u2", model=None, filters=g)
    queries = counting_queries(cached, monkeypatch)
    passes = []
    monkeypatch.setattr(cached, "run", lambda steps: passes.append(1))  # the lane path must not be taken
    hits = cached.cache.hits
    ready = cached.recommend_ready("u2", filters=f)
    if not on_sqlite:  # no commit signal: the history is queried, so never on the loop
        assert ready is None
        return
    assert ready is not None and as_tuple(ready) == as_tuple(computed) == as_tuple(plain.recommend("u2", filters=f))
    assert queries() == 0 and not passes and cached.cache.hits == hits + 1
    assert cached.recommend_ready("u2", filters=Filters(n=5)) is None  # other filters: not ranked yet
    assert cached.recommend_ready("u2", model="mf", filters=f) is None  # another model: not cached
    assert cached.recommend_ready("u2", filters=Filters(n=RERANK_ABOVE_N + 1)) is None  # long lists are not kept
    with pytest.raises(UnknownModel):
        cached.recommend_ready("u2", model="nope", filters=f)
    ready_next = cached.next_items_ready("u2", model=None, filters=g)
    assert ready_next is not None and as_tuple(ready_next) == as_tuple(nxt)
    assert as_tuple(ready_next) == as_tuple(plain.next_items("u2", model=None, filters=g))
    with pytest.raises(UnknownModel):
        cached.next_items_ready("u2", model="mf", filters=g)  # not a sequence model
    reader = cached._read_history
    add_event(session, "u7", "i1")  # any commit: the lane syncs first
    assert cached.recommend_ready("u2", filters=f) is None and queries() == 0
    assert cached.next_items_ready("u2", model=None, filters=g) is None
    monkeypatch.undo()  # the lane again: it syncs, and u2's history is kept (another user's event)
    queries = counting_queries(cached, monkeypatch)
    heard = []
    cached.on_history_change(heard.append)
    assert as_tuple(cached.recommend("u2", filters=f)) == as_tuple(computed)
    assert queries() == 0 and as_tuple(cached.recommend_ready("u2", filters=f)) == as_tuple(computed)
    assert heard == [frozenset({"u7"})] and reader.syncs > 0  # the sync told its listeners whose history changed
    cached.registry.ready = False
    with pytest.raises(NotReady):
        cached.recommend_ready("u2", filters=f)


def test_ranked_lists_outlive_a_catalogue_rebuild_that_changed_only_popularity(stack, session):
    cached, _ = stack
    before = cached.catalogue.get()
    add_event(session, "u1", "i3")  # popularity moves; items, flags and categories do not
    cached.catalogue.invalidate()
    after = cached.catalogue.get()
    assert after.generation > before.generation and after.layout == before.layout
    upsert_items(session=session, items=[ItemUpsert("i3", categories=["Drama", "Horror"])])
    session.commit()
    cached.catalogue.invalidate()
    assert cached.catalogue.get().layout != after.layout

"""The serving pipeline end to end on a real database (SQLite and PostgreSQL): cached lists equal computed
ones and never go stale; retrieval from ANN indexes against exact ranking; filters widen retrieval; a
client's member weights; a model asked for by name that failed to load."""

import numpy as np
import pytest
import torch

from app.recsys.index import RETRIEVAL_FILE, SIMILAR_FILE
from app.recsys.store import ModelStore
from app.serving.catalogue import CatalogueKeeper
from app.serving.pipeline import Filters, RecommendationService
from app.serving.registry import ModelRegistry
from app.serving.results import BadRequest, ModelUnavailable
from tests.serving.support import N_ITEMS, N_USERS, add_event

USERS = [f"u{u}" for u in range(0, N_USERS, 3)]
FILTERS = [
    Filters(n=5),
    Filters(n=1000),
    Filters(n=4, categories=("Drama", "Horror")),
    Filters(n=6, exclude=("i1", "i2", "i3", "nope")),
    Filters(n=7, exclude_seen=False),
    Filters(n=3, categories=("Comedy",), exclude=("i0",), exclude_seen=False),
]


def service(registry, sessions, **kw) -> RecommendationService:
    return RecommendationService(registry, sessions, CatalogueKeeper(sessions), **kw)


@pytest.fixture
def stack(loaded):
    """(cached service, uncached service) on one registry (with a hybrid) and one database."""
    registry, sessions = loaded
    return service(registry, sessions), service(registry, sessions, cache_entries=0)


def as_tuple(out):
    return (out.model, out.version, out.strategy, out.detail,
            [(i.item_id, i.score, i.reason, i.retrieved_by) for i in out.items])  # fmt: skip


@pytest.mark.parametrize("model", [None, "mf", "gru4rec", "content"])
def test_cached_lists_equal_computed_ones(stack, model):
    cached, plain = stack
    for user in USERS:
        cached.recommend(user, model=model, filters=Filters(n=2))  # fills the cache
    entries = len(cached.cache)
    for user in USERS:
        for f in FILTERS:
            assert as_tuple(cached.recommend(user, model=model, filters=f)) == as_tuple(
                plain.recommend(user, model=model, filters=f)
            ), (user, f)
    assert len(cached.cache) == entries  # every one of them was answered from the cache
    if model is None:  # the hybrid: its reasons name the members, also when reused
        out = cached.recommend("u1", filters=Filters(n=10))
        assert out.model == "hybrid" and {i.reason for i in out.items} <= {"mf", "gru4rec", "content", "popularity"}


def test_an_event_changes_the_next_answer_at_once(stack, session):
    cached, plain = stack
    before = cached.recommend("u4", model="gru4rec", filters=Filters(n=3))
    add_event(session, "u4", before.items[0].item_id, ts=2_000_000_000)
    after = cached.recommend("u4", model="gru4rec", filters=Filters(n=3))
    assert as_tuple(after) == as_tuple(plain.recommend("u4", model="gru4rec", filters=Filters(n=3)))
    assert after.items[0].reason == f"next after {before.items[0].item_id}"


def test_a_newly_active_version_is_served_at_once(stack, models_dir):
    cached, _ = stack
    first = cached.recommend("u2", model="mf", filters=Filters(n=3))
    store = ModelStore(models_dir)
    version = store.save(store.load("mf"))
    store.activate("mf", version)
    cached.registry.refresh()
    assert cached.recommend("u2", model="mf", filters=Filters(n=3)).version == version != first.version


def test_the_cache_is_bounded_by_entries_and_by_bytes(loaded):
    registry, sessions = loaded
    few = service(registry, sessions, cache_entries=3)
    for user in USERS:
        few.recommend(user, model="mf")
    assert len(few.cache) == 3
    tight = service(registry, sessions, cache_bytes=2_000)
    for user in USERS:
        tight.recommend(user, model="mf")
    assert 0 < tight.cache.currsize <= 2_000 and len(tight.cache) < len(USERS)


def test_below_the_threshold_every_item_is_ranked_exactly(stack):
    """A small catalogue: the served list is the model's own full ranking, exact=true changes nothing."""
    cached, _ = stack
    lm = cached.registry.models["mf"]
    hist = cached.history("u5")
    full = lm.model.score_users(torch.tensor([lm.user_of("u5")]))[0].numpy()
    full[hist.cols(lm)] = -np.inf
    expected = [lm.item_ids[c] for c in np.argsort(-full, kind="stable")[:8]]
    out = cached.recommend("u5", model="mf", filters=Filters(n=8))
    assert [i.item_id for i in out.items] == expected and {i.retrieved_by for i in out.items} == {"all"}
    assert as_tuple(cached.recommend("u5", model="mf", filters=Filters(n=8), exact=True)) == as_tuple(out)


# -- two stages: the same store with ANN indexes and a threshold below the catalogue -----------------------
@pytest.fixture
def indexed(loaded, models_dir):
    """The loaded models saved again with their indexes (threshold 1), and a service retrieving from them."""
    registry, sessions = loaded
    store = ModelStore(models_dir, index_min_items=1)
    for name in list(registry.models):
        store.activate(name, store.save(store.load(name), name=name))
    registry = ModelRegistry(ModelStore(models_dir), torch.device("cpu"))
    registry.refresh()
    return registry, sessions


def recall(served, exact) -> float:
    return len({i.item_id for i in served.items} & {i.item_id for i in exact.items}) / max(len(exact.items), 1)


def test_versions_load_with_their_indexes(indexed):
    registry, _ = indexed
    assert set(registry.models["mf"].indexes) == {RETRIEVAL_FILE, SIMILAR_FILE}
    assert set(registry.models["gru4rec"].indexes) == {RETRIEVAL_FILE, SIMILAR_FILE}
    assert not registry.models["popularity"].indexes and not registry.models["hybrid"].indexes


@pytest.mark.parametrize("model", ["mf", "hybrid"])
def test_retrieved_lists_recall_the_exact_ones(indexed, model):
    """Retrieval deep enough to hold the whole catalogue gives the exact list; a shallow one most of it."""
    registry, sessions = indexed
    deep = service(registry, sessions, ann_min_items=1, depth=N_ITEMS)
    shallow = service(registry, sessions, ann_min_items=1, depth=10)
    scores = []
    for user in USERS:
        exact = deep.recommend(user, model=model, filters=Filters(n=5), exact=True)
        assert [i.item_id for i in deep.recommend(user, model=model, filters=Filters(n=5)).items] == [
            i.item_id for i in exact.items
        ]
        served = shallow.recommend(user, model=model, filters=Filters(n=5))
        assert {i.retrieved_by for i in served.items} <= {"mf", "gru4rec", "content", "popular"}
        scores.append(recall(served, exact))
    assert np.mean(scores) >= 0.8, scores


def test_filters_widen_retrieval_until_enough_items_pass(indexed):
    """A category filter that leaves few of the first candidates: retrieval widens, and every item returned
    is in the category and as the exact ranking within the category orders it."""
    registry, sessions = indexed
    svc = service(registry, sessions, ann_min_items=1, depth=10)
    f = Filters(n=4, categories=("Horror",))
    sizes = []
    for user in USERS:
        served = svc.recommend(user, model="mf", filters=f)
        exact = svc.recommend(user, model="mf", filters=f, exact=True)
        assert [i.item_id for i in served.items] == [i.item_id for i in exact.items]
        sizes.append(len(served.items))
    assert max(sizes) == 4  # the category holds 6 items: users who saw few of them get 4


def test_next_items_and_similar_retrieve_from_the_index(indexed, session):
    registry, sessions = indexed
    svc = service(registry, sessions, ann_min_items=1, depth=N_ITEMS)
    for user in USERS[:5]:
        served = svc.next_items(user, model="gru4rec", filters=Filters(n=5))
        exact = svc.next_items(user, model="gru4rec", filters=Filters(n=5), exact=True)
        assert recall(served, exact) >= 0.8
    served, exact = svc.similar("i3", n=5, model="mf"), svc.similar("i3", n=5, model="mf", exact=True)
    assert recall(served, exact) >= 0.8 and "i3" not in {i.item_id for i in served.items}


def test_similar_items_from_the_index_are_ranked_by_exact_cosine(indexed):
    """The index holds half-precision vectors; its candidates are re-scored in float32, so a search deep
    enough to hold the catalogue gives the exact list with the exact similarities."""
    registry, sessions = indexed
    svc = service(registry, sessions, ann_min_items=1, depth=N_ITEMS)
    for item in ("i3", "i7", "i12"):
        served, exact = svc.similar(item, n=8, model="mf"), svc.similar(item, n=8, model="mf", exact=True)
        assert [i.item_id for i in served.items] == [i.item_id for i in exact.items]
        assert [i.score for i in served.items] == pytest.approx([i.score for i in exact.items], abs=1e-6)


def test_exact_requests_keep_no_copy_of_an_indexed_models_vectors(indexed, loaded):
    """A version with indexes scans its vectors only for an exact request, made for that request; one without
    (a small catalogue, where every request scans them) keeps them."""
    registry, sessions = indexed
    svc = service(registry, sessions, ann_min_items=1, depth=N_ITEMS)
    svc.recommend("u3", model="mf", filters=Filters(n=5), exact=True)
    svc.similar("i3", n=5, model="mf", exact=True)
    svc.recommend("u3", model="mf", filters=Filters(n=5))
    assert not registry.models["mf"].cache  # nothing the size of the catalogue stays
    small, sessions = loaded
    service(small, sessions).similar("i3", n=5, model="mf")
    assert set(small.models["mf"].cache) == {SIMILAR_FILE}


# -- a client's member weights; a model that failed to load ------------------------------------------------
def test_weights_reblend_the_hybrids_members(stack):
    cached, _ = stack
    alone = cached.recommend("u7", model="hybrid", filters=Filters(n=6), weights="mf:1")
    mf = cached.recommend("u7", model="mf", filters=Filters(n=6))
    assert [i.item_id for i in alone.items] == [i.item_id for i in mf.items]  # a per-user z-score keeps mf's order
    assert {i.reason for i in alone.items} == {"mf"}
    learned = cached.recommend("u7", model="hybrid", filters=Filters(n=6))
    assert as_tuple(learned) != as_tuple(alone)
    with pytest.raises(BadRequest, match="not a member"):
        cached.recommend("u7", model="hybrid", weights="sasrec:1")
    with pytest.raises(BadRequest, match="member:number"):
        cached.recommend("u7", model="hybrid", weights="mf:lots")
    with pytest.raises(BadRequest, match="not a ranking hybrid"):
        cached.recommend("u7", model="mf", weights="mf:1")


def test_weights_are_normalised_and_part_of_the_cache_key(stack):
    cached, plain = stack
    even = cached.recommend("u7", model="hybrid", filters=Filters(n=6), weights="mf:0.5,gru4rec:0.5")
    assert as_tuple(cached.recommend("u7", model="hybrid", filters=Filters(n=6), weights="gru4rec:3, mf:3")) == (
        as_tuple(even)
    )  # the same blend, normalised: the same list (and cache entry)
    assert as_tuple(even) == as_tuple(
        plain.recommend("u7", model="hybrid", filters=Filters(n=6), weights="mf:1,gru4rec:1")
    )
    gru = cached.recommend("u7", model="hybrid", filters=Filters(n=6), weights="gru4rec:1")
    assert {i.reason for i in gru.items} == {"gru4rec"}  # not the even blend's cached list
    assert [i.item_id for i in gru.items] != [i.item_id for i in even.items]
    for bad, says in [("mf:-1", ">= 0"), ("mf:0", "above 0"), ("mf:nan", ">= 0"), ("mf", "member:number"),
                      ("mf:1,mf:2", "twice"), ("", "member:number")]:  # fmt: skip
        with pytest.raises(BadRequest, match=says):
            cached.recommend("u7", model="hybrid", weights=bad)


def test_a_model_asked_for_that_failed_to_load_is_a_503_not_another_model(models_dir, loaded):
    registry, sessions = loaded
    store = ModelStore(models_dir)
    weights = store.path("mf", store.active_version("mf")) / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    fresh = ModelRegistry(store, torch.device("cpu"))
    fresh.refresh()
    svc = service(fresh, sessions)
    with pytest.raises(ModelUnavailable) as err:
        svc.recommend("u1", model="mf")
    assert "truncated" in err.value.detail["message"] and err.value.headers["Retry-After"]
    with pytest.raises(ModelUnavailable):
        svc.similar("i1", model="mf")
    assert svc.recommend("u1").model == "hybrid"  # not asked for by name: the default serves

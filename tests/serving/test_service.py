"""Serving logic on a real database (SQLite and PostgreSQL): fallback chain, filters, exclude-seen."""

import copy

import pytest
import torch

from app.db.repository import ItemUpsert, upsert_items
from app.db.session import make_sessionmaker
from app.recsys.store import ModelStore
from app.serving.catalogue import CatalogueKeeper
from app.serving.pipeline import Filters, RecommendationService
from app.serving.registry import LoadedModel, ModelRegistry, ModelSet
from app.serving.results import NotFound, NotReady, UnknownModel
from tests.recsys.synthetic import CATEGORIES
from tests.serving.support import N_ITEMS, add_event, events


def only(svc, *names):
    """Serve just these models (as if the others were never trained)."""
    models = svc.registry.models
    svc.registry.swap(ModelSet({n: models[n] for n in names}, models.generation + 1))
    return svc


def history_of(user_id):
    ev = events()
    return set(ev.loc[ev["user_id"] == user_id, "item_id"])


def test_known_user_gets_personalized_list(svc):
    out = svc.recommend("u1", model="mf", filters=Filters(n=5))
    assert (out.model, out.strategy) == ("mf", "personalized")
    assert out.version == svc.registry.models["mf"].version
    assert len(out.items) == 5
    assert [i.score for i in out.items] == sorted((i.score for i in out.items), reverse=True)
    assert not {i.item_id for i in out.items} & history_of("u1")
    assert all(i.reason for i in out.items)


def test_default_model_is_hybrid_else_best_available(svc):
    out = svc.recommend("u1", filters=Filters(n=3))
    assert out.model in svc.registry.models and out.strategy in ("personalized", "sequential")


def test_unknown_user_with_events_falls_back_to_sequence_model(svc, session):
    add_event(session, "newcomer", "i3")
    add_event(session, "newcomer", "i8")
    out = svc.recommend("newcomer", model="mf", filters=Filters(n=4))
    assert (out.model, out.strategy) == ("gru4rec", "sequential")
    assert "user unknown to mf" in out.detail
    assert not {i.item_id for i in out.items} & {"i3", "i8"}
    assert out.items[0].reason == "next after i8"


def test_without_sequence_model_falls_back_to_content(svc, session):
    only(svc, "mf", "content")
    add_event(session, "newcomer", "i3")
    out = svc.recommend("newcomer", model="mf", filters=Filters(n=4))
    assert (out.model, out.strategy) == ("content", "content")


def test_content_fallback_prefers_the_ranking_version_over_the_rating_one(svc, session):
    """With content and content-rating both served, a fallback ranks with content, even when the rating
    version reports a higher validation NDCG."""
    content = svc.registry.models["content"]
    rated = copy.copy(content.model)
    rated.extra = {**content.model.extra, "objective": "rating"}
    rated.metrics = {**content.model.metrics, "valid_ndcg@10": 1.0}
    models = {"mf": svc.registry.models["mf"], "content": content,
              "content-rating": LoadedModel("content-rating", "v1", rated, content.trained_at)}  # fmt: skip
    svc.registry.swap(ModelSet(models, svc.registry.models.generation + 1))
    add_event(session, "newcomer", "i3")
    out = svc.recommend("newcomer", model="mf", filters=Filters(n=4))
    assert (out.model, out.strategy) == ("content", "content")
    del models["content"]
    svc.registry.swap(ModelSet(models, svc.registry.models.generation + 1))
    assert svc.recommend("newcomer", model="mf", filters=Filters(n=4)).model == "content-rating"  # the only one


def test_user_without_events_gets_popular_within_filters(svc):
    out = svc.recommend("stranger", model="mf", filters=Filters(n=5, categories=("Drama",)))
    assert out.strategy == "popular" and out.model == "popularity"
    dramas = {f"i{j}" for j in range(N_ITEMS) if CATEGORIES[j % len(CATEGORIES)] == "Drama"}
    assert {i.item_id for i in out.items} <= dramas
    counts = events()["item_id"].value_counts()
    assert [i.score for i in out.items] == sorted(counts[list(dramas)].to_numpy(float), reverse=True)[:5]


def test_popularity_by_name_is_the_popular_list_even_with_history(svc):
    """A user with events asking for model=popularity gets popular items, not a sequence model's list."""
    assert history_of("u1")
    out = svc.recommend("u1", model="popularity", filters=Filters(n=4))
    assert (out.model, out.strategy) == ("popularity", "popular") and out.detail is None
    assert out.version == svc.registry.models["popularity"].version
    counts = events()["item_id"].value_counts().drop(list(history_of("u1")), errors="ignore")
    assert [i.score for i in out.items] == sorted(counts.to_numpy(float), reverse=True)[:4]


def test_no_trained_model_serves_popularity_and_says_so(svc):
    svc.registry.swap(ModelSet())
    out = svc.recommend("u1", filters=Filters(n=3))
    assert (out.model, out.version, out.strategy) == ("popularity", None, "popular")
    assert "no trained model" in out.detail
    assert not {i.item_id for i in out.items} & history_of("u1")


def test_category_and_exclude_filters(svc):
    comedies = {f"i{j}" for j in range(N_ITEMS) if CATEGORIES[j % len(CATEGORIES)] == "Comedy"}
    first = svc.recommend("u2", model="mf", filters=Filters(n=3, categories=("Comedy",)))
    assert first.items and {i.item_id for i in first.items} <= comedies
    top = first.items[0].item_id
    again = svc.recommend("u2", model="mf", filters=Filters(n=3, categories=("Comedy",), exclude=(top,)))
    assert top not in {i.item_id for i in again.items}


def test_exclude_seen_reads_events_ingested_after_training(svc, session):
    before = svc.recommend("u3", model="mf", filters=Filters(n=3))
    top = before.items[0].item_id
    add_event(session, "u3", top)
    after = svc.recommend("u3", model="mf", filters=Filters(n=3))
    assert top not in {i.item_id for i in after.items}
    kept = svc.recommend("u3", model="mf", filters=Filters(n=N_ITEMS, exclude_seen=False))
    assert top in {i.item_id for i in kept.items}


def test_inactive_items_are_never_recommended(svc, session):
    top = svc.recommend("u4", model="mf", filters=Filters(n=1)).items[0].item_id
    upsert_items(session=session, items=[ItemUpsert(top, active=False)])
    session.commit()
    svc.catalogue.refresh()
    assert top not in {i.item_id for i in svc.recommend("u4", model="mf", filters=Filters(n=10)).items}


def test_next_items_use_the_sequence_in_the_database_now(svc, session):
    add_event(session, "u5", "i7", ts=int(events()["ts"].max()) + 10)
    out = svc.next_items("u5", model="gru4rec", filters=Filters(n=3))
    assert (out.model, out.strategy) == ("gru4rec", "sequential")
    assert out.items[0].reason == "next after i7"
    with pytest.raises(NotFound):
        svc.next_items("ghost", model=None, filters=Filters())
    with pytest.raises(UnknownModel):
        svc.next_items("u5", model="mf", filters=Filters())


def test_next_items_of_an_untrained_sequence_model_come_from_a_trained_one(svc):
    out = svc.next_items("u5", model="sasrec", filters=Filters(n=3))
    assert (out.model, out.strategy) == ("gru4rec", "sequential")
    assert out.detail == "model 'sasrec' has no trained version yet"


def test_session_next_items_ignore_and_report_unknown_ids(svc):
    out = svc.session_next(["i1", "i2", "nope"], model=None, filters=Filters(n=5))
    assert out.strategy == "sequential" and out.extra["unknown_item_ids"] == ["nope"]
    assert not {i.item_id for i in out.items} & {"i1", "i2"}
    cold = svc.session_next(["nope"], model=None, filters=Filters(n=5))
    assert cold.strategy == "popular"


def test_candidates_are_scored_in_one_pass_per_request(svc, monkeypatch):
    lm = svc.registry.models["mf"]
    calls = []
    original = lm.model.score_candidates
    monkeypatch.setattr(lm.model, "score_candidates", lambda b, u, i: calls.append(i.shape) or original(b, u, i))
    svc.recommend("u1", model="mf", filters=Filters(n=50))
    assert calls == [(1, N_ITEMS)]  # a small catalogue: every item is a candidate


def test_not_ready_until_loaded(models_dir, engine):
    sessions = make_sessionmaker(engine)
    registry = ModelRegistry(ModelStore(models_dir), torch.device("cpu"))
    svc = RecommendationService(registry, sessions, CatalogueKeeper(sessions))
    with pytest.raises(NotReady) as err:
        svc.recommend("u1", filters=Filters())
    assert err.value.headers["Retry-After"].isdigit()


def test_unknown_model_lists_valid_ones(svc):
    with pytest.raises(UnknownModel) as err:
        svc.recommend("u1", model="nope", filters=Filters())
    assert "mf" in err.value.detail["valid_models"]


def test_history_query_is_time_ordered(svc, session):
    hist = svc.history("u6")
    ev = events()
    expected = ev.loc[ev["user_id"] == "u6"].sort_values("ts")["item_id"].tolist()
    assert hist.exists and hist.item_ids.tolist() == expected
    assert not svc.history("ghost").exists

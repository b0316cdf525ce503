"""Predictions for given items and similar items, on a real database (SQLite and PostgreSQL)."""

import numpy as np
import pytest
import torch

from app.recsys.index import SIMILAR_FILE
from app.serving import retrieval
from app.serving.pipeline import user_batch
from app.serving.results import NotFound, UnknownModel
from tests.recsys.synthetic import CATEGORIES
from tests.serving.support import NEW_ITEM, add_event


def test_predict_scores_match_the_full_ranking(svc):
    out = svc.predict("u1", ["i1", "i2", "i3"], "mf")
    lm = svc.registry.models["mf"]
    batch = user_batch(lm, svc.history("u1").cols(lm))
    full = lm.model.score_users(torch.tensor([lm.user_of("u1")]))[0]  # every item, the model's own way
    expected = full[torch.as_tensor(lm.items_of(["i1", "i2", "i3"]))].tolist()
    assert batch.n_users == 1
    assert [p.score for p in out["predictions"]] == pytest.approx(expected, rel=1e-5)
    assert out["strategy"] == "personalized" and out["version"] == lm.version
    assert all(p.rating is None for p in out["predictions"])  # no rating model is trained in this store


def test_predict_with_popularity_by_name_gives_event_counts(svc):
    out = svc.predict("u1", ["i1", "i2", "i3"], "popularity")
    assert (out["model"], out["strategy"]) == ("popularity", "popular")
    assert out["version"] == svc.registry.models["popularity"].version
    cat = svc.current()
    assert [p.score for p in out["predictions"]] == cat.popularity[cat.rows_of(["i1", "i2", "i3"])].tolist()


def test_predict_lists_unknown_ids(svc):
    with pytest.raises(NotFound) as err:
        svc.predict("u1", ["i1", "zz", "yy"], None)
    assert err.value.detail["unknown_item_ids"] == ["yy", "zz"]
    with pytest.raises(NotFound) as err:
        svc.predict("ghost", ["i1"], None)
    assert err.value.detail["unknown_user_ids"] == ["ghost"]
    with pytest.raises(UnknownModel):
        svc.predict("u1", ["i1"], "nope")


def test_predict_new_item_goes_through_content_model(svc):
    out = svc.predict("u1", ["i1", NEW_ITEM], "mf")
    by_id = {p.item_id: p for p in out["predictions"]}
    assert by_id["i1"].model == "mf" and by_id[NEW_ITEM].model == "content"
    assert np.isfinite(by_id[NEW_ITEM].score)


def test_predict_for_user_unknown_to_the_model_uses_the_fallback_chain(svc, session):
    add_event(session, "fresh", "i0")
    out = svc.predict("fresh", ["i1"], "mf")  # unknown to mf: sequence model over one event
    assert out["strategy"] == "sequential" and out["model"] == "gru4rec"
    add_event(session, "idle", "i0")
    svc.registry.swap(type(svc.registry.models)({"popularity": svc.registry.models["popularity"]}))
    cold = svc.predict("idle", ["i1", "i2"], None)
    assert cold["strategy"] == "popular" and all(p.rating is None for p in cold["predictions"])
    assert "event counts" in cold["detail"]


def test_similar_items_by_embeddings(svc):
    out = svc.similar("i1", n=5, model="mf")
    assert (out.model, out.strategy) == ("mf", "similar") and len(out.items) == 5
    assert "i1" not in {i.item_id for i in out.items}
    lm = svc.registry.models["mf"]
    emb = retrieval.vectors(lm, SIMILAR_FILE)
    sims = emb @ emb[lm.items_of(["i1"])[0]]
    best = [lm.item_ids[c] for c in sims.argsort(descending=True).tolist() if lm.item_ids[c] != "i1"][:5]
    assert [i.item_id for i in out.items] == best


def test_similar_default_model_and_unknown_item(svc):
    assert svc.similar("i2", n=3).strategy == "similar"
    with pytest.raises(NotFound):
        svc.similar("nope", n=3)


def test_similar_for_feature_only_item_uses_content_model(svc):
    out = svc.similar(NEW_ITEM, n=5)
    assert (out.model, out.strategy) == ("content", "content")
    assert len(out.items) == 5 and NEW_ITEM not in {i.item_id for i in out.items}
    comedies = [i for i in out.items if int(i.item_id[1:]) % len(CATEGORIES) == CATEGORIES.index("Comedy")]
    assert len(comedies) >= 4  # its features say comedy, and so do its nearest items


def test_similar_with_model_without_embeddings_is_refused(svc):
    with pytest.raises(UnknownModel) as err:
        svc.similar("i1", n=3, model="popularity")
    assert "mf" in err.value.detail["valid_models"]


def test_ratings_come_from_a_model_trained_on_ratings(svc):
    """A rating content model answers `rating` on the data set's scale, also for other models' scores."""
    from app.recsys.data import InteractionData
    from app.recsys.pipeline import train_models
    from tests.serving.support import N_ITEMS, catalogue, events

    data = InteractionData.from_frames(events(), catalogue().iloc[:N_ITEMS])
    rated = train_models(data, "content", params={"epochs": 2, "objective": "rating"})[0]
    store = svc.registry.store
    store.activate("content", store.save(rated.model))
    svc.registry.refresh()
    out = svc.predict("u1", ["i1", "i2"], "content")
    ratings = [p.rating for p in out["predictions"]]
    assert all(r is not None and 0.0 < r < 6.0 for r in ratings)
    assert rated.metrics["test_rmse"] > 0
    via_mf = svc.predict("u1", ["i1", "i2"], "mf")  # mf scores, the rating model rates
    assert [p.rating for p in via_mf["predictions"]] == pytest.approx(ratings)
    assert [p.model for p in via_mf["predictions"]] == ["mf", "mf"]

"""The two ensembles, hybrid (ranking) and hybrid-rating (the rating stack): each saves and loads as itself
under its own served name; a rating stack saved by the old one-class hybrid loads, or is refused clearly."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from app.recsys import pipeline
from app.recsys.models import get_model_class
from app.recsys.models.base import trained_on_ratings
from app.recsys.models.ensemble import Ensemble
from app.recsys.models.hybrid import Hybrid
from app.recsys.models.stacking import RatingStack
from app.recsys.planning import Sizes
from app.recsys.store import CorruptVersion, ModelStore, model_of, served_name, served_name_of, served_names
from tests.recsys.synthetic import taste_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return taste_data(n_users=40, n_items=30, per_user=10)


@pytest.fixture(scope="module")
def run(data):
    params = {"epochs": 2, "hybrid": {"members": ["mf", "popularity"]}, "hybrid-rating": {"members": ["mf"]}}
    results = pipeline.train_models(data, "mf,popularity,hybrid,hybrid-rating", params=params, closed=True)
    return {r.name: r.model for r in results}


def test_two_registered_classes_with_one_predicate_each():
    assert get_model_class("hybrid") is Hybrid and get_model_class("hybrid-rating") is RatingStack
    assert issubclass(Hybrid, Ensemble) and issubclass(RatingStack, Ensemble)
    assert Hybrid.reads_history and RatingStack.reads_history
    assert not Hybrid.supports_rating and RatingStack.supports_rating and RatingStack.rating_only
    for name in ("hybrid", "hybrid-rating"):  # each is served under its registered name, once
        assert served_name(name, "rating") == name and model_of(name) == name
        assert served_names().count(name) == 1
    assert served_name("mf", "rating") == "mf-rating" and model_of("mf-rating") == "mf"


def test_each_saves_and_loads_as_itself(run, data, tmp_path):
    store = ModelStore(tmp_path)
    users = np.arange(data.n_users)
    for model in (run["hybrid"], run["hybrid-rating"]):
        name = served_name_of(model)
        assert name == model.name
        store.activate(name, store.save(model, name=name))
        loaded = store.load(name)
        assert type(loaded) is type(model) and loaded.weights == model.weights
        assert trained_on_ratings(loaded) == trained_on_ratings(model)
        assert torch.equal(loaded.score_history(data, users), model.score_history(data, users))
        top = torch.topk(model.score_history(data, users[:3]), 4).indices
        _, names, codes = loaded.explain_candidates(data.select(users[:3]), users[:3], top)
        assert torch.equal(codes, model.explain_candidates(data.select(users[:3]), users[:3], top)[2])
        assert set(names) == set(model.members)
    stack = store.load("hybrid-rating")
    u, i = torch.as_tensor(data.users[:20]), torch.as_tensor(data.items[:20])
    assert torch.equal(stack.predict_ratings(u, i), run["hybrid-rating"].predict_ratings(u, i))
    assert sorted(store.models()) == ["hybrid", "hybrid-rating"]


def _as_old_hybrid(stack: RatingStack) -> None:
    """What the one-class hybrid wrote for a rating stack: meta name 'hybrid', a rating flag in dims."""
    stack.name = "hybrid"  # type: ignore[misc]
    stack.dims = {**stack.dims, "rating": 1}


def test_a_stack_saved_by_the_old_hybrid_class(run, data, tmp_path):
    store = ModelStore(tmp_path)
    old = RatingStack.from_members(run["hybrid-rating"].members)
    old.net, old.dims, old.extra = run["hybrid-rating"].net, dict(run["hybrid-rating"].dims), run["hybrid-rating"].extra
    old.user_ids, old.item_ids = run["hybrid-rating"].user_ids, run["hybrid-rating"].item_ids
    _as_old_hybrid(old)
    # Saved as hybrid-rating (the served name since ratings had their own): loads as the rating stack.
    version = store.save(old, name="hybrid-rating")
    meta = json.loads((store.path("hybrid-rating", version) / "meta.json").read_text())
    assert meta["name"] == "hybrid" and meta["dims"]["rating"] == 1
    loaded = store.load("hybrid-rating", version)
    assert isinstance(loaded, RatingStack)
    u, i = torch.as_tensor(data.users[:10]), torch.as_tensor(data.items[:10])
    assert torch.equal(loaded.predict_ratings(u, i), run["hybrid-rating"].predict_ratings(u, i))
    # Saved under the plain name, where the ranking hybrid now lives: refused, saying what to do.
    version = store.save(old, name="hybrid")
    with pytest.raises(CorruptVersion, match="hybrid-rating"):
        store.load("hybrid", version)


def test_the_default_set_rates_when_the_data_has_ratings(data):
    names = [p.name for p in pipeline.default_models(data) if p.kept]
    assert names[-2:] == ["hybrid", "hybrid-rating"]
    unrated = Sizes(data.n_users, data.n_items, data.n_interactions, ratings=0)
    picks = {p.name: p for p in pipeline.default_models(unrated)}
    assert not picks["hybrid-rating"].kept and "no explicit ratings" in picks["hybrid-rating"].reason
    assert "hybrid-rating" in pipeline.resolve_models("all")


def test_all_on_data_without_ratings_leaves_the_stack_out(data):
    implicit = dataclasses.replace(data, ratings=np.full(data.n_interactions, np.nan, dtype=np.float32))
    names = ["mf", "hybrid-rating"]
    assert pipeline.without_unrated(names, "all", implicit) == ["mf"]
    assert pipeline.without_unrated(names, "mf,hybrid-rating", implicit) == names  # asked for by name
    with pytest.raises(ValueError, match="no explicit ratings|has none"):
        pipeline.train_models(implicit, "hybrid-rating", params={"epochs": 1})

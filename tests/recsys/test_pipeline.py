"""Training pipeline: model resolution and order, overrides, metrics and progress on synthetic data."""

import pytest

from app.recsys import pipeline, planning
from app.recsys.models import model_names
from app.recsys.pipeline import DEFAULT_MODELS, configs_for, resolve_models, train_models
from app.recsys.planning import Sizes
from tests.recsys.synthetic import taste_data


@pytest.fixture(scope="module")
def data():
    return taste_data(n_users=40, n_items=30, per_user=10)


def test_resolve_all_default_and_lists():
    assert set(resolve_models("all")) == set(model_names())
    assert set(resolve_models("default")) == {m for m in DEFAULT_MODELS if m in model_names()}
    assert resolve_models("mf,popularity") == ["mf", "popularity"]
    assert resolve_models(["mf", "mf"]) == ["mf"]
    with pytest.raises(KeyError, match="valid: .*popularity"):
        resolve_models("nope")


def test_dependencies_come_first_and_are_added(monkeypatch):
    deps = {"mf": ("popularity",)}
    monkeypatch.setattr(pipeline, "dependencies", lambda name: deps.get(name, ()))
    assert resolve_models("mf") == ["popularity", "mf"]
    assert resolve_models(["default", "mf"])[:2] == ["popularity", "mf"]
    deps["popularity"] = ("mf",)
    with pytest.raises(ValueError, match="cycle"):
        resolve_models("mf")


def test_default_is_a_closed_set(monkeypatch):
    deps = {"mf": ("popularity", "gmf")}
    monkeypatch.setattr(pipeline, "dependencies", lambda name: deps.get(name, ()))
    monkeypatch.setattr(pipeline, "DEFAULT_MODELS", ("mf", "popularity"))
    assert resolve_models("default") == ["popularity", "mf"]  # gmf is not in the set: not added
    assert "gmf" in resolve_models("default,mf")  # named explicitly: brings every dependency


def test_every_registered_model_declares_known_dependencies():
    for name in model_names():
        assert set(pipeline.dependencies(name)) <= set(model_names())


def test_overrides_global_and_per_model():
    model_cfg, train_cfg = configs_for("mf", {"epochs": 2, "dim": 12, "mf": {"lr": 0.5}})
    assert (train_cfg.epochs, train_cfg.lr, model_cfg.dim) == (2, 0.5, 12)
    _, pop_cfg = configs_for("popularity", {"epochs": 2, "mf": {"lr": 0.5}})
    assert pop_cfg.epochs == 2 and pop_cfg.lr != 0.5


def test_unknown_parameter_is_refused(data):
    with pytest.raises(ValueError, match="unknown parameter"):
        train_models(data, "mf", params={"epoks": 2})
    with pytest.raises(ValueError, match="not being trained"):
        train_models(data, "mf", params={"popularity": {"epochs": 1}})


def test_train_models_measures_and_reports_progress(data):
    events = []
    params = {"epochs": 2, "batch_size": 128}
    results = train_models(data, ["popularity", "mf"], params=params, on_progress=events.append)
    assert [r.name for r in results] == ["popularity", "mf"]
    for r in results:
        assert r.model.metrics is r.metrics
        for key in ("valid_ndcg@10", "test_ndcg@10", "test_hr@10", "best_epoch", "train_seconds"):
            assert key in r.metrics
        assert 0.0 <= r.metrics["test_ndcg@10"] <= 1.0
        assert r.metrics["data"]["n_interactions"] == data.n_interactions
    stages = [(e.model, e.stage) for e in events]
    assert stages[0] == ("popularity", "start") and stages[-1] == ("mf", "done")
    assert [e.epoch for e in events if e.model == "mf" and e.stage == "epoch"] == [1, 2]
    assert all(e.total == 2 for e in events)


def test_holdout_valid_trains_on_more_and_skips_test(data):
    full = train_models(data, "popularity")[0]
    more = train_models(data, "popularity", holdout="valid")[0]
    assert "test_ndcg@10" not in more.metrics
    assert more.model.net.counts.sum() > full.model.net.counts.sum()


def test_rating_models_get_rmse(data):
    rating = [m for m in model_names() if pipeline.get_model_class(m).supports_rating]
    if not rating:
        pytest.skip("no rating model registered")
    name = rating[0]
    result = train_models(data, name, params={"epochs": 2, "objective": "rating"})[-1]
    assert result.metrics["test_rmse"] > 0 and result.metrics["test_mae"] > 0


def test_neumf_pretrains_from_gmf_and_mlp_of_the_same_run(data, monkeypatch):
    if not {"gmf", "mlp", "neumf"} <= set(model_names()):
        pytest.skip("NCF models not registered")
    assert resolve_models("neumf,gmf,mlp") == ["gmf", "mlp", "neumf"]
    gmf_cls = pipeline.get_model_class("gmf")
    fits = []
    original = gmf_cls.fit
    monkeypatch.setattr(gmf_cls, "fit", lambda self, *a, **k: fits.append(1) or original(self, *a, **k))
    params = {"epochs": 1, "batch_size": 256, "neumf": {"pretrain": True}}
    results = {r.name: r for r in train_models(data, "gmf,mlp,neumf", params=params)}
    assert results["neumf"].model.extra.get("pretrained") is True
    assert len(fits) == 1  # the run's GMF was reused, not a second one trained inside NeuMF


def test_rating_objective_takes_the_models_tuned_rating_defaults():
    import inspect

    for name in model_names():
        default = getattr(pipeline.get_model_class(name), "default_train_config", None)
        if callable(default) and "objective" in inspect.signature(default).parameters:
            _, cfg = configs_for(name, {"objective": "rating"})
            assert cfg == default(objective="rating")
            break
    else:
        pytest.skip("no model has rating-specific defaults")


def test_default_set_keeps_everything_on_a_small_catalogue():
    picks = pipeline.default_models(Sizes(943, 1682, 100_000), available=64 << 30)
    assert all(p.kept for p in picks)
    assert [p.name for p in picks] == resolve_models("default")
    assert set(p.name for p in picks) == {m for m in DEFAULT_MODELS if m in model_names()}


def test_default_set_drops_ease_above_its_limit_and_the_hybrid_follows():
    picks = {p.name: p for p in pipeline.default_models(Sizes(1_000_000, 200_000, 2_000_000), available=1 << 50)}
    assert not picks["ease"].kept and "200,000 items is above its max_items=20,000" in picks["ease"].reason
    assert picks["hybrid"].kept and "ease" not in picks["hybrid"].reason.split(";")[0]
    assert not picks["hybrid-rating"].kept and "above its max_items=20,000" in picks["hybrid-rating"].reason
    kept = [n for n, p in picks.items() if p.kept]
    order = resolve_models("default", default=kept)
    assert "ease" not in order and order[-1] == "hybrid" and "hybrid-rating" not in order
    raised = pipeline.default_models(
        Sizes(1_000, 30_000, 100_000),
        {"ease": {"max_items": 50_000}, "hybrid-rating": {"max_items": 50_000}},
        available=1 << 50,
    )
    assert all(p.kept for p in raised)


def test_default_set_drops_what_does_not_fit_in_memory():
    sizes = Sizes(200_000, 50_000, 2_000_000)
    pop_need = planning.plan(["popularity"], sizes)[0][1]
    picks = pipeline.default_models(sizes, available=pop_need)
    assert [p.name for p in picks if p.kept] == ["popularity"]
    dropped = {p.name: p.reason for p in picks if not p.kept}
    assert "available" in dropped["mf"] and "max_items" in dropped["ease"]
    assert "available" in dropped["hybrid"]  # popularity is a member, but the fusion itself does not fit
    nothing = {p.name: p for p in pipeline.default_models(sizes, available=0)}
    assert not any(p.kept for p in nothing.values())
    assert nothing["hybrid"].reason == "none of its members is in the set"


def test_train_models_default_trains_the_chosen_set(monkeypatch):
    data = taste_data(n_users=40, n_items=30, per_user=10)
    monkeypatch.setattr(pipeline, "DEFAULT_MODELS", ("popularity", "ease"))
    results = train_models(data, "default", params={"epochs": 1, "ease": {"max_items": 20}})
    assert [r.name for r in results] == ["popularity"]  # 30 items: EASE left out, its override unused
    assert [r.name for r in train_models(data, "default", params={"epochs": 1})] == ["popularity", "ease"]

"""Rating stack (hybrid-rating): rating members stacked on validation ratings beat each of them; saves, serves."""

import dataclasses

import numpy as np
import pytest
import torch

from app.recsys import pipeline
from app.recsys.metrics import rmse
from app.recsys.models import stacking
from app.recsys.models.abilities import RatingPredictor
from app.recsys.models.base import FitReport, Recommender, TrainConfig, trained_on_ratings
from app.recsys.models.hybrid import Hybrid
from app.recsys.models.mf import MF, MFConfig
from app.recsys.models.stacking import RatingStack, RatingStackConfig
from app.recsys.splits import ratio_split
from app.recsys.training import rating_errors
from tests.recsys.synthetic import taste_data, with_newcomer

CFG = TrainConfig(epochs=20, batch_size=256, lr=5e-3, patience=100, seed=0, objective="rating")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split():
    return ratio_split(taste_data(n_users=150, n_items=60, per_user=30), valid_frac=0.15, test_frac=0.2, seed=0)


def _pairs(data):
    rated = data.has_ratings()
    return (
        torch.as_tensor(data.users[rated]),
        torch.as_tensor(data.items[rated]),
        torch.as_tensor(data.ratings[rated]),
    )


@dataclasses.dataclass(frozen=True)
class NoConfig:
    pass


class Planted(Recommender):
    """A rating member that knows every rating up to a planted error (per user, or per item)."""

    config_cls = NoConfig
    supports_rating = True

    def __init__(self, name: str, table: torch.Tensor, like) -> None:
        super().__init__()
        self.name = name
        self.user_ids, self.item_ids = like.user_ids, like.item_ids
        self.table = table  # [U, I]
        self.extra["objective"] = "rating"

    def fit(self, train, valid, cfg, on_epoch=None) -> FitReport:
        return FitReport()

    def score_users(self, users):
        return self.table[users]

    def predict_ratings(self, users, items):
        return self.table[users, items]

    def score_candidates(self, batch, users, items):
        return self.table[torch.as_tensor(users)].gather(1, items)


def _truth(split) -> torch.Tensor:
    """[U, I] every known rating (train, valid and test), 3 elsewhere."""
    table = torch.full((split.train.n_users, split.train.n_items), 3.0)
    for part in (split.train, split.valid, split.test):
        u, i, r = _pairs(part)
        table[u, i] = r
    return table


def test_stack_beats_each_member_when_their_errors_differ(split):
    truth = _truth(split)
    gen = torch.Generator().manual_seed(0)
    by_user = truth + 0.8 * torch.randn(truth.shape[0], 1, generator=gen)  # wrong per user
    by_item = truth + 0.8 * torch.randn(1, truth.shape[1], generator=gen)  # wrong per item
    members = [Planted("by_user", by_user, split.train), Planted("by_item", by_item, split.train)]
    hybrid = RatingStack.from_members(members)
    report = hybrid.fit(split.train, split.valid, CFG)
    assert report.metric_name == "rmse" and trained_on_ratings(hybrid)

    users, items, truth_test = _pairs(split.test)
    lo, hi = float(np.nanmin(split.train.ratings)), float(np.nanmax(split.train.ratings))
    solo = {m.name: rmse(m.predict_ratings(users, items).clamp(lo, hi), truth_test) for m in members}
    stacked = rmse(hybrid.predict_ratings(users, items), truth_test)
    assert stacked < 0.85 * min(solo.values()), (stacked, solo)
    w = hybrid.weights
    assert set(w) == {"by_user", "by_item"} and all(0.2 < v < 0.8 for v in w.values()), w
    # What the stack reports about itself: validation errors, the out-of-fold estimate, its choices.
    assert hybrid.metrics["valid_rmse"] == pytest.approx(rating_errors(hybrid, split.valid)["rmse"])
    assert hybrid.metrics["valid_rmse_cv"] >= hybrid.metrics["valid_rmse"] - 1e-9
    stack = hybrid.extra["stack"]
    assert stack["ridge"] in stacking.RIDGE_GRID and len(stack["cv"]) == 2 * len(stacking.RIDGE_GRID)
    assert stack["member_valid_rmse"]["by_user"] > hybrid.metrics["valid_rmse"]


def test_members_must_be_rating_models(split):
    flat = Planted("flat", torch.zeros(split.train.n_users, split.train.n_items), split.train)
    flat.extra["objective"] = "implicit"
    with pytest.raises(ValueError, match="objective 'rating'"):
        RatingStack.from_members([flat]).fit(split.train, split.valid, CFG)


def test_ridge_fit_recovers_a_linear_blend():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    y = 0.5 + x @ np.array([0.2, 0.3, 0.5])
    coef, intercept = stacking.ridge_fit(x, y, np.full(3, 1 / 3), 0.0)
    assert np.allclose(coef, [0.2, 0.3, 0.5]) and intercept == pytest.approx(0.5)
    shrunk, _ = stacking.ridge_fit(x, y, np.full(3, 1 / 3), 10.0)  # a strong ridge pulls towards the prior
    assert np.abs(shrunk - 1 / 3).max() < np.abs(coef - 1 / 3).max()


@pytest.fixture(scope="module")
def offered(split):
    """An mf trained on ratings earlier in the run (small shapes for small data)."""
    mf = MF(MFConfig(dim=8))
    mf.fit(split.train, split.valid, dataclasses.replace(CFG, epochs=30, batch_size=128, lr=2e-2))
    return mf


@pytest.fixture(scope="module")
def trained(split, offered):
    """A rating stack given the run's mf; it trains its other member (content) on ratings itself."""
    hybrid = RatingStack(RatingStackConfig(members=("mf", "content")))
    hybrid.use_dependencies({"mf": offered})
    hybrid.fit(split.train, split.valid, CFG)
    return hybrid


def test_trains_rating_members_and_predicts_on_the_scale(trained, offered, split):
    assert list(trained.members) == ["mf", "content"] and trained.members["mf"] is offered
    assert all(m.extra["objective"] == "rating" for m in trained.members.values())
    assert set(trained.extra["member_reports"]) == {"content"}
    users, items, truth = _pairs(split.test)
    mean = float(np.nanmean(split.train.ratings))
    assert rmse(trained.predict_ratings(users, items), truth) < 0.75 * rmse(torch.full_like(truth, mean), truth)
    lo, hi = float(np.nanmin(split.train.ratings)), float(np.nanmax(split.train.ratings))
    scores = trained.score_history(split.train, np.arange(split.train.n_users))  # [U, I] ratings, as scores
    assert scores.min() >= lo and scores.max() <= hi
    assert torch.allclose(scores[users, items], trained.predict_ratings(users, items), atol=1e-5)


def test_save_load_gives_identical_predictions(trained, split, tmp_path):
    trained.save(tmp_path / "hybrid")
    assert not list(tmp_path.rglob("*.pkl")) and (tmp_path / "hybrid" / "members" / "mf" / "meta.json").is_file()
    loaded = RatingStack.load(tmp_path / "hybrid")
    users, items, _ = _pairs(split.test)
    assert torch.equal(loaded.predict_ratings(users, items), trained.predict_ratings(users, items))
    everyone = np.arange(split.train.n_users)
    assert torch.equal(loaded.score_history(split.train, everyone), trained.score_history(split.train, everyone))
    assert loaded.metrics == trained.metrics and loaded.weights == trained.weights
    top = torch.topk(loaded.score_history(split.train, np.array([0])), 3).indices
    _, names, codes = loaded.explain_candidates(split.train.select([0]), np.array([0]), top)
    assert set(names[codes.numpy()].ravel()) <= {"mf", "content", "gmf"}


def test_the_ranking_hybrid_does_not_rate(split):
    """Ranking and rating are two models: the hybrid has no rating objective and points to hybrid-rating."""
    from app.recsys.models.popularity import Popularity

    pop = Popularity()
    pop.fit(split.train, split.valid, dataclasses.replace(CFG, objective="implicit"))
    assert not isinstance(Hybrid(), RatingPredictor) and isinstance(RatingStack(), RatingPredictor)
    with pytest.raises(ValueError, match="hybrid-rating"):
        Hybrid.from_members([pop]).fit(split.train, split.valid, CFG)
    hybrid = Hybrid.from_members([pop])
    hybrid.fit(split.train, split.valid, dataclasses.replace(CFG, objective="implicit", epochs=1))
    assert not trained_on_ratings(hybrid)


def test_pipeline_trains_the_rating_members_first_and_hands_them_over():
    data = taste_data(n_users=40, n_items=30, per_user=10)
    # A rating run asked for the hybrid trains the rating stack in its place, after its rating members.
    assert pipeline.resolve_models("hybrid", objective="rating") == ["mf", "content", "gmf", "hybrid-rating"]
    assert pipeline.resolve_models("hybrid-rating", objective="rating") == ["mf", "content", "gmf", "hybrid-rating"]
    assert "sasrec" in pipeline.resolve_models("hybrid")  # the implicit hybrid keeps its members
    assert pipeline.resolve_models("hybrid-rating") == ["hybrid-rating"]  # elsewhere it trains its own
    results = {r.name: r for r in pipeline.train_models(data, "hybrid", params={"epochs": 2, "objective": "rating"})}
    assert list(results) == ["mf", "content", "gmf", "hybrid-rating"]
    stack = results["hybrid-rating"].model
    assert isinstance(stack, RatingStack) and stack.name == "hybrid-rating"
    assert all(stack.members[n] is results[n].model for n in ("mf", "content", "gmf"))
    assert results["hybrid-rating"].metrics["test_rmse"] > 0 and results["hybrid-rating"].metrics["valid_rmse"] > 0


def test_an_implicit_run_trains_the_stack_beside_the_hybrid_with_its_own_rating_members():
    data = taste_data(n_users=40, n_items=30, per_user=10)
    params = {"epochs": 2, "hybrid": {"members": ["mf", "popularity"]}}
    run = pipeline.train_models(data, "mf,popularity,hybrid,hybrid-rating", params=params, closed=True)
    results = {r.name: r.model for r in run}
    assert list(results) == ["mf", "popularity", "hybrid", "hybrid-rating"]
    hybrid, stack = results["hybrid"], results["hybrid-rating"]
    assert isinstance(hybrid, Hybrid) and isinstance(stack, RatingStack)
    assert not trained_on_ratings(results["mf"]) and not trained_on_ratings(hybrid) and trained_on_ratings(stack)
    assert list(stack.members) == ["mf", "content", "gmf"] and stack.members["mf"] is not results["mf"]
    assert all(trained_on_ratings(m) for m in stack.members.values())
    assert stack.metrics["valid_rmse"] > 0 and "valid_ndcg@10" in hybrid.metrics


def test_rating_protocols_list_the_hybrid_after_its_members():
    from app.recsys.evaluation import EvalData
    from app.recsys.experiment import EvalConfig, evaluate_models
    from tests.recsys.synthetic import items_frame, taste_frame

    data = EvalData("taste", taste_frame(n_users=40, n_items=30, per_user=10), items_frame(30))
    (res,) = evaluate_models("hybrid", data, ["rating"], EvalConfig(seeds=(0,), epochs=2))
    assert list(res.models) == ["hybrid", "mf", "content", "gmf", "hybrid-rating"]  # requested, then what rates
    assert res.models["hybrid"].status == "not applicable" and "hybrid-rating" in res.models["hybrid"].reason
    rated = {n: m for n, m in res.models.items() if n != "hybrid"}
    assert all(m.status == "ok" for m in rated.values()), {n: m.reason for n, m in rated.items()}
    assert res.models["hybrid-rating"].runs[0]["rmse"] > 0


def test_unseen_user_is_rated_by_the_members_that_read_history(trained, split):
    """A user absent from training (row past the last one): mf sits out, content rates from features."""
    history = with_newcomer(split.train)
    row = np.array([split.train.n_users])
    scores = trained.score_history(history, row)[0]  # [I]
    lo, hi = trained.extra["rating_min"], trained.extra["rating_max"]
    assert torch.isfinite(scores).all() and scores.min() >= lo and scores.max() <= hi and scores.std() > 0
    everything = torch.arange(split.train.n_items).unsqueeze(0)
    contrib = trained.contributions(history.select(row), np.array([-1]), everything)[0][0]  # [I, M]
    assert torch.all(contrib[:, 0] == 0)  # nothing credited to mf, which never saw the user
    top = torch.topk(scores, 3).indices.unsqueeze(0)
    _, names, codes = trained.explain_candidates(history.select(row), np.array([-1]), top)
    assert set(names[codes.numpy()].ravel()) == {"content"}

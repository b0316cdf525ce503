"""Protocols on synthetic data: candidate exclusion, shared sampled negatives, rating splits, the runner."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from app.recsys import experiment
from app.recsys.evaluation import (
    EvalData,
    evaluate_full_ranking,
    evaluate_rating,
    evaluate_sampled,
    loo_split,
    rating_split,
    sample_candidates,
)
from app.recsys.experiment import EvalConfig, evaluate_models
from app.recsys.models import _REGISTRY
from app.recsys.models.base import FitReport, Recommender, TrainConfig
from tests.recsys.synthetic import items_frame, taste_frame

STUBS = "tests.recsys.test_evaluation"


@pytest.fixture(scope="module")
def data():
    return EvalData("taste", taste_frame(), items_frame())


@pytest.fixture(scope="module")
def split(data):
    return loo_split(data)


class Fixed(Recommender):
    """Scores from a given [U, I] matrix; remembers the history it was asked to score with."""

    name = "fixed"
    config_cls = dict

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__({})
        self.matrix = scores
        self.histories: list[int] = []

    def score_history(self, history, users):
        self.histories.append(history.n_interactions)
        return self.matrix[torch.as_tensor(users)]


def _oracle(split, fill: float = 0.0) -> torch.Tensor:
    """Test item scores 1, validation item 2, training items 3: only exclusion makes it perfect."""
    s = torch.full((split.train.n_users, split.train.n_items), fill)
    s[split.test.users, split.test.items] = 1.0
    s[split.valid.users, split.valid.items] = 2.0
    s[split.train.users, split.train.items] = 3.0
    return s


def test_full_ranking_excludes_train_and_valid_items_and_reads_train_plus_valid(split):
    model = Fixed(_oracle(split))
    m = evaluate_full_ranking(model, split, ks=(1, 5))
    assert m["hr@1"] == 1.0 and m["ndcg@1"] == 1.0 and m["mrr@5"] == 1.0
    assert m["n_users"] == len(np.unique(split.test.users))
    assert set(model.histories) == {split.train.n_interactions + split.valid.n_interactions}


def test_constant_scorer_ranks_last_under_full_ranking(split):
    m = evaluate_full_ranking(Fixed(torch.zeros(split.train.n_users, split.train.n_items)), split, ks=(10,))
    assert m["hr@10"] == 0.0 and m["ndcg@10"] == 0.0
    assert m["coverage@10"] > 0  # lists exist even though none of them hits


def test_sampled_negatives_are_never_positives_and_are_distinct(split):
    cands = sample_candidates(split, n_negatives=20, seed=3)
    everything = split.train.union(split.valid).union(split.test)
    seen = everything.seen_mask(cands.users).numpy()
    neg = cands.items[:, 1:]
    assert not seen[np.arange(len(neg))[:, None], neg].any()
    assert all(len(set(row)) == len(row) for row in neg.tolist())
    assert (cands.items[:, 0] == split.test.items[split.test.indptr[cands.users]]).all()
    again = sample_candidates(split, n_negatives=20, seed=3)
    assert np.array_equal(cands.items, again.items)  # drawn once per seed: reproducible
    assert not np.array_equal(cands.items, sample_candidates(split, n_negatives=20, seed=4).items)


def test_sampled_user_with_almost_the_whole_catalogue():
    rows = [("u0", f"i{j}", 4.0, 100 + j) for j in range(9)] + [("u1", f"i{j}", 4.0, 200 + j) for j in range(4)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "value", "ts"])
    split = loo_split(EvalData("dense", frame, items_frame(10)))  # 10 items, u0 saw 9 of them
    cands = sample_candidates(split, n_negatives=5, seed=0)
    u0 = cands.items[list(cands.users).index(split.train.user_index(["u0"])[0])]
    assert u0[1] == split.train.item_index(["i9"])[0] and (u0[2:] == -1).all()
    oracle = Fixed(_oracle(split, fill=5.0))  # the unseen item scores highest: the target ranks second
    assert evaluate_sampled(oracle, split, cands, ks=(1, 2))["hr@1"] == 0.0


def test_sampled_protocol_scores_the_target_among_its_candidates(split):
    cands = sample_candidates(split, n_negatives=10, seed=0)
    assert evaluate_sampled(Fixed(_oracle(split, fill=0.0)), split, cands, ks=(1,))["hr@1"] == 1.0
    flat = Fixed(torch.zeros(split.train.n_users, split.train.n_items))
    assert evaluate_sampled(flat, split, cands, ks=(10,))["hr@10"] == 0.0  # 11 candidates, all tied


@dataclass(frozen=True)
class NoConfig:
    pass


class MeanRating(Recommender):
    """Predicts the training mean: RMSE equals the test ratings' spread around it."""

    name = "mean_rating"
    config_cls = NoConfig
    supports_rating = True

    def fit(self, train, valid, cfg, on_epoch=None):
        self.bind(train)
        self.extra["mean"] = float(np.nanmean(train.ratings))
        self.extra["objective"] = cfg.objective
        return FitReport(epochs_run=1, best_epoch=1)

    def build(self, **dims):
        return torch.nn.Linear(1, 1)

    def score_users(self, users):
        return torch.zeros(len(users), self.n_items)

    def predict_ratings(self, users, items):
        return torch.full((len(users),), self.extra["mean"])


class Broken(MeanRating):
    name = "broken"

    def fit(self, train, valid, cfg, on_epoch=None):
        raise RuntimeError("boom")


def test_rating_splits(data):
    frame = data.interactions
    u1 = rating_split(EvalData("files", frame, None, frame.iloc[:1200], frame.iloc[1200:]), "u1")
    assert u1.test.n_interactions == len(frame) - 1200  # the explicit test file, untouched
    temporal = rating_split(data, "temporal")
    assert temporal.test.ts.min() >= temporal.train.ts.max()
    total = sum(part.n_interactions for part in (temporal.train, temporal.valid, temporal.test))
    assert temporal.test.n_interactions == round(0.1 * total)
    model = MeanRating()
    model.fit(temporal.train, temporal.valid, TrainConfig(objective="rating"))
    m = evaluate_rating(model, temporal)
    truth = temporal.test.ratings.astype(np.float64)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((truth - model.extra["mean"]) ** 2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(truth - model.extra["mean"])))
    with pytest.raises(ValueError):
        rating_split(data, "u1")  # no explicit files in this source


def test_runner_shares_negatives_reports_unavailable_and_failures(data, monkeypatch):
    monkeypatch.setitem(_REGISTRY, "mean_rating", f"{STUBS}:MeanRating")
    monkeypatch.setitem(_REGISTRY, "broken", f"{STUBS}:Broken")
    monkeypatch.setitem(_REGISTRY, "missing_module", "app.recsys.models.not_there:Nothing")
    seen = []
    real = experiment.evaluate_sampled

    def spy(model, split, cands, ks, batch_size):
        seen.append(cands.items.copy())
        return real(model, split, cands, ks, batch_size)

    monkeypatch.setattr(experiment, "evaluate_sampled", spy)
    cfg = EvalConfig(ks=(5, 10), seeds=(0, 1), epochs=2)
    names = "popularity,mf,broken,not_a_model,missing_module"
    loo, sampled = evaluate_models(names, data, ["loo", "sampled"], cfg)
    assert sampled.sampled and "SAMPLED" in sampled.label and not loo.sampled
    assert len(seen) == 4 and all(np.array_equal(s, seen[0]) for s in seen)  # 2 models x 2 seeds, one draw
    mf = loo.models["mf"]
    assert mf.status == "ok" and [r["seed"] for r in mf.runs] == [0, 1]
    values = [r["ndcg@10"] for r in mf.runs]
    assert mf.mean["ndcg@10"] == pytest.approx(np.mean(values))
    assert mf.std["ndcg@10"] == pytest.approx(np.std(values, ddof=1))
    assert loo.models["popularity"].std["ndcg@10"] == 0.0  # deterministic model
    assert loo.models["not_a_model"].status == "unavailable"
    assert loo.models["missing_module"].status == "unavailable"
    assert loo.models["broken"].status == "failed" and "boom" in loo.models["broken"].reason
    assert loo.to_dict()["models"]["mf"]["mean"]["ndcg@10"] == mf.mean["ndcg@10"]


def test_runner_rating_protocol_only_trains_rating_models(data, monkeypatch):
    monkeypatch.setitem(_REGISTRY, "mean_rating", f"{STUBS}:MeanRating")
    (res,) = evaluate_models("popularity,mean_rating", data, ["rating"], EvalConfig(seeds=(0,)))
    assert res.protocol == "rating-temporal"  # no u1 files in this source
    assert res.models["popularity"].status == "not applicable"
    run = res.models["mean_rating"].runs[0]
    assert run["rmse"] > 0 and run["mae"] > 0 and run["n_ratings"] > 0

"""Sampled validation: a fixed, seeded sample of users ranked with full ranking, its size recorded."""

import numpy as np
import pandas as pd
import pytest
import torch

from app.recsys.data import InteractionData
from app.recsys.metrics import target_ranks
from app.recsys.models.base import TrainConfig
from app.recsys.models.popularity import Popularity
from app.recsys.pipeline import make_split, train_models
from app.recsys.training import eval_sample, ranking_score, unseen_ranks, validation_score
from tests.recsys.synthetic import taste_data


def tiny() -> tuple:
    """Popularity counts a:4 b:3 c:2 d:1 e:0 from the history; one target per user (ts 100)."""
    seen = {"u0": "a", "u1": "ab", "u2": "abc", "u3": "abcd"}
    target = {"u0": "c", "u1": "d", "u2": "d", "u3": "e"}
    rows = [(u, i, t) for u, items in seen.items() for t, i in enumerate(items)]
    rows += [(u, i, 100) for u, i in target.items()]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]).assign(value=np.nan)
    data = InteractionData.from_frames(frame)
    return data.subset(data.ts < 100), data.subset(data.ts >= 100)


def test_sampled_validation_ranks_exactly_the_seeded_sample():
    history, targets = tiny()
    model = Popularity()
    model.fit(history, None, TrainConfig())
    # By hand: among each user's unseen items the target ranks 1 (u0: b > c; u1: c > d) or 0 (u2, u3).
    per_user = np.array([1 / np.log2(3), 1 / np.log2(3), 1.0, 1.0])
    full = validation_score(model, history, targets, TrainConfig(eval_users=0))["ndcg@10"]
    assert full == pytest.approx(per_user.mean())
    for seed in range(4):
        chosen = np.random.default_rng(seed).choice(np.arange(4), 2, replace=False)
        sample = eval_sample(targets, 2, seed)
        assert sorted(np.unique(sample.users)) == sorted(chosen)
        score = validation_score(model, history, targets, TrainConfig(eval_users=2, seed=seed))["ndcg@10"]
        assert score == pytest.approx(per_user[chosen].mean())
    assert eval_sample(targets, 10, 0) is targets  # fewer users than the limit: all of them


def test_pipeline_records_the_sample_size():
    data = taste_data(n_users=40, n_items=30, per_user=10)
    split = make_split(data)
    sampled = train_models(data, "popularity", params={"eval_users": 5, "seed": 3})[0]
    assert sampled.metrics["eval_users"] == 5 and sampled.metrics["eval_sampled"] is True
    expected = ranking_score(sampled.model, split.train, eval_sample(split.valid, 5, 3), 10)
    assert sampled.metrics["valid_ndcg@10"] == pytest.approx(expected["ndcg@10"])
    full = train_models(data, "popularity")[0]
    assert full.metrics["eval_users"] == len(np.unique(split.valid.users)) and full.metrics["eval_sampled"] is False
    whole = ranking_score(full.model, split.train, split.valid)
    assert full.metrics["valid_ndcg@10"] == pytest.approx(whole["ndcg@10"])


def test_unseen_ranks_equal_target_ranks_on_masked_scores():
    data = taste_data(n_users=50, n_items=40, per_user=12)
    users = np.arange(0, 50, 2)
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (len(users), data.n_items), generator=gen).float()  # many ties
    scores[0, :5] = float("nan")
    scores[1] = float("-inf")
    targets = torch.randint(0, data.n_items, (len(users),), generator=gen)
    seen = data.seen_mask(users)
    expected = target_ranks(scores.masked_fill(seen, float("-inf")), targets)
    assert torch.equal(unseen_ranks(scores, data, users, targets), expected)


def test_the_score_budget_shrinks_the_sample_on_a_huge_catalogue(monkeypatch) -> None:
    """Full ranking costs users x items: on 1M items 10,000 users would be 10^10 scores an epoch."""
    from app.recsys.training import EVAL_MIN_USERS, eval_user_limit

    cfg = TrainConfig(eval_users=10_000, eval_scores=10**9)
    assert eval_user_limit(cfg, 1_682) == 10_000  # small catalogues: the sample as asked
    assert eval_user_limit(cfg, 200_000) == 5_000
    assert eval_user_limit(cfg, 1_000_000) == EVAL_MIN_USERS == 1_000
    assert eval_user_limit(cfg, 10_000_000) == EVAL_MIN_USERS  # never below the floor
    assert eval_user_limit(TrainConfig(eval_users=0), 10_000_000) == 0  # "all" stays all
    monkeypatch.setattr("app.recsys.training.EVAL_MIN_USERS", 1)  # a budget of 3 users on this small data
    data = taste_data()
    ranked = train_models(data, "popularity", params={"eval_users": 50, "eval_scores": 3 * data.n_items})[0]
    assert ranked.metrics["eval_users"] == 3 and ranked.metrics["eval_sampled"] is True

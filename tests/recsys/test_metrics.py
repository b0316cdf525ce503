"""Metrics against hand-computed values: ties, users without relevant items, K past the catalogue."""

import math

import pytest
import torch

from app.recsys.metrics import (
    coverage,
    hits_from_ranks,
    loo_metrics,
    mae,
    novelty,
    ranking_hits,
    ranking_metrics,
    rmse,
    target_ranks,
)

NEG = float("-inf")


def _rel(n_items, *items_per_user):
    rel = torch.zeros(len(items_per_user), n_items, dtype=torch.bool)
    for row, items in enumerate(items_per_user):
        rel[row, list(items)] = True
    return rel


def test_multi_relevant_user_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    rel = _rel(5, {1, 3})
    m = ranking_metrics(scores, rel, [3, 5])
    # K=3: list [0, 1, 2], one hit at position 2 of 2 relevant.
    assert m["hr@3"] == pytest.approx(1.0)
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(1 / 2)
    assert m["f1@3"] == pytest.approx(0.4)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert m["mrr@3"] == pytest.approx(0.5)
    assert m["map@3"] == pytest.approx((1 / 2) / 2)
    # K=5: hits at positions 2 and 4.
    assert m["precision@5"] == pytest.approx(2 / 5)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["f1@5"] == pytest.approx(2 * 0.4 / 1.4)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert m["map@5"] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_constant_scorer_gets_the_worst_rank():
    scores = torch.ones(1, 4)
    rel = _rel(4, {0})
    assert target_ranks(scores, torch.tensor([0])).tolist() == [3]
    m = ranking_metrics(scores, rel, [2, 4])
    assert m["hr@2"] == 0.0 and m["ndcg@2"] == 0.0
    assert m["ndcg@4"] == pytest.approx(1 / math.log2(5))
    assert m["mrr@4"] == pytest.approx(0.25)


def test_ties_go_against_relevant_items_only():
    # Two relevant items tied with each other fill consecutive places; a tied non-relevant item goes first.
    assert ranking_hits(torch.tensor([[0.5, 0.9, 0.5, 0.1]]), _rel(4, {0, 2}), 3).tolist() == [[False, True, True]]
    hits = ranking_hits(torch.tensor([[0.5, 0.9, 0.5, 0.5]]), _rel(4, {0, 2}), 4)
    assert hits.tolist() == [[False, False, True, True]]


def test_users_without_relevant_items_are_excluded_from_the_mean():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.3, 0.2, 0.1]])
    rel = _rel(3, {0}, set())
    both = ranking_metrics(scores, rel, [1])
    alone = ranking_metrics(scores[:1], rel[:1], [1])
    assert both == alone
    assert both["hr@1"] == 1.0 and both["precision@1"] == 1.0
    assert ranking_metrics(scores[1:], rel[1:], [1])["hr@1"] == 0.0  # nobody to average: 0, not NaN


def test_k_larger_than_catalogue():
    m = ranking_metrics(torch.tensor([[0.3, 0.2, 0.1]]), _rel(3, {2}), [5])
    assert m["hr@5"] == 1.0
    assert m["precision@5"] == pytest.approx(1 / 5)  # missing slots count as misses
    assert m["recall@5"] == 1.0
    assert m["ndcg@5"] == pytest.approx(0.5)
    assert m["mrr@5"] == pytest.approx(1 / 3)
    assert m["map@5"] == pytest.approx(1 / 3)
    assert ranking_hits(torch.tensor([[0.3, 0.2, 0.1]]), _rel(3, {2}), 5).shape == (1, 5)


def test_excluded_and_nan_scores_are_never_hits():
    assert ranking_metrics(torch.tensor([[NEG, 0.5, 0.2]]), _rel(3, {0}), [3])["hr@3"] == 0.0
    nan = torch.full((1, 3), float("nan"))
    assert ranking_metrics(nan, _rel(3, {1}), [3])["hr@3"] == 0.0
    assert target_ranks(nan, torch.tensor([1])).tolist() == [2]


def test_multi_relevant_path_agrees_with_leave_one_out_ranks():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (50, 20), generator=gen).float()  # many ties on purpose
    targets = torch.randint(0, 20, (50,), generator=gen)
    rel = torch.zeros(50, 20, dtype=torch.bool)
    rel[torch.arange(50), targets] = True
    ranks = target_ranks(scores, targets)
    assert torch.equal(hits_from_ranks(ranks, 10), ranking_hits(scores, rel, 10))
    full = ranking_metrics(scores, rel, [10])
    for name, value in loo_metrics(ranks, 10).items():
        assert full[name] == pytest.approx(value)
    assert full["map@10"] == pytest.approx(full["mrr@10"])  # one relevant item: AP is the reciprocal rank


def test_batch_equals_users_one_by_one():
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(6, 12, generator=gen)
    rel = torch.rand(6, 12, generator=gen) < 0.3
    batch = ranking_metrics(scores, rel, [4])
    keep = [u for u in range(6) if rel[u].any()]
    singles = [ranking_metrics(scores[u : u + 1], rel[u : u + 1], [4]) for u in keep]
    for name in batch:
        assert batch[name] == pytest.approx(sum(s[name] for s in singles) / len(keep))


def test_coverage_and_novelty_by_hand():
    top = torch.tensor([[0, 1], [1, 2], [0, -1]])
    assert coverage(top, 5) == pytest.approx(3 / 5)
    counts = torch.tensor([4, 2, 1, 0, 0])
    # p = [1, 1/2, 1/4] -> self-information [0, 1, 2] bits; recommended 0, 1, 1, 2, 0.
    assert novelty(top, counts, n_users=4) == pytest.approx((0 + 1 + 1 + 2 + 0) / 5)
    assert novelty(torch.tensor([[3]]), counts, n_users=4) == pytest.approx(2.0)  # unseen counts as once


def test_rating_errors_by_hand():
    pred, truth = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 5.0])
    assert mae(pred, truth) == pytest.approx(1.0)
    assert rmse(pred, truth) == pytest.approx(math.sqrt(5 / 3))

"""Ranking and rating metrics, vectorised over users.

Ties count against the target: an item is ranked below every other candidate with an equal
score, so a constant scorer gets the worst possible rank rather than a lucky one.
"""

from __future__ import annotations

import torch


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, I] scores (excluded items already -inf), [B] target index -> [B] 0-based pessimistic rank."""
    target_scores = scores.gather(1, targets.unsqueeze(1))  # [B, 1]
    above_or_tied = (scores >= target_scores).sum(dim=1)  # counts the target itself
    return above_or_tied - 1


def loo_metrics(ranks: torch.Tensor, k: int) -> dict[str, float]:
    """Leave-one-out metrics at K from 0-based ranks of one target per user."""
    r = ranks.double()
    hit = (r < k).double()
    ndcg = hit / torch.log2(r + 2.0)
    mrr = hit / (r + 1.0)
    n = max(len(r), 1)
    hr = float(hit.sum()) / n
    return {
        f"hr@{k}": hr,
        f"ndcg@{k}": float(ndcg.sum()) / n,
        f"mrr@{k}": float(mrr.sum()) / n,
        f"recall@{k}": hr,
        f"precision@{k}": hr / k,
    }


def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((pred.double() - target.double()) ** 2)))


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.mean(torch.abs(pred.double() - target.double())))

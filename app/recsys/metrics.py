"""Ranking, beyond-accuracy and rating metrics, vectorised over users.

Ties count against the relevant items: among equal scores every non-relevant candidate is
ranked first, so a constant scorer gets the worst possible rank rather than a lucky one.
NaN scores count as -inf. Items scored -inf are not candidates and never count as hits.

Conventions (the usual ones, e.g. RecBole's): precision@K divides by K even when fewer than K
candidates exist; recall@K divides by the user's number of relevant items; F1@K is per user
then averaged; NDCG@K's ideal DCG puts min(#relevant, K) hits on top; MAP@K divides by
min(#relevant, K). Users without any relevant item are excluded from every average.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

RANKING_METRICS = ("hr", "precision", "recall", "f1", "ndcg", "mrr", "map")


def _no_nan(scores: torch.Tensor) -> torch.Tensor:
    """NaN would compare false against everything and rank first; score it as -inf instead."""
    if torch.isnan(scores).any():
        return scores.masked_fill(torch.isnan(scores), float("-inf"))
    return scores


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, I] scores (excluded items already -inf), [B] target index -> [B] 0-based pessimistic rank."""
    scores = _no_nan(scores)
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


def hits_from_ranks(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """[B] 0-based rank of each user's single relevant item -> [B, k] bool hit at each list position."""
    return ranks.unsqueeze(1) == torch.arange(k, device=ranks.device).unsqueeze(0)


def ranking_hits(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """[B, I] scores, [B, I] bool relevance -> [B, k] bool: is the item at each top-k position relevant.

    Ties are broken against relevant items: candidates are ordered by relevance (non-relevant
    first) and then stably by score, so equal scores keep non-relevant items in front.
    Positions past the catalogue (k > I) or holding a -inf item are misses.
    """
    scores = _no_nan(scores)
    relevant = relevant.bool()
    k_eff = min(k, scores.shape[1])
    first = torch.argsort(relevant.to(torch.int8), dim=1, stable=True)  # [B, I] non-relevant first
    order = torch.argsort(scores.gather(1, first), dim=1, descending=True, stable=True)[:, :k_eff]
    top = first.gather(1, order)  # [B, k_eff] item index at each position
    hits = relevant.gather(1, top) & (scores.gather(1, top) > float("-inf"))
    if k_eff < k:
        hits = torch.cat([hits, hits.new_zeros(hits.shape[0], k - k_eff)], dim=1)
    return hits


def user_metrics(hits: torch.Tensor, n_relevant: torch.Tensor) -> dict[str, torch.Tensor]:
    """[B, K] bool hits, [B] relevant count -> per-user metrics at K = hits.shape[1], each [B].

    Users with no relevant item get 0 here; ``mean_over_users`` leaves them out.
    """
    k = hits.shape[1]
    h = hits.double()
    n_rel = n_relevant.double().to(h.device)
    pos = torch.arange(1, k + 1, dtype=torch.float64, device=h.device)  # 1-based positions
    n_hits = h.sum(1)
    safe_rel = n_rel.clamp(min=1.0)
    precision = n_hits / k
    recall = n_hits / safe_rel
    f1 = torch.where(n_hits > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    discount = 1.0 / torch.log2(pos + 1.0)  # [K]
    dcg = (h * discount).sum(1)
    ideal = (pos.unsqueeze(0) <= n_rel.unsqueeze(1)).double()  # [B, K] min(n_rel, K) hits on top
    ndcg = dcg / (ideal * discount).sum(1).clamp(min=1e-12)
    first = torch.where(hits.any(1), hits.double().argmax(1).double() + 1.0, torch.inf)
    mrr = torch.where(hits.any(1), 1.0 / first, 0.0)
    precision_at_hits = h.cumsum(1) / pos * h  # P@i where position i is a hit
    ap = precision_at_hits.sum(1) / torch.minimum(safe_rel, torch.tensor(float(k), dtype=torch.float64))
    return {
        "hr": (n_hits > 0).double(),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ndcg": ndcg,
        "mrr": mrr,
        "map": ap,
    }


def mean_over_users(per_user: dict[str, torch.Tensor], n_relevant: torch.Tensor, k: int) -> dict[str, float]:
    """Average per-user metrics over users with at least one relevant item; keys become 'name@k'."""
    keep = n_relevant.to(next(iter(per_user.values())).device) > 0
    n = int(keep.sum())
    return {f"{name}@{k}": float(v[keep].sum()) / n if n else 0.0 for name, v in per_user.items()}


def ranking_metrics(scores: torch.Tensor, relevant: torch.Tensor, ks: list[int] | tuple[int, ...]) -> dict[str, float]:
    """Every ranking metric at every K for users with any number of relevant items."""
    hits = ranking_hits(scores, relevant, max(ks))
    n_rel = relevant.bool().sum(1)
    out: dict[str, float] = {}
    for k in ks:
        out.update(mean_over_users(user_metrics(hits[:, :k], n_rel), n_rel, k))
    return out


def coverage(top_items: torch.Tensor, n_items: int) -> float:
    """Share of the catalogue that appears in at least one top-K list; entries of -1 are empty slots."""
    flat = top_items.reshape(-1)
    flat = flat[flat >= 0]
    return float(torch.unique(flat).numel()) / max(n_items, 1)


def novelty(top_items: torch.Tensor, item_counts: torch.Tensor, n_users: int) -> float:
    """Mean self-information -log2(p_i) of recommended items, p_i = share of users who saw item i.

    An item nobody interacted with counts as seen once, so its self-information stays finite.
    """
    flat = top_items.reshape(-1)
    flat = flat[flat >= 0]
    if flat.numel() == 0:
        return 0.0
    p = item_counts.double().to(flat.device).clamp(min=1.0)[flat] / max(n_users, 1)
    return float((-torch.log2(p)).mean())


def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((pred.double() - target.double()) ** 2)))


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.mean(torch.abs(pred.double() - target.double())))


# A rating model's validation RMSE as comparable across models: a stack fitted on the validation
# ratings reports its cross-validated RMSE there (``valid_rmse_cv``), the others their held-out one.
VALIDATION_RMSE_KEYS = ("valid_rmse_cv", "valid_rmse")


def validation_rmse(metrics: Mapping[str, Any]) -> tuple[str, float] | None:
    """(key, value) of the comparable validation RMSE in a model's ``metrics``, or None without one."""
    for key in VALIDATION_RMSE_KEYS:
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return key, float(value)
    return None

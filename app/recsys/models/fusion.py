"""Score fusion helpers for the hybrid: per-user normalisation and a direct search on validation NDCG.

Shapes: U users, I items, M members. ``z`` is [U, I, M] normalised member scores, ``seen`` [U, I]
the items excluded from ranking, ``targets`` [U] each user's held-out item.
"""

from __future__ import annotations

import torch

from app.recsys.metrics import loo_metrics, target_ranks

SEARCH_FACTORS = (0.0, 0.5, 0.8, 1.25, 2.0)


def normalise_scores(scores: torch.Tensor, seen: torch.Tensor | None, how: str, rank_offset: float) -> torch.Tensor:
    """(B, I) raw member scores, (B, I) seen mask -> (B, I) comparable across members.

    zscore: standardised with the mean and spread of the user's unseen items, the only ones ever
    recommended; rank: 1 / (rank_offset + rank) among the unseen items (reciprocal rank fusion).
    """
    free = torch.ones_like(scores, dtype=torch.bool) if seen is None else ~seen
    if how == "rank":
        masked = scores.masked_fill(~free, float("-inf"))
        ranks = masked.argsort(dim=1, descending=True).argsort(dim=1).float()  # [B, I] 0 = best
        return 1.0 / (rank_offset + ranks)
    if how != "zscore":
        raise ValueError(f"unknown normalise {how!r}: use zscore or rank")
    n = free.sum(1, keepdim=True).clamp(min=1)
    mean = (scores * free).sum(1, keepdim=True) / n
    var = ((scores - mean).pow(2) * free).sum(1, keepdim=True) / n
    return (scores - mean) / var.sqrt().clamp(min=1e-6)


def fused_ndcg(z: torch.Tensor, w: torch.Tensor, seen: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """NDCG@k of the fused scores ``z @ w`` for one held-out item per user."""
    scores = (z @ w).masked_fill(seen, float("-inf"))  # [U, I]
    return loo_metrics(target_ranks(scores, targets), k)[f"ndcg@{k}"]


def best_start(z: torch.Tensor, candidates: list[torch.Tensor], seen: torch.Tensor, targets: torch.Tensor, k: int):
    """The candidate weight vector with the highest NDCG@k, and that NDCG."""
    scored = [(fused_ndcg(z, w, seen, targets, k), i) for i, w in enumerate(candidates)]
    best, i = max(scored)
    return candidates[i], best


def coordinate_search(
    z: torch.Tensor,
    w: torch.Tensor,
    seen: torch.Tensor,
    targets: torch.Tensor,
    k: int,
    rounds: int = 2,
    min_gain: float = 1e-4,
) -> tuple[torch.Tensor, float]:
    """Rescale one member's weight at a time while NDCG@k improves by at least ``min_gain``.

    NDCG is piecewise constant in the weights, so this refines a smooth (softmax-loss) solution.
    """
    w = w.clone()
    best = fused_ndcg(z, w, seen, targets, k)
    for _ in range(rounds):
        improved = False
        for m in range(len(w)):
            for factor in SEARCH_FACTORS:
                trial = w.clone()
                trial[m] = w[m] * factor
                if not bool(trial.abs().sum() > 0):
                    continue
                score = fused_ndcg(z, trial, seen, targets, k)
                if score > best + min_gain:
                    best, w, improved = score, trial, True
        if not improved:
            break
    return w, best

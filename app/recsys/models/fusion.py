"""Score fusion for the hybrid: per-user normalisation of member scores and the learned weighting.

Shapes: U users, I items, M members. ``z`` is [U, I, M] normalised member scores, ``seen`` [U, I]
the items excluded from ranking, ``targets`` [U] each user's held-out item.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.recsys.metrics import loo_metrics, target_ranks


def normalise_scores(scores: torch.Tensor, seen: torch.Tensor | None, how: str, rank_offset: float) -> torch.Tensor:
    """(B, I) raw member scores, (B, I) seen mask -> (B, I) comparable across members; (B, I, M) scores
    of M members at once -> (B, I, M), each member normalised on its own.

    zscore: standardised with the mean and spread of the user's unseen items, the only ones ever
    recommended; rank: 1 / (rank_offset + rank) among the unseen items (reciprocal rank fusion).
    """
    if seen is None:
        free = torch.ones_like(scores, dtype=torch.bool)
    else:
        free = ~seen if scores.dim() == 2 else ~seen.unsqueeze(-1)  # [B, I] or [B, I, 1]
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


class FusionNet(nn.Module):
    """Per-member weights, optionally gated by the user's history length: w_u = weight + gate * f(u).

    f(u) is log(1 + history length), standardised over the users the weights were fitted on, so the
    mix can lean on collaborative members for long histories and on others for short ones.
    """

    def __init__(self, n_users: int, n_members: int, gated: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_members))  # [M]
        self.gate = nn.Parameter(torch.zeros(n_members), requires_grad=gated)  # [M]
        self.register_buffer("length_stats", torch.tensor([0.0, 1.0]))  # mean, std of log1p(length)
        self.register_buffer("train_lengths", torch.zeros(n_users))  # [U] for scoring without a history

    def fit_lengths(self, train_lengths: np.ndarray, fit_lengths: np.ndarray) -> None:
        self.train_lengths.copy_(torch.as_tensor(train_lengths, dtype=torch.float32))
        logs = np.log1p(fit_lengths.astype(np.float64))
        self.length_stats.copy_(torch.tensor([logs.mean(), max(logs.std(), 1e-3)]))

    def user_weights(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) history lengths -> (B, M) each user's member weights."""
        f = (lengths.float().log1p() - self.length_stats[0]) / self.length_stats[1]
        return self.weight + f.unsqueeze(1) * self.gate


def fuse(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(U, I, M) normalised scores, (U, M) or (M,) weights -> (U, I) fused scores."""
    return z @ w if w.dim() == 1 else torch.einsum("uim,um->ui", z, w)


def fused_ndcg(z: torch.Tensor, w: torch.Tensor, seen: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """NDCG@k of the fused scores for one held-out item per user."""
    scores = fuse(z, w).masked_fill(seen, float("-inf"))  # [U, I]
    return loo_metrics(target_ranks(scores, targets), k)[f"ndcg@{k}"]

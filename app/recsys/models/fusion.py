"""Score fusion for the hybrid: per-user normalisation of member scores and the learned weighting.

Shapes: U users, I items, M members. ``z`` is [U, I, M] normalised member scores, ``seen`` [U, I]
the items excluded from ranking, ``targets`` [U] each user's held-out item.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.recsys.metrics import loo_metrics, target_ranks


def normalise_candidates(
    raw: torch.Tensor, k: int, free: torch.Tensor, how: str, rank_offset: float, scale: float = 1.0
) -> torch.Tensor:
    """(B, K + R, M) member scores of K candidates then R reference items, (B, R) the reference items the
    user has not seen -> (B, K, M) the candidates' scores made comparable across members.

    zscore: standardised with the mean and spread of the unseen reference items (the catalogue's unseen
    items when the reference is the whole catalogue); rank: 1 / (rank_offset + rank), the rank counting
    the unseen reference items that score higher, times ``scale`` (catalogue / reference size) for a sample.
    """
    cand, ref = raw[:, :k], raw[:, k:]  # [B, K, M], [B, R, M]
    f = free.unsqueeze(-1)  # [B, R, 1]
    if how == "rank":
        ranked = ref.masked_fill(~f, float("-inf")).transpose(1, 2).contiguous().sort(dim=-1).values  # [B, M, R]
        at_or_below = torch.searchsorted(ranked, cand.transpose(1, 2).contiguous(), right=True)  # [B, M, K]
        higher = (ref.shape[1] - at_or_below).transpose(1, 2).float() * scale  # [B, K, M] unseen items above
        return 1.0 / (rank_offset + higher)
    if how != "zscore":
        raise ValueError(f"unknown normalise {how!r}: use zscore or rank")
    n = f.sum(1, keepdim=True).clamp(min=1)  # [B, 1, 1]
    mean = (ref * f).sum(1, keepdim=True) / n
    var = ((ref - mean).pow(2) * f).sum(1, keepdim=True) / n
    return (cand - mean) / var.sqrt().clamp(min=1e-6)


class FusionNet(nn.Module):
    """Per-member weights, optionally gated by the user's history length: w_u = weight + gate * f(u).

    f(u) is log(1 + history length), standardised over the users the weights were fitted on, so the
    mix can lean on collaborative members for long histories and on others for short ones.
    """

    length_stats: torch.Tensor
    train_lengths: torch.Tensor

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

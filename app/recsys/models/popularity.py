"""Popularity baseline: every user gets the most interacted-with items (optionally time-decayed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app.recsys.data import InteractionData
from app.recsys.models.base import Recommender, TrainConfig


@dataclass(frozen=True)
class PopularityConfig:
    half_life_days: float = 0.0  # 0 means plain counts


class _Counts(torch.nn.Module):
    counts: torch.Tensor

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(n_items))


class Popularity(Recommender):
    """Item counts (optionally time-decayed).

    Cost: time O(E) once; memory O(E + I) while fitting, 4 I bytes kept.
    """

    name = "popularity"
    config_cls = PopularityConfig
    closed_form = True

    def build(self, *, n_users: int, n_items: int) -> torch.nn.Module:
        return _Counts(n_items)

    def solve(self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig) -> None:
        net = self.bind(train)
        assert isinstance(net, _Counts)
        weights = np.ones(train.n_interactions)
        if self.config.half_life_days > 0 and train.n_interactions:
            age_days = (train.ts.max() - train.ts) / 86_400.0
            weights = 0.5 ** (age_days / self.config.half_life_days)
        counts = np.bincount(train.items, weights=weights, minlength=train.n_items)
        net.counts.copy_(torch.as_tensor(counts, dtype=torch.float32))

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.net, _Counts)
        return self.net.counts.unsqueeze(0).expand(len(users), -1)  # [B, I]

    def score_candidates(self, batch: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.net, _Counts)
        return self.net.counts[torch.as_tensor(items, device=self.device)]  # [B, K]

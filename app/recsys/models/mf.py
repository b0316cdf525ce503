"""Dot-product matrix factorisation: BPR on implicit feedback (Rendle et al., UAI 2009), or
biased MF on explicit ratings (Koren et al. 2009) with ``objective='rating'``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from app.recsys.data import InteractionData
from app.recsys.models.base import TrainConfig
from app.recsys.models.ncf import PairNet, PairRecommender


@dataclass(frozen=True)
class MFConfig:
    dim: int = 64
    reg: float = 1e-3  # implicit objective: L2 on the embedding and bias rows of each batch
    rating_reg: float = 0.08  # rating objective: the same L2, per rating
    loss: str = "bpr"  # bpr | bce (sampled negatives)


class MFNet(PairNet):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__(n_users, n_items)
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)

    def interaction(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B, K) -> (B, K) p_u . q_i, and the squares of the rows read."""
        p, q = self.user(users), self.item(items)  # [B, D], [B, K, D]
        return (q * p.unsqueeze(1)).sum(-1), p.pow(2).sum() + q.pow(2).sum()

    def interaction_full(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, I)."""
        return self.user(users) @ self.item.weight.T


class MF(PairRecommender):
    """Dot-product MF.

    Cost: time O(E (1 + k) d) per epoch with k sampled negatives (plus O((E / B)(U + I) d) for dense Adam's
    update of every row at each of the E / B steps, at or below ``TrainConfig.sparse_above`` items; above it
    the tables are sparse and SparseAdam (SGD on ratings) updates the rows read), validation O(U_v I d); memory about
    20 (U + I)(d + 1) bytes of weights, gradients, Adam moments and the best epoch's copy, plus
    O(E k) negatives; 4 (U + I)(d + 1) kept.
    """

    name = "mf"
    config_cls = MFConfig

    @classmethod
    def default_train_config(cls, objective: str = "implicit") -> TrainConfig:
        """Optimisation settings tuned on ML-100K validation (LOO for implicit, u1.base slice for rating)."""
        if objective == "rating":
            # Plain SGD beats Adam here (Adam gives rarely seen users outsized steps); lr is on the batch-mean
            # loss, i.e. 2.0 / 256 per rating.
            return TrainConfig(epochs=100, batch_size=256, lr=2.0, optimizer="sgd", patience=5, objective="rating")
        return TrainConfig(epochs=100, batch_size=4096, lr=5e-3, num_negatives=4, patience=10)

    def build(self, *, n_users: int, n_items: int) -> nn.Module:
        return MFNet(n_users, n_items, self.config.dim)

    # -- retrieval: score = mu + b_u + [p_u, 1] . [q_i, b_i] ----------------------------------------
    def _net(self) -> MFNet:
        assert isinstance(self.net, MFNet)
        return self.net

    def item_vectors(self) -> torch.Tensor:
        """[I, D + 1] item factors with the item bias as the last column."""
        net = self._net()
        return torch.cat([net.item.weight, net.item_bias.weight], dim=1).detach()

    @torch.no_grad()
    def user_queries(self, batch: InteractionData, users: np.ndarray) -> torch.Tensor:
        """(B,) training users -> (B, D + 1) their factors and a 1 for the item bias."""
        p = self._net().user(torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.device))
        return torch.cat([p, torch.ones_like(p[:, :1])], dim=1)

    def item_embeddings(self) -> torch.Tensor:
        return self._net().item.weight.detach()

"""GMF: generalised matrix factorisation, the linear half of NCF (He et al., WWW 2017).

f(u, i) = h^T (p_u * q_i): an element-wise product of embeddings weighted by a learned output layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from app.recsys.data import InteractionData
from app.recsys.models.base import TrainConfig
from app.recsys.models.ncf import GMFBranch, NCFNet, PairRecommender, ncf_rating_config


@dataclass(frozen=True)
class GMFConfig:
    dim: int = 64
    loss: str = "bce"  # bce (sampled negatives) | bpr
    reg: float = 1e-4  # implicit objective: L2 on the embedding rows of each batch
    rating_reg: float = 0.05  # rating objective: the same L2, per rating


class GMF(PairRecommender):
    """GMF.

    Cost: as MF: time O(E (1 + k) d) per epoch, validation O(U_v I d); memory about 20 (U + I)(d + 1)
    bytes plus O(E k) negatives.
    """

    name = "gmf"
    config_cls = GMFConfig

    @classmethod
    def default_train_config(cls, objective: str = "implicit") -> TrainConfig:
        """Optimisation settings tuned on ML-100K validation (LOO for implicit, u1.base slice for rating)."""
        if objective == "rating":
            return ncf_rating_config()
        return TrainConfig(epochs=100, batch_size=4096, lr=5e-3, num_negatives=4, patience=10)

    def build(self, *, n_users: int, n_items: int) -> nn.Module:
        return NCFNet(n_users, n_items, gmf_dim=self.config.dim)

    # -- retrieval: score = mu + b_u + out.bias + [h * p_u, 1] . [q_i, b_i] ---------------------------
    def _branch(self) -> tuple[NCFNet, GMFBranch]:
        assert isinstance(self.net, NCFNet) and self.net.gmf is not None
        return self.net, self.net.gmf

    def item_vectors(self) -> torch.Tensor:
        """[I, D + 1] item embeddings with the item bias as the last column."""
        net, gmf = self._branch()
        return torch.cat([gmf.item.weight, net.item_bias.weight], dim=1).detach()

    @torch.no_grad()
    def user_queries(self, batch: InteractionData, users: np.ndarray) -> torch.Tensor:
        """(B,) training users -> (B, D + 1) the output layer's weights times their embedding, and a 1."""
        net, gmf = self._branch()
        p = gmf.user(torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.device)) * net.out.weight[0]
        return torch.cat([p, torch.ones_like(p[:, :1])], dim=1)

    def item_embeddings(self) -> torch.Tensor:
        return self._branch()[1].item.weight.detach()

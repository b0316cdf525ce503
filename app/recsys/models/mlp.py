"""MLP: the non-linear half of NCF (He et al., WWW 2017), a tower over concatenated embeddings.

f(u, i) = h^T tower([p_u; q_i]). The first layer is split into a user and an item projection
(the same map as one linear layer on the concatenation), so full-catalogue scoring projects each
user and item once and only the deeper layers run on the (B, I) pairs, in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from app.recsys.models.base import TrainConfig
from app.recsys.models.ncf import NCFNet, PairRecommender, ncf_rating_config


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 64  # embedding size per side; the tower's input is 2 * dim
    layers: tuple[int, ...] = (128, 64)
    dropout: float = 0.0
    loss: str = "bce"  # bce (sampled negatives) | bpr
    reg: float = 1e-4  # implicit objective: L2 on the embedding rows of each batch
    rating_reg: float = 0.05  # rating objective: the same L2, per rating

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))  # JSON gives a list


class MLP(PairRecommender):
    """MLP tower over user and item embeddings.

    Cost: time O(E (1 + k)(d h_0 + sum h_l h_{l+1})) per epoch, validation O(U_v I sum h_l h_{l+1});
    memory about 20 (U + I)(d + 1) bytes plus O(E k) negatives and the tower's activations.
    """

    name = "mlp"
    config_cls = MLPConfig

    @classmethod
    def default_train_config(cls, objective: str = "implicit") -> TrainConfig:
        """Optimisation settings tuned on ML-100K validation (LOO for implicit, u1.base slice for rating)."""
        if objective == "rating":
            return ncf_rating_config()
        return TrainConfig(epochs=100, batch_size=2048, lr=3e-3, num_negatives=4, patience=10)

    def build(self, *, n_users: int, n_items: int) -> nn.Module:
        c = self.config
        return NCFNet(n_users, n_items, mlp_dim=c.dim, layers=c.layers, dropout=c.dropout)

    def item_embeddings(self) -> torch.Tensor:
        assert isinstance(self.net, NCFNet) and self.net.mlp is not None
        return self.net.mlp.item.weight.detach()

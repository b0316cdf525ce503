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
from app.recsys.models.ncf import PairNet, PairRecommender, ncf_rating_config

PAIR_BUDGET = 1 << 22  # floats of first-layer activations per scoring chunk (16 MB)


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


class MLPBranch(nn.Module):
    """Embeddings and the ReLU tower; shared with NeuMF."""

    def __init__(self, n_users: int, n_items: int, dim: int, layers: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        self.user_proj = nn.Linear(dim, layers[0])
        self.item_proj = nn.Linear(dim, layers[0], bias=False)
        deeper: list[nn.Module] = [nn.ReLU(), nn.Dropout(dropout)]
        for a, b in zip(layers[:-1], layers[1:], strict=True):
            deeper += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        self.tower = nn.Sequential(*deeper)
        self.out_dim = layers[-1]

    def dot(self, users: torch.Tensor, items: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B, K), (H,) -> (B, K) w^T tower(u, i), and the squares of the embedding rows read."""
        p, q = self.user(users), self.item(items)  # [B, D], [B, K, D]
        first = self.user_proj(p).unsqueeze(1) + self.item_proj(q)  # [B, K, H0]
        return self.tower(first) @ w, p.pow(2).sum() + q.pow(2).sum()

    def full_dot(self, users: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B,), (H,) -> (B, I) w^T tower(u, i) for every item, chunked over users."""
        pu = self.user_proj(self.user(users))  # [B, H0]
        qi = self.item_proj(self.item.weight)  # [I, H0]
        step = max(1, PAIR_BUDGET // max(1, qi.numel()))
        out = [self.tower(pu[s : s + step, None, :] + qi[None]) @ w for s in range(0, len(users), step)]  # [b, I]
        return torch.cat(out) if out else pu.new_zeros(0, qi.shape[0])


class MLPNet(PairNet):
    def __init__(self, n_users: int, n_items: int, dim: int, layers: tuple[int, ...], dropout: float) -> None:
        super().__init__(n_users, n_items)
        self.mlp = MLPBranch(n_users, n_items, dim, layers, dropout)
        self.out = nn.Linear(self.mlp.out_dim, 1)

    def interaction(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B, K) -> (B, K), squares of the rows read."""
        f, sq = self.mlp.dot(users, items, self.out.weight[0])
        return f + self.out.bias, sq

    def interaction_full(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, I)."""
        return self.mlp.full_dot(users, self.out.weight[0]) + self.out.bias


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
        return MLPNet(n_users, n_items, c.dim, c.layers, c.dropout)

    def item_embeddings(self) -> torch.Tensor:
        assert isinstance(self.net, MLPNet)
        return self.net.mlp.item.weight.detach()

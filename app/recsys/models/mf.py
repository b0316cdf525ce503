"""Dot-product matrix factorisation trained with BPR (Rendle et al., UAI 2009)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from app.recsys.data import InteractionData
from app.recsys.models.base import EpochCallback, FitReport, Recommender, TrainConfig
from app.recsys.sampling import NegativeSampler
from app.recsys.training import ranking_score, train_loop


@dataclass(frozen=True)
class MFConfig:
    dim: int = 64
    reg: float = 1e-4  # L2 on the embeddings used in each batch


class MFNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,), (B, K) -> (B, K) scores."""
        return (self.user(users).unsqueeze(1) * self.item(items)).sum(-1)

    def full(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, I)."""
        return self.user(users) @ self.item.weight.T


class MF(Recommender):
    name = "mf"
    config_cls = MFConfig

    def build(self, *, n_users: int, n_items: int) -> nn.Module:
        return MFNet(n_users, n_items, self.config.dim)

    def fit(
        self,
        train: InteractionData,
        valid: InteractionData | None,
        cfg: TrainConfig,
        on_epoch: EpochCallback | None = None,
    ) -> FitReport:
        net = self.bind(train)
        sampler = NegativeSampler(train, seed=cfg.seed)
        users = torch.as_tensor(train.users, device=self.device)
        items = torch.as_tensor(train.items, device=self.device)
        negs = torch.empty(0)

        def before_epoch(epoch: int) -> None:
            nonlocal negs
            negs = torch.as_tensor(sampler.sample(train.users, cfg.num_negatives), device=self.device)  # [N, K]

        def step(idx: torch.Tensor) -> torch.Tensor:
            u, i, j = users[idx], items[idx], negs[idx]
            pos = net(u, i.unsqueeze(1))  # [B, 1]
            neg = net(u, j)  # [B, K]
            loss = -F.logsigmoid(pos - neg).mean()
            reg = net.user(u).pow(2).sum() + net.item(i).pow(2).sum() + net.item(j).pow(2).sum()
            return loss + self.config.reg * reg / len(idx)

        def validate() -> float:
            return ranking_score(self, train, valid, k=cfg.eval_k)[f"ndcg@{cfg.eval_k}"]

        return train_loop(
            self,
            n_samples=train.n_interactions,
            step=step,
            validate=validate if valid is not None and valid.n_interactions else None,
            cfg=cfg,
            metric_name=f"ndcg@{cfg.eval_k}",
            on_epoch=on_epoch,
            before_epoch=before_epoch,
        )

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.net, MFNet)
        return self.net.full(users)

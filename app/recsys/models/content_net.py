"""The content model's network: item-feature MLP encoder, user tower and rating head.

Shapes: I items with F features, D the embedding size, L the profile length, B the batch.
Profile windows are [B, L] item index + 1 with the latest item first and 0 for none.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.recsys.data import InteractionData


def causal_windows(data: InteractionData, max_len: int) -> np.ndarray:
    """[N, L] for each interaction the user's L previous items (latest first), so training sees
    the same kind of profile as serving: only what came before the item being predicted."""
    pos = np.arange(data.n_interactions)
    offset = np.arange(1, max_len + 1)
    before = pos - data.indptr[data.users]  # how many earlier items the user has
    cand = pos[:, None] - offset[None, :]  # [N, L]
    valid = offset[None, :] <= before[:, None]
    return np.where(valid, data.items[np.maximum(cand, 0)] + 1, 0).astype(np.int64)


class CausalWindows:
    """:func:`causal_windows` built per batch: (B,) interaction positions -> (B, L) their windows.

    Holds the item column and each interaction's user start (16 bytes an event) instead of the [N, L]
    array (8 L bytes an event: 4 GB at 10M events and L = 50), at the cost of one [B, L] gather a step."""

    def __init__(self, data: InteractionData, max_len: int, device: torch.device | str) -> None:
        self.items = torch.as_tensor(data.items, device=device).long()  # [N]
        self.start = torch.as_tensor(data.indptr[data.users], device=device).long()  # [N] the user's first
        self.offset = torch.arange(1, max_len + 1, device=device)  # [L]

    def __call__(self, pos: torch.Tensor) -> torch.Tensor:
        cand = pos.unsqueeze(1) - self.offset  # [B, L] latest first
        valid = cand >= self.start[pos].unsqueeze(1)
        return torch.where(valid, self.items[cand.clamp(min=0)] + 1, torch.zeros_like(cand))


class ContentNet(nn.Module):
    recency: torch.Tensor
    features: torch.Tensor
    known_items: torch.Tensor
    train_windows: torch.Tensor
    global_mean: torch.Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_features: int,
        dim: int,
        hidden: int,
        dropout: float,
        max_history: int,
        half_life: float,
        *,
        user_dropout: float = 0.0,
        user_embedding: bool,
        profile: bool,
        item_residual: bool,
        rating: bool,
    ) -> None:
        super().__init__()
        self.dim, self.n_users, self.user_dropout = dim, n_users, user_dropout
        self.encoder = nn.Sequential(
            nn.Linear(max(n_features, 1), hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim + 1)
        )
        self.user = nn.Embedding(n_users, dim) if user_embedding else None
        self.profile = nn.Linear(dim, dim) if profile else None
        self.residual = nn.Embedding(n_items, dim + 1) if item_residual else None
        self.user_bias = nn.Embedding(n_users, 1) if rating else None
        for emb in (self.user, self.residual):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.01)
        if self.user_bias is not None:
            nn.init.zeros_(self.user_bias.weight)
        steps = torch.arange(max_history, dtype=torch.float32)
        recency = 0.5 ** (steps / half_life) if half_life > 0 else torch.ones(max_history)
        self.register_buffer("recency", recency)  # [L]
        self.register_buffer("features", torch.zeros(n_items, max(n_features, 1)))  # [I, F]
        self.register_buffer("known_items", torch.zeros(n_items, 1))  # [I, 1] 1 if seen in training
        self.register_buffer("train_windows", torch.zeros(n_users, max_history, dtype=torch.int64))  # [U, L]
        self.register_buffer("global_mean", torch.zeros(()))

    def set_catalogue(self, train: InteractionData, device: torch.device) -> None:
        """Copy the catalogue's features, which items have interactions, and each user's latest items."""
        feats = train.item_features if train.item_features.shape[1] else np.zeros((train.n_items, 1), np.float32)
        self.features.copy_(torch.as_tensor(feats, device=device))
        self.known_items.copy_(torch.as_tensor(train.item_counts() > 0, device=device).float().unsqueeze(1))
        seqs = train.sequences(self.train_windows.shape[1])[:, ::-1].copy()
        self.train_windows.copy_(torch.as_tensor(seqs, device=device))

    def encode_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, F) -> (M, D) embeddings and (M,) feature biases."""
        if feats.shape[1] == 0:
            feats = torch.zeros((feats.shape[0], 1), device=feats.device)
        out = self.encoder(feats)
        return out[:, : self.dim], out[:, self.dim]

    def encode_catalogue(self) -> tuple[torch.Tensor, torch.Tensor]:
        """() -> (I, D), (I,): features through the encoder plus residuals of items seen in training."""
        frozen = self.__dict__.get("_frozen")
        if frozen is not None and not self.training and frozen[0].device == self.features.device:
            return frozen
        out = self.encoder(self.features)  # [I, D + 1]
        if self.residual is not None:
            out = out + self.residual.weight * self.known_items
        return out[:, : self.dim], out[:, self.dim]

    def encode_items(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M,) item indexes -> (M, D), (M,): :meth:`encode_catalogue` for those items only (sampled softmax)."""
        out = self.encoder(self.features[items])  # [M, D + 1]
        if self.residual is not None:
            out = out + self.residual(items) * self.known_items[items]
        return out[:, : self.dim], out[:, self.dim]

    def freeze_catalogue(self) -> None:
        """Serving: the weights no longer change, so encode the catalogue once, not on every request.
        Switching to training mode drops the cache."""
        self.__dict__["_frozen"] = None
        with torch.no_grad():
            self.__dict__["_frozen"] = tuple(t.detach() for t in self.encode_catalogue())

    def train(self, mode: bool = True) -> ContentNet:
        self.__dict__["_frozen"] = None
        return super().train(mode)

    def windows_of(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, L) training profile windows; empty for users unseen in training."""
        known = (users < self.n_users).unsqueeze(1)
        return self.train_windows[users.clamp(max=self.n_users - 1)] * known

    def user_vectors(self, users: torch.Tensor, windows: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        """(B,), (B, L), (I, D) -> (B, D). Users outside the training set get the profile alone."""
        q = torch.zeros((len(users), self.dim), device=enc.device)
        if self.user is not None:
            known = (users < self.n_users).unsqueeze(1)
            if self.training and self.user_dropout > 0:  # learn to serve from the profile alone too
                known = known & (torch.rand(known.shape, device=known.device) >= self.user_dropout)
            q = q + self.user(users.clamp(max=self.n_users - 1)) * known
        if self.profile is not None:
            w = self.recency[: windows.shape[1]].unsqueeze(0) * (windows > 0)  # [B, L], 0 on padding
            rows = enc[(windows - 1).clamp(min=0)]  # [B, L, D]; padding reads item 0, weighted 0
            pooled = (rows * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp(min=1e-6)
            q = q + self.profile(pooled)
        return q

    def known_user_bias(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B,) the user's rating bias, 0 for users unseen in training."""
        if self.user_bias is None:
            return torch.zeros(len(users), device=users.device)
        known = users < self.n_users
        return self.user_bias(users.clamp(max=self.n_users - 1)).squeeze(1) * known

    def rating(
        self, users: torch.Tensor, q: torch.Tensor, items: torch.Tensor, enc: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """(B,) users, (B, D) user vectors, (B,) items -> (B,) ratings on the data set's scale."""
        return self.global_mean + self.known_user_bias(users) + bias[items] + (q * enc[items]).sum(-1)

    def rating_matrix(
        self, users: torch.Tensor, q: torch.Tensor, enc: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """(B,), (B, D) -> (B, I) ratings for every catalogue item."""
        return self.global_mean + self.known_user_bias(users).unsqueeze(1) + bias.unsqueeze(0) + q @ enc.T

"""Shared core of the pair-scoring models (MF and the NCF family of He et al., WWW 2017).

One network shape, ``mu + b_u + b_i + f(u, i)``, trained either on implicit feedback (BCE on
sampled negatives, or BPR) or on explicit ratings (MSE on the rating scale, clamped predictions).
MF's f is a dot product (``mf.py``); GMF, MLP and NeuMF share one network, :class:`NCFNet`, with a
GMF branch, an MLP branch or both under one linear output layer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.recsys.data import InteractionData
from app.recsys.models.base import Batches, Recommender, TrainConfig, trained_on_ratings
from app.recsys.sampling import NegativeSampler
from app.recsys.training import seed_everything, sparsify_embeddings

LOSSES = ("bce", "bpr")
PAIR_BUDGET = 1 << 22  # floats of MLP first-layer activations per full-scoring chunk (16 MB)


def ncf_rating_config() -> TrainConfig:
    """Rating-objective settings shared by GMF, MLP and NeuMF (tuned on the u1.base validation slice).

    AdamW's decay also reaches the output layer, which the per-row L2 cannot (it would rescale around it).
    """
    return TrainConfig(
        epochs=100, batch_size=1024, lr=2e-3, optimizer="adamw", weight_decay=0.2, patience=5, objective="rating"
    )


class PairNet(nn.Module):
    """Global, user and item biases around an interaction term ``f(u, i)`` that subclasses supply."""

    mu: torch.Tensor

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.register_buffer("mu", torch.zeros(()))  # the training mean rating; 0 for implicit feedback

    def interaction(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B, K) -> (B, K) f(u, i), and the summed squares of the embedding rows it read."""
        raise NotImplementedError

    def interaction_full(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, I) f(u, i) for every item, in one vectorised pass."""
        raise NotImplementedError

    def scores_and_l2(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B, K) -> (B, K) scores, and the L2 of every embedding and bias row used (reusing the lookups)."""
        f, sq = self.interaction(users, items)
        bu = self.user_bias(users)  # [B, 1]
        bi = self.item_bias(items).squeeze(-1)  # [B, K]
        return self.mu + bu + bi + f, sq + bu.pow(2).sum() + bi.pow(2).sum()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,), (B, K) -> (B, K) scores (logits, or ratings for a rating model)."""
        return self.scores_and_l2(users, items)[0]

    def full(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, I) scores for the whole catalogue."""
        bias = self.mu + self.user_bias(users) + self.item_bias.weight.T  # [B, I]
        return bias + self.interaction_full(users)


class GMFBranch(nn.Module):
    """User and item embeddings combined by element-wise product; shared with NeuMF."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)
        self.out_dim = dim

    def dot(self, users: torch.Tensor, items: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B, K), (D,) -> (B, K) w^T (p_u * q_i), and the squares of the rows read."""
        p, q = self.user(users), self.item(items)  # [B, D], [B, K, D]
        return (q * (p * w).unsqueeze(1)).sum(-1), p.pow(2).sum() + q.pow(2).sum()

    def full_dot(self, users: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B,), (D,) -> (B, I) w^T (p_u * q_i) for every item, without a (B, I, D) tensor."""
        return (self.user(users) * w) @ self.item.weight.T


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


class NCFNet(PairNet):
    """The NCF family's one shape: f(u, i) = h^T [gmf(u, i); mlp(u, i)] + c over the branches it has.

    GMF has the GMF branch only (``mlp_dim=0``), MLP the MLP branch only (``gmf_dim=0``), NeuMF both.
    The output layer is linear, so h^T of the concatenation is computed as each branch's dot with its
    slice of h: the same map without building the concatenation, in training and full scoring alike.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        gmf_dim: int = 0,
        mlp_dim: int = 0,
        layers: tuple[int, ...] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(n_users, n_items)
        if gmf_dim <= 0 and mlp_dim <= 0:
            raise ValueError("an NCF network needs a GMF or an MLP branch (gmf_dim or mlp_dim > 0)")
        self.gmf = GMFBranch(n_users, n_items, gmf_dim) if gmf_dim > 0 else None
        self.mlp = MLPBranch(n_users, n_items, mlp_dim, layers, dropout) if mlp_dim > 0 else None
        self.branches: list[GMFBranch | MLPBranch] = [b for b in (self.gmf, self.mlp) if b is not None]
        self.out = nn.Linear(sum(b.out_dim for b in self.branches), 1)

    def _slices(self) -> list[tuple[GMFBranch | MLPBranch, torch.Tensor]]:
        """Each branch with its slice of the output weights h."""
        w, out, start = self.out.weight[0], [], 0
        for b in self.branches:
            out.append((b, w[start : start + b.out_dim]))
            start += b.out_dim
        return out

    def interaction(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B, K) -> (B, K), and the squares of the embedding rows read."""
        parts = [b.dot(users, items, w) for b, w in self._slices()]
        f, sq = parts[0]
        for g, g_sq in parts[1:]:
            f, sq = f + g, sq + g_sq
        return f + self.out.bias, sq

    def interaction_full(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, I) for every item, a branch at a time."""
        parts = [b.full_dot(users, w) for b, w in self._slices()]
        f = parts[0]
        for g in parts[1:]:
            f = f + g
        return f + self.out.bias


class PairRecommender(Recommender):
    """Training batches, scoring and rating predictions for a ``PairNet``; subclasses only build the net.

    The model config must have ``loss`` ("bce" | "bpr") and the L2 weights ``reg`` (implicit) and
    ``rating_reg`` (ratings) on the embedding and bias rows of each batch. ``cfg.objective == "rating"``
    switches to MSE on the rating scale.
    """

    supports_rating = True

    def start_fit(self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig) -> Batches:
        if self.config.loss not in LOSSES:
            raise ValueError(f"{self.name}: unknown loss {self.config.loss!r}; use one of {LOSSES}")
        if cfg.objective == "rating":
            return self._rating_batches(train, cfg)
        if cfg.objective != "implicit":
            raise ValueError(f"unknown objective {cfg.objective!r}: use implicit or rating")
        return self._implicit_batches(train, cfg)

    def prepare(self, train: InteractionData, cfg: TrainConfig) -> PairNet:
        """The network to train: freshly initialised from ``cfg.seed``, unless a subclass warm-started it."""
        seed_everything(cfg.seed)
        net = self.bind(train)
        assert isinstance(net, PairNet)
        return net

    def _implicit_batches(self, train: InteractionData, cfg: TrainConfig) -> Batches:
        """BCE over each event's item and k sampled negatives (or BPR against them), fresh negatives each epoch."""
        net = self.prepare(train, cfg)
        self.extra.update(objective="implicit", sparse=sparsify_embeddings(net, train.n_items, cfg))
        net.mu.zero_()
        sampler = NegativeSampler(train, seed=cfg.seed)
        users = torch.as_tensor(train.users, device=self.device)
        items = torch.as_tensor(train.items, device=self.device)
        k = max(1, cfg.num_negatives)
        negs = torch.empty(0)
        weight: torch.Tensor | None = None
        bpr = self.config.loss == "bpr"
        labels = torch.zeros(1, 1 + k, device=self.device)
        labels[0, 0] = 1.0  # column 0 is the positive

        def new_epoch(epoch: int) -> None:
            nonlocal negs, weight
            drawn = torch.as_tensor(sampler.sample(train.users, k), device=self.device)  # [N, K], fresh each epoch
            # A user who has seen every item gets -1 (no negative): such pairs are masked out of the loss.
            weight = (drawn >= 0).float() if bool((drawn < 0).any()) else None
            negs = drawn.clamp(min=0)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            u = users[idx]  # [B]
            cand = torch.cat([items[idx].unsqueeze(1), negs[idx]], dim=1)  # [B, 1 + K]
            logits, l2 = net.scores_and_l2(u, cand)  # [B, 1 + K], scalar
            if bpr:
                pair = -F.logsigmoid(logits[:, :1] - logits[:, 1:])  # [B, K]
                w = None if weight is None else weight[idx]
            else:
                pair = F.binary_cross_entropy_with_logits(logits, labels.expand_as(logits), reduction="none")
                w = (
                    None
                    if weight is None
                    else torch.cat([torch.ones_like(u, dtype=pair.dtype)[:, None], weight[idx]], 1)
                )
            value = pair.mean() if w is None else (pair * w).sum() / w.sum().clamp(min=1.0)
            return value + self.config.reg * l2 / len(idx)

        return Batches(train.n_interactions, loss, new_epoch=new_epoch)

    def _rating_batches(self, train: InteractionData, cfg: TrainConfig) -> Batches:
        """MSE on the rated events, predictions centred on the training mean."""
        rated = train.has_ratings()
        if not rated.any():
            raise ValueError(f"{self.name}: objective 'rating' needs interactions with a rating")
        net = self.prepare(train, cfg)
        ratings = train.ratings[rated]
        self.extra.update(objective="rating", rating_min=float(ratings.min()), rating_max=float(ratings.max()),
                          sparse=sparsify_embeddings(net, train.n_items, cfg))  # fmt: skip
        net.mu.fill_(float(ratings.mean()))
        users = torch.as_tensor(train.users[rated], device=self.device)
        items = torch.as_tensor(train.items[rated], device=self.device)
        target = torch.as_tensor(ratings, device=self.device)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            u, i = users[idx], items[idx].unsqueeze(1)  # [B], [B, 1]
            pred, l2 = net.scores_and_l2(u, i)  # [B, 1] unclamped, so the gradient never vanishes
            return F.mse_loss(pred.squeeze(1), target[idx]) + self.config.rating_reg * l2 / len(idx)

        return Batches(len(target), loss)

    def _clamp(self, ratings: torch.Tensor) -> torch.Tensor:
        return ratings.clamp(self.extra["rating_min"], self.extra["rating_max"])

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, I): logits, or the predicted rating when trained on ratings (servable either way)."""
        assert isinstance(self.net, PairNet)
        scores = self.net.full(users)  # [B, I]
        return self._clamp(scores) if trained_on_ratings(self) else scores

    @torch.no_grad()
    def predict_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,), (B,) -> (B,) ratings clamped to the training range. Needs ``objective='rating'``."""
        if not trained_on_ratings(self):
            raise ValueError(f"{self.name} was trained on implicit feedback; train with objective='rating'")
        assert isinstance(self.net, PairNet)
        return self._clamp(self.net(users, items.unsqueeze(1)).squeeze(1))

    @torch.no_grad()
    def score_candidates(self, batch: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        """(B,) training users, (B, K) items -> (B, K), as ``score_users`` gives at those items."""
        assert isinstance(self.net, PairNet)
        u = torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.device)
        scores = self.net(u, torch.as_tensor(items, device=self.device))  # [B, K]
        return self._clamp(scores) if trained_on_ratings(self) else scores

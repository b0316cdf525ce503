"""Shared core of the pair-scoring models (MF and the NCF family of He et al., WWW 2017).

One network shape, ``mu + b_u + b_i + f(u, i)``, trained either on implicit feedback (BCE on
sampled negatives, or BPR) or on explicit ratings (MSE on the rating scale, clamped predictions).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.recsys.data import InteractionData
from app.recsys.models.base import EpochCallback, FitReport, Recommender, TrainConfig, trained_on_ratings
from app.recsys.sampling import NegativeSampler
from app.recsys.training import rating_errors, seed_everything, sparsify_embeddings, train_loop, validation_score

LOSSES = ("bce", "bpr")


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


class PairRecommender(Recommender):
    """Fit/score/predict for a ``PairNet``; subclasses only build the net.

    The model config must have ``loss`` ("bce" | "bpr") and the L2 weights ``reg`` (implicit) and
    ``rating_reg`` (ratings) on the embedding and bias rows of each batch. ``cfg.objective == "rating"``
    switches to MSE on the rating scale.
    """

    supports_rating = True

    def fit(
        self,
        train: InteractionData,
        valid: InteractionData | None,
        cfg: TrainConfig,
        on_epoch: EpochCallback | None = None,
    ) -> FitReport:
        if self.config.loss not in LOSSES:
            raise ValueError(f"{self.name}: unknown loss {self.config.loss!r}; use one of {LOSSES}")
        if cfg.objective == "rating":
            return self._fit_rating(train, valid, cfg, on_epoch)
        if cfg.objective != "implicit":
            raise ValueError(f"unknown objective {cfg.objective!r}: use implicit or rating")
        return self._fit_implicit(train, valid, cfg, on_epoch)

    def prepare(self, train: InteractionData, cfg: TrainConfig) -> PairNet:
        """The network to train: freshly initialised from ``cfg.seed``, unless a subclass warm-started it."""
        seed_everything(cfg.seed)
        net = self.bind(train)
        assert isinstance(net, PairNet)
        return net

    def _fit_implicit(
        self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig, on_epoch: EpochCallback | None
    ) -> FitReport:
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

        def before_epoch(epoch: int) -> None:
            nonlocal negs, weight
            drawn = torch.as_tensor(sampler.sample(train.users, k), device=self.device)  # [N, K], fresh each epoch
            # A user who has seen every item gets -1 (no negative): such pairs are masked out of the loss.
            weight = (drawn >= 0).float() if bool((drawn < 0).any()) else None
            negs = drawn.clamp(min=0)

        def step(idx: torch.Tensor) -> torch.Tensor:
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
            loss = pair.mean() if w is None else (pair * w).sum() / w.sum().clamp(min=1.0)
            return loss + self.config.reg * l2 / len(idx)

        metric = f"ndcg@{cfg.eval_k}"
        held_out = valid if valid is not None and valid.n_interactions else None
        report = train_loop(
            self,
            n_samples=train.n_interactions,
            step=step,
            validate=None if held_out is None else (lambda: validation_score(self, train, held_out, cfg)[metric]),
            cfg=cfg,
            metric_name=metric,
            on_epoch=on_epoch,
            before_epoch=before_epoch,
        )
        if held_out is not None:
            self.metrics[f"valid_{metric}"] = report.best_metric
        return report

    def _fit_rating(
        self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig, on_epoch: EpochCallback | None
    ) -> FitReport:
        rated = train.has_ratings()
        if not rated.any():
            raise ValueError(f"{self.name}: objective 'rating' needs interactions with a rating")
        net = self.prepare(train, cfg)
        ratings = train.ratings[rated]
        self.extra.update(objective="rating", rating_min=float(ratings.min()), rating_max=float(ratings.max()))
        net.mu.fill_(float(ratings.mean()))
        users = torch.as_tensor(train.users[rated], device=self.device)
        items = torch.as_tensor(train.items[rated], device=self.device)
        target = torch.as_tensor(ratings, device=self.device)

        def step(idx: torch.Tensor) -> torch.Tensor:
            u, i = users[idx], items[idx].unsqueeze(1)  # [B], [B, 1]
            pred, l2 = net.scores_and_l2(u, i)  # [B, 1] unclamped, so the gradient never vanishes
            return F.mse_loss(pred.squeeze(1), target[idx]) + self.config.rating_reg * l2 / len(idx)

        held_out = valid if valid is not None and valid.has_ratings().any() else None
        report = train_loop(
            self,
            n_samples=len(target),
            step=step,
            validate=None if held_out is None else (lambda: rating_errors(self, held_out)["rmse"]),
            cfg=cfg,
            metric_name="rmse",
            higher_is_better=False,
            on_epoch=on_epoch,
        )
        # RMSE/MAE of the kept weights on validation ratings (training ratings when there are none).
        self.metrics.update(rating_errors(self, train if held_out is None else held_out))
        return report

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

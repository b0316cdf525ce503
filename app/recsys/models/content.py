"""Deep content model: an MLP encoder over item features and a user tower (embedding + history profile).

Score = <user, encode(features)> + feature bias (+ per-item residuals for items seen in training).
The profile pools the encodings of the user's latest items, so it serves users unseen at training
time through ``score_history`` and scores brand-new items from their features (``score_new_items``).
Implicit objective: BPR/BCE on sampled negatives or full softmax; rating objective: MSE with biases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from app.recsys.data import InteractionData
from app.recsys.models.base import Batches, Recommender, TrainConfig, trained_on_ratings
from app.recsys.models.content_net import CausalWindows, ContentNet
from app.recsys.sampling import NegativeSampler
from app.recsys.training import sparsify_embeddings


@dataclass(frozen=True)
class ContentConfig:
    dim: int = 64
    hidden: int = 256
    dropout: float = 0.1
    user_embedding: bool = True  # a free vector per training user
    user_dropout: float = 0.25  # implicit: share of samples scored without it (trains the profile-only path)
    profile: bool = True  # pooled encodings of the user's latest items (serves unseen users)
    max_history: int = 50
    profile_half_life: float = 2.0  # weight 0.5 ** (steps back / half_life); 0 = plain mean
    item_residual: bool = True  # per-item vector + bias, only for items with training interactions
    loss: str = "softmax"  # softmax (full catalogue) | bpr | bce (sampled negatives)
    # Above this many items the softmax is sampled: each step encodes only the batch's items, its users'
    # profile items and num_sampled shared negatives (popularity^0.75, logQ-corrected), not the catalogue.
    sampled_above: int = 20_000
    num_sampled: int = 1024
    reg: float = 1e-5  # implicit objective: L2 on the user and item vectors of each batch
    rating_reg: float = 0.08  # rating objective: the same L2 plus the biases, per rating
    # Rating objective: what a user watched lately says little about how they rate (validation RMSE
    # is better without the profile), and unseen users fall back to item biases and features anyway.
    rating_profile: bool = False


class Content(Recommender):
    """Content model over item features.

    Cost: time O(E (d L + I d) + (E / B) I h d) per epoch with the full softmax (the encoder runs over the
    catalogue every step); above ``sampled_above`` items the softmax is sampled and an epoch costs
    O(E (L + K / B) h d + E K d) with K = num_sampled shared negatives per batch of B (the encoder runs
    over each batch's distinct items, profiles included) (plus the update
    of the touched residual rows per step: sparse above ``TrainConfig.sparse_above``). The rating objective
    encodes the whole catalogue every step at or below ``sparse_above`` items, O((E / B) I h d), and above it
    only each batch's items and profiles, O(E L h d), with sparse tables; L = max_history,
    h = hidden; memory 16 E bytes for the profile windows (gathered per batch),
    O(I h) encoder activations (O((B L + K) h) sampled), O(B I) logits (O(B K) sampled), 20 (U + I) d
    weights.
    """

    name = "content"
    config_cls = ContentConfig
    supports_rating = True
    uses_features = True
    reads_history = True

    @classmethod
    def default_train_config(cls, objective: str = "implicit") -> TrainConfig:
        """Optimisation settings tuned on ML-100K validation (LOO for implicit, u1.base slice for rating)."""
        if objective == "rating":
            return TrainConfig(epochs=100, batch_size=1024, lr=1e-3, patience=5, objective="rating")
        return TrainConfig(epochs=40, batch_size=512, lr=2e-3, patience=4, num_negatives=4)

    def build(self, *, n_users: int, n_items: int, n_features: int = 0, rating: int = 0) -> torch.nn.Module:
        c = self.config
        return ContentNet(
            n_users,
            n_items,
            n_features,
            c.dim,
            c.hidden,
            c.dropout,
            c.max_history,
            c.profile_half_life,
            user_dropout=0.0 if rating else c.user_dropout,
            user_embedding=c.user_embedding,
            profile=c.rating_profile if rating else c.profile,
            item_residual=c.item_residual,
            rating=bool(rating),
        )

    # -- training -------------------------------------------------------------------------------
    def start_fit(self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig) -> Batches:
        rating = cfg.objective == "rating"
        net = self.bind(train, n_features=train.item_features.shape[1], rating=int(rating))
        assert isinstance(net, ContentNet)
        self.extra["objective"] = cfg.objective
        net.set_catalogue(train, self.device)
        keep = train.has_ratings() if rating else np.ones(train.n_interactions, dtype=bool)
        users = torch.as_tensor(train.users[keep], device=self.device)
        items = torch.as_tensor(train.items[keep], device=self.device)
        positions = torch.as_tensor(np.flatnonzero(keep), device=self.device)  # [N] rows of ``train``
        window_of = CausalWindows(train, self.config.max_history, self.device)  # [B] positions -> [B, L]
        targets = torch.as_tensor(train.ratings[keep], device=self.device)
        sampler = NegativeSampler(train, seed=cfg.seed)
        negs = torch.empty(0, dtype=torch.int64)
        sampled = not rating and self.config.loss == "softmax" and train.n_items > self.config.sampled_above
        self.extra["loss"] = "sampled-softmax" if sampled else self.config.loss
        # The sampled softmax and the rating loss on a large catalogue read the user and residual tables by
        # lookup only, encoding just the items a batch touches: sparse above sparse_above.
        sparse = self.extra["sparse"] = (sampled or rating) and sparsify_embeddings(net, train.n_items, cfg)
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        q_items = torch.as_tensor(train.item_counts(), dtype=torch.float32, device=self.device).add(1.0).pow(0.75)
        q_items /= q_items.sum()  # [I] the negatives' sampling distribution
        log_q = q_items.log()
        if rating:
            mean = float(targets.mean()) if len(targets) else 0.0
            net.global_mean.fill_(mean)

        def new_epoch(epoch: int) -> None:
            nonlocal negs
            if not rating and self.config.loss != "softmax":
                negs = torch.as_tensor(sampler.sample(train.users, cfg.num_negatives), device=self.device)  # [N, K]

        def encode_touched(
            touched: torch.Tensor, w: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            """(N,) items and (B, L) profile windows -> the encodings [M, D] and biases [M] of the distinct
            items among them, each of ``touched`` as one of those rows [N], and the windows in that numbering."""
            profile = w > 0
            n = len(touched)
            uniq, inv = torch.unique(torch.cat([touched, w[profile] - 1]), return_inverse=True)  # [M], [N + P]
            enc, bias = net.encode_items(uniq)  # [M, D], [M]
            local = torch.zeros_like(w)
            local[profile] = inv[n:] + 1
            return enc, bias, inv[:n], local

        def sampled_loss(idx: torch.Tensor) -> torch.Tensor:
            """Softmax over the batch's item and K shared negatives, encoding only the items it touches."""
            u, i, w = users[idx], items[idx], window_of(positions[idx])  # [B], [B], [B, L]
            negs = torch.multinomial(q_items, self.config.num_sampled, replacement=True, generator=gen)  # [K]
            b = len(i)
            enc, bias, rows, local = encode_touched(torch.cat([i, negs]), w)
            q = net.user_vectors(u, local, enc)  # [B, D]
            pi, ni = rows[:b], rows[b:]
            pos = (q * enc[pi]).sum(-1, keepdim=True) + bias[pi].unsqueeze(1) - log_q[i].unsqueeze(1)  # [B, 1]
            neg = q @ enc[ni].T + bias[ni] - log_q[negs]  # [B, K]
            neg = neg.masked_fill(negs.unsqueeze(0) == i.unsqueeze(1), float("-inf"))  # accidental hits
            reg = self.config.reg * (q.pow(2).sum() + enc[pi].pow(2).sum()) / b
            return F.cross_entropy(torch.cat([pos, neg], dim=1), torch.zeros_like(i)) + reg

        def touched_rating_loss(idx: torch.Tensor) -> torch.Tensor:
            """The rating loss below, encoding only the batch's items and profile windows (sparse tables)."""
            u, i, w = users[idx], items[idx], window_of(positions[idx])  # [B], [B], [B, L]
            enc, bias, li, local = encode_touched(i, w)
            q = net.user_vectors(u, local, enc)  # [B, D]
            pred = net.rating(u, q, li, enc, bias)
            l2 = q.pow(2).sum() + enc[li].pow(2).sum() + bias[li].pow(2).sum() + net.known_user_bias(u).pow(2).sum()
            return F.mse_loss(pred, targets[idx]) + self.config.rating_reg * l2 / len(idx)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            if sampled:
                return sampled_loss(idx)
            if rating and sparse:
                return touched_rating_loss(idx)
            u, i, w = users[idx], items[idx], window_of(positions[idx])
            enc, bias = net.encode_catalogue()  # [I, D], [I]
            q = net.user_vectors(u, w, enc)  # [B, D]
            l2 = q.pow(2).sum() + enc[i].pow(2).sum()
            if rating:
                pred = net.rating(u, q, i, enc, bias)
                l2 = l2 + bias[i].pow(2).sum() + net.known_user_bias(u).pow(2).sum()
                return F.mse_loss(pred, targets[idx]) + self.config.rating_reg * l2 / len(idx)
            reg = self.config.reg * l2 / len(idx)
            if self.config.loss == "softmax":
                logits = q @ enc.T + bias  # [B, I]
                return F.cross_entropy(logits, i) + reg
            j = negs[idx]  # [B, K]
            pos = (q * enc[i]).sum(-1, keepdim=True) + bias[i].unsqueeze(1)  # [B, 1]
            neg = (q.unsqueeze(1) * enc[j]).sum(-1) + bias[j]  # [B, K]
            if self.config.loss == "bpr":
                return -F.logsigmoid(pos - neg).mean() + reg
            return F.softplus(-pos).mean() + F.softplus(neg).mean() + reg

        return Batches(len(users), loss, new_epoch=new_epoch)

    # -- scoring --------------------------------------------------------------------------------
    def _net(self) -> ContentNet:
        assert isinstance(self.net, ContentNet)
        return self.net

    def _windows(self, history: InteractionData | None, users: np.ndarray) -> torch.Tensor:
        """[B, L] latest items first (index + 1, 0 = none), from ``history`` or the training data."""
        net = self._net()
        if history is None:
            return net.windows_of(torch.as_tensor(users, device=self.device))
        seqs = history.sequences(self.config.max_history, users)[:, ::-1].copy()
        return torch.as_tensor(seqs, device=self.device)

    @torch.no_grad()
    def user_vectors(self, users: np.ndarray, history: InteractionData | None = None) -> torch.Tensor:
        """(B,) -> (B, D); users outside the training set are represented by their profile alone."""
        net = self._net()
        enc, _ = net.encode_catalogue()
        u = torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.device)
        return net.user_vectors(u, self._windows(history, np.asarray(users)), enc)

    @torch.no_grad()
    def score_history(self, history: InteractionData, users: np.ndarray) -> torch.Tensor:
        return self._score(np.asarray(users, dtype=np.int64), history)

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self._score(users.cpu().numpy().astype(np.int64), None)

    def _score(self, users: np.ndarray, history: InteractionData | None) -> torch.Tensor:
        net = self._net()
        enc, bias = net.encode_catalogue()
        u = torch.as_tensor(users, device=self.device)
        q = net.user_vectors(u, self._windows(history, users), enc)  # [B, D]
        if trained_on_ratings(self):
            return net.rating_matrix(u, q, enc, bias)
        return q @ enc.T + bias  # [B, I]

    @torch.no_grad()
    def predict_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if not trained_on_ratings(self):
            raise NotImplementedError("content was trained with the implicit objective; fit with objective='rating'")
        net = self._net()
        enc, bias = net.encode_catalogue()
        q = net.user_vectors(users, net.windows_of(users), enc)
        return net.rating(users, q, items, enc, bias)

    def prepare_for_serving(self) -> None:
        """The catalogue encoded once for the fixed weights (serving after a load; the trainer's validation
        and the end of a fit): not once per batch of users (1,000 users at 1M items are 63 batches).
        Training mode drops it."""
        self._net().freeze_catalogue()

    # -- brand-new items ------------------------------------------------------------------------
    @torch.no_grad()
    def encode_items(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[M, F] features (``feature_schema.encode(items_df)``) -> [M, D] item embeddings."""
        enc, _ = self._net().encode_features(torch.as_tensor(features, dtype=torch.float32, device=self.device))
        return enc

    @torch.no_grad()
    def score_new_items(
        self, batch: InteractionData, users: np.ndarray, features: np.ndarray | torch.Tensor
    ) -> torch.Tensor:
        """(B,) users with their items in ``batch`` (as ``score_candidates``), [M, F] features of items without
        interactions -> [B, M] scores (ratings if rating model)."""
        net = self._net()
        u, q = self._batch_vectors(batch, users)  # [B], [B, D]
        enc, bias = net.encode_features(torch.as_tensor(features, dtype=torch.float32, device=self.device))
        scores = q @ enc.T + bias  # [B, M]
        if trained_on_ratings(self):
            scores = scores + net.global_mean + net.known_user_bias(u).unsqueeze(1)
        return scores

    def item_embeddings(self) -> torch.Tensor:
        """[I, D] catalogue item embeddings for similar-item lookups."""
        with torch.no_grad():
            return self._net().encode_catalogue()[0]

    # -- retrieval: score = c(u) + [q_u, 1] . [enc_i, bias_i] (c: the rating head's mean and user bias) ----
    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """[I, D + 1] encoded items with their bias as the last column."""
        enc, bias = self._net().encode_catalogue()
        return torch.cat([enc, bias.unsqueeze(1)], dim=1)

    def _batch_vectors(self, batch: InteractionData, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) users (-1: never seen) with their items in ``batch`` -> (B,) net rows, (B, D) user vectors."""
        net = self._net()
        users = np.asarray(users, dtype=np.int64)
        u = torch.as_tensor(np.where(users >= 0, users, net.n_users), device=self.device)  # past the end: unseen
        enc, _ = net.encode_catalogue()
        return u, net.user_vectors(u, self._windows(batch, np.arange(len(users))), enc)

    @torch.no_grad()
    def user_queries(self, batch: InteractionData, users: np.ndarray) -> torch.Tensor:
        """(B,) users -> (B, D + 1) their vectors (the profile alone for users never seen) and a 1."""
        q = self._batch_vectors(batch, users)[1]
        return torch.cat([q, torch.ones_like(q[:, :1])], dim=1)

    @torch.no_grad()
    def score_candidates(self, batch: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        net = self._net()
        enc, bias = net.encode_catalogue()
        u, q = self._batch_vectors(batch, users)  # [B], [B, D]
        i = torch.as_tensor(items, device=self.device)  # [B, K]
        scores = (enc[i] * q.unsqueeze(1)).sum(-1) + bias[i]  # [B, K]
        if trained_on_ratings(self):
            scores = scores + net.global_mean + net.known_user_bias(u).unsqueeze(1)
        return scores

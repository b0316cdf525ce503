"""Shared machinery for next-item models: training windows, full or sampled softmax, sequence scoring.

Sequences are item index + 1, left-padded with 0 (``InteractionData.sequences``). A subclass supplies
the network: ``encode(seqs [B, L]) -> [B, L, D]`` hidden states and ``item_weights() -> [I, D]``.
Above ``sampled_above`` items the loss is a sampled softmax over ``num_sampled`` shared negatives and the
item table is a sparse embedding (SparseAdam), so a step costs O(B L (enc + K d)), not O(B L I d + I d).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.recsys.data import InteractionData
from app.recsys.models.base import Batches, Recommender, TrainConfig


@dataclass(frozen=True)
class SeqConfig:
    max_len: int = 50
    dim: int = 64
    dropout: float = 0.2
    loss: str = "auto"  # auto | full | sampled; auto samples once the catalogue exceeds sampled_above
    sampled_above: int = 20_000
    num_sampled: int = 1024  # negatives shared by every position of a batch
    sampler: str = "popularity"  # popularity (count^0.75, logQ-corrected) | uniform


class Dropout(nn.Module):
    """Inverted dropout from a uniform draw: on CPU ``bernoulli_`` costs about twice as much."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        return x * ((torch.rand_like(x) >= self.p).to(x.dtype) * (1.0 / (1.0 - self.p)))


class SeqNet(nn.Module):
    """A next-item network: hidden states per position and the item vectors they are scored against."""

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids + 1 -> (B, L, D); a position sees only itself and earlier items."""
        raise NotImplementedError

    def item_weights(self) -> torch.Tensor:
        """(I, D) output item vectors (the input embeddings without the padding row)."""
        raise NotImplementedError

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """(...,) item indices -> (..., D) their rows of ``item_weights``, read through the embedding so that
        a sparse table gets a sparse gradient (the sampled softmax on a large catalogue)."""
        raise NotImplementedError


def training_windows(data: InteractionData, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """[W, L] inputs and [W, L] next-item targets, both item index + 1 and left-padded with 0.

    Each user's history is cut from the end into windows of ``max_len`` targets, so long
    histories give several windows and every transition is a target exactly once.
    """
    counts = data.user_counts()
    n_targets = np.maximum(counts - 1, 0)
    n_windows = -(-n_targets // max_len)  # ceil
    users = np.repeat(np.arange(data.n_users), n_windows)
    first = np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    k = np.arange(users.size) - first  # 0 = the latest window
    end = n_targets[users] - k * max_len  # [W] offset within the user of the last target
    offset = end[:, None] - max_len + 1 + np.arange(max_len)[None, :]  # [W, L]
    valid = offset >= 1
    pos = data.indptr[users][:, None] + np.where(valid, offset, 1)
    targets = np.where(valid, data.items[pos] + 1, 0)
    inputs = np.where(valid, data.items[pos - 1] + 1, 0)
    return inputs.astype(np.int64), targets.astype(np.int64)


class SequentialRecommender(Recommender):
    """Next-item recommender trained at every position; holds no per-user state."""

    sequential = True
    reads_history = True

    @classmethod
    def default_train_config(cls) -> TrainConfig:
        """Optimisation settings tuned for this model (on ML-100K validation)."""
        return TrainConfig()

    def use_sampled(self, n_items: int) -> bool:
        return self.sampled_for(self.config, n_items)

    @staticmethod
    def sampled_for(config: SeqConfig, n_items: int) -> bool:
        """Whether a model with ``config`` trains with the sampled softmax on ``n_items`` items."""
        loss = config.loss
        if loss not in ("auto", "full", "sampled"):
            raise ValueError(f"unknown loss {loss!r}: use auto, full or sampled")
        return loss == "sampled" or (loss == "auto" and n_items > config.sampled_above)

    def start_fit(self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig) -> Batches:
        """Next-item cross-entropy at every position of sliding windows over each user's sequence: over the
        catalogue, or a sampled softmax (K shared negatives, logQ-corrected) on a large one."""
        net = self.bind(train)
        assert isinstance(net, SeqNet)
        inputs_np, targets_np = training_windows(train, self.config.max_len)
        inputs = torch.as_tensor(inputs_np, device=self.device)  # [W, L]
        targets = torch.as_tensor(targets_np, device=self.device)  # [W, L]
        sampled = self.use_sampled(train.n_items)
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        counts = torch.as_tensor(train.item_counts(), dtype=torch.float32, device=self.device)
        if self.config.sampler == "uniform":
            q = torch.ones_like(counts)
        elif self.config.sampler == "popularity":
            q = (counts + 1.0).pow(0.75)
        else:
            raise ValueError(f"unknown sampler {self.config.sampler!r}: use popularity or uniform")
        q = q / q.sum()
        log_q = q.log()

        def loss(idx: torch.Tensor) -> torch.Tensor:
            x, y = inputs[idx], targets[idx]
            width = int((y > 0).sum(1).max())  # drop columns that are padding in every row
            x, y = x[:, -width:], y[:, -width:]
            mask = y > 0
            h = net.encode(x)[mask]  # [N, D]
            t = y[mask] - 1  # [N]
            if not sampled:
                return F.cross_entropy(h @ net.item_weights().T, t)  # [N, I] logits
            negs = torch.multinomial(q, self.config.num_sampled, replacement=True, generator=gen)  # [K]
            pos = (h * net.item_rows(t)).sum(-1, keepdim=True) - log_q[t].unsqueeze(1)  # [N, 1]
            neg = h @ net.item_rows(negs).T - log_q[negs]  # [N, K]
            neg = neg.masked_fill(negs.unsqueeze(0) == t.unsqueeze(1), float("-inf"))  # accidental hits
            logits = torch.cat([pos, neg], dim=1)
            return F.cross_entropy(logits, torch.zeros_like(t))

        self.extra["loss"] = "sampled" if sampled else "full"
        return Batches(len(inputs), loss)

    @torch.no_grad()
    def score_sequences(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) item indices + 1, left-padded with 0 -> (B, I) next-item scores from the last position."""
        return self.sequence_queries(seqs) @ self._seqnet().item_weights().T

    def score_history(self, history: InteractionData, users: np.ndarray) -> torch.Tensor:
        """(B,) users -> (B, I) from each user's latest ``max_len`` items in ``history``."""
        seqs = history.sequences(self.config.max_len, np.asarray(users, dtype=np.int64))
        return self.score_sequences(torch.as_tensor(seqs, device=self.device))

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"{self.name} is sequential and keeps no per-user state: "
            "call score_history(history, users) or score_sequences(seqs)"
        )

    # -- retrieval: score = h(sequence) . w_i --------------------------------------------------------
    def _seqnet(self) -> SeqNet:
        assert isinstance(self.net, SeqNet)
        return self.net

    def item_vectors(self) -> torch.Tensor:
        """[I, D] the output item vectors."""
        return self._seqnet().item_weights().detach()

    def item_embeddings(self) -> torch.Tensor:
        return self.item_vectors()

    @torch.no_grad()
    def sequence_queries(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) item indices + 1, left-padded with 0 -> (B, D) the hidden state after the last item."""
        seqs = torch.as_tensor(seqs, device=self.device)[:, -self.config.max_len :]
        width = max(int((seqs > 0).sum(1).max()) if seqs.numel() else 0, 1)
        return self._seqnet().encode(seqs[:, -width:])[:, -1]  # [B, D]

    def user_queries(self, batch: InteractionData, users: np.ndarray) -> torch.Tensor:
        """(B,) users -> (B, D) from each one's latest ``max_len`` items (row b of ``batch``)."""
        seqs = batch.sequences(self.config.max_len, np.arange(len(users)))
        return self.sequence_queries(torch.as_tensor(seqs, device=self.device))

    @torch.no_grad()
    def score_candidates(self, batch: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        q = self.user_queries(batch, users)  # [B, D]
        w = self.item_vectors()[torch.as_tensor(items, device=self.device)]  # [B, K, D]
        return (w * q.unsqueeze(1)).sum(-1)

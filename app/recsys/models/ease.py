"""EASE: an embarrassingly shallow autoencoder with a closed-form item-item matrix (Steck, WWW 2019).

B = I - P / diag(P) with P = (X^T X + lambda I)^-1; scores are the user's history row times B.
A strong non-deep baseline and a useful hybrid member. Dense I x I, so meant for catalogues up to
a few ten thousand items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from app.recsys.data import InteractionData
from app.recsys.models.base import Recommender, TrainConfig


@dataclass(frozen=True)
class EASEConfig:
    lam: float = 500.0  # L2 on B; tuned on the ML-100K leave-one-out validation split
    # Scoring weight of a history item is 0.5 ** (steps back / half_life); 0 keeps the binary row.
    recency_half_life: float = 5.0
    # Largest catalogue EASE trains on: at 20,000 items the float64 Gram and its Cholesky factor are
    # 3.2 GB each and B (float32) 1.6 GB, a peak of about 8 GB (EASE_BYTES_PER_CELL x I^2).
    max_items: int = 20_000


# Peak bytes per item pair while fitting: Gram (8) + Cholesky factor (8) + B (4); measured 18.3 at 6,000 items.
EASE_BYTES_PER_CELL = 20


class _EASENet(torch.nn.Module):
    B: torch.Tensor
    indptr: torch.Tensor
    items: torch.Tensor

    def __init__(self, n_users: int, n_items: int, n_train: int) -> None:
        super().__init__()
        self.register_buffer("B", torch.zeros(n_items, n_items))  # [I, I]
        # The training rows, so score_users works without a history argument.
        self.register_buffer("indptr", torch.zeros(n_users + 1, dtype=torch.int64))  # [U + 1]
        self.register_buffer("items", torch.zeros(n_train, dtype=torch.int64))  # [N]


def history_rows(
    indptr: np.ndarray, items: np.ndarray, users: np.ndarray, n_items: int, half_life: float, device: torch.device
) -> torch.Tensor:
    """[B, I] each user's CSR history as a row; with a half-life, weight 0.5 ** (steps back / half_life)."""
    users = np.asarray(users, dtype=np.int64)
    starts, ends = indptr[users], indptr[users + 1]
    lens = ends - starts
    rows = np.repeat(np.arange(len(users)), lens)
    pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
    back = np.repeat(ends, lens) - pos - 1  # 0 for the latest item
    weight = np.ones(len(pos), dtype=np.float32) if half_life <= 0 else (0.5 ** (back / half_life)).astype(np.float32)
    x = torch.zeros((len(users), n_items), device=device)
    idx = (torch.as_tensor(rows, device=device), torch.as_tensor(items[pos], device=device))
    x.index_put_(idx, torch.as_tensor(weight, device=device), accumulate=True)
    return x


def gram(data: InteractionData, cells: int = 1 << 22) -> torch.Tensor:
    """[I, I] float64 X^T X of the binary user-item matrix, accumulated in place a block of users at a time.

    Each block is a sparse X_b^T times a dense X_b of about ``cells`` entries, so the work is E x I
    multiply-adds (not U x I^2 as dense blocks would cost) and no second I x I matrix is allocated.
    """
    n_items = data.n_items
    g = torch.zeros((n_items, n_items), dtype=torch.float64)
    chunk = max(1, cells // max(n_items, 1))
    for start in range(0, data.n_users, chunk):
        stop = min(start + chunk, data.n_users)
        lo, hi = int(data.indptr[start]), int(data.indptr[stop])
        if lo == hi:
            continue
        rows = torch.as_tensor(data.users[lo:hi] - start)  # [E_b]
        cols = torch.as_tensor(data.items[lo:hi])  # [E_b]
        ones = torch.ones(hi - lo, dtype=torch.float64)
        xt = torch.sparse_coo_tensor(torch.stack([cols, rows]), ones, (n_items, stop - start), check_invariants=False)
        xt = xt.coalesce()  # [I, b]
        x = torch.zeros((stop - start, n_items), dtype=torch.float64).index_put_((rows, cols), ones)  # [b, I]
        torch.addmm(g, xt, x, out=g)
    return g


class EASE(Recommender):
    """EASE with a closed-form fit.

    Cost: time O(E I + I^3) (sparse X^T X, then a Cholesky inverse), no epochs; memory about
    20 I^2 bytes at the peak (``EASE_BYTES_PER_CELL``), 4 I^2 once trained. Refuses above ``max_items``.
    """

    name = "ease"
    config_cls = EASEConfig
    reads_history = True
    closed_form = True

    @classmethod
    def default_train_config(cls) -> TrainConfig:
        return TrainConfig(epochs=1)

    @classmethod
    def item_limit(cls, config: EASEConfig) -> int:
        return config.max_items

    def build(self, *, n_users: int, n_items: int, n_train: int = 0) -> torch.nn.Module:
        return _EASENet(n_users, n_items, n_train)

    def solve(self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig) -> None:
        if train.n_items > self.config.max_items:
            raise ValueError(
                f"ease: {train.n_items:,} items is above max_items={self.config.max_items:,}; its dense item-item "
                f"matrices need about {EASE_BYTES_PER_CELL * train.n_items**2 / 2**30:.1f} GiB. Use a model "
                "that scales with the catalogue (mf, gru4rec, sasrec), or raise ease.max_items on a machine "
                "with that memory"
            )
        net = self.bind(train, n_train=train.n_interactions)
        assert isinstance(net, _EASENet)
        # Peak: the Gram and its Cholesky factor (float64), then P and B (float32); every step in place.
        g = gram(train)
        g.diagonal().add_(self.config.lam)
        factor = torch.linalg.cholesky(g)
        del g
        p = torch.cholesky_inverse(factor)  # [I, I] P = (X^T X + lambda I)^-1
        del factor
        p.div_(-torch.diagonal(p).clone().unsqueeze(0))  # B_ij = -P_ij / P_jj
        p.fill_diagonal_(0.0)
        net.B.copy_(p)
        del p
        net.indptr.copy_(torch.as_tensor(train.indptr))
        net.items.copy_(torch.as_tensor(train.items))
        net.to(self.device)

    def score_history(self, history: InteractionData, users: np.ndarray) -> torch.Tensor:
        assert isinstance(self.net, _EASENet)
        half = self.config.recency_half_life
        x = history_rows(history.indptr, history.items, users, history.n_items, half, self.device)
        if len(x) == 1:  # one serving request: a weighted sum of the user's H rows of B, not [I] x [I, I]
            cols = x[0].nonzero().squeeze(1)  # [H]
            # embedding_bag sums the rows in place; B[cols] would copy H x I floats first (~5x slower)
            return F.embedding_bag(cols.unsqueeze(0), self.net.B, per_sample_weights=x[0, cols].unsqueeze(0),
                                   mode="sum")  # [1, I]  # fmt: skip
        return x @ self.net.B  # [B, I]

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.net, _EASENet)
        indptr, items = self.net.indptr.cpu().numpy(), self.net.items.cpu().numpy()
        x = history_rows(indptr, items, users.cpu().numpy(), self.n_items, self.config.recency_half_life, self.device)
        return x @ self.net.B  # [B, I]

    @torch.no_grad()
    def score_candidates(self, batch: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        """(B,), (B, K) -> (B, K): the users' item rows times the candidates' columns of B only."""
        assert isinstance(self.net, _EASENet)
        half = self.config.recency_half_life
        rows_b = np.arange(len(users))
        x = history_rows(batch.indptr, batch.items, rows_b, batch.n_items, half, self.device)  # [B, I]
        rows, cols = x.nonzero(as_tuple=True)  # the history entries, [H]
        i = torch.as_tensor(items, device=self.device)  # [B, K]
        part = self.net.B[cols.unsqueeze(1), i[rows]] * x[rows, cols].unsqueeze(1)  # [H, K]
        return torch.zeros(i.shape, device=self.device).index_add_(0, rows, part)

"""Rating stacking for the hybrid: a ridge-regularised linear blend of member rating predictions.

Shapes: N rated (user, item) pairs, M members. ``preds`` is [N, M] member ratings, ``user_feat`` and
``item_feat`` are [N] standardised log(1 + training count) of each pair's user and item.

The blend (Netflix-prize style linear stacking, fitted on held-out validation ratings) is

    r = b + sum_m p_m * (w_m + g_m * a_u + h_m * a_i) + c_u * a_u + c_i * a_i

where the count terms (``gated``) let the blend trust collaborative members more for well-known
users and items. Whether they help, and the ridge strength, are chosen by K-fold cross-validation
on the validation ratings alone; the ridge pulls the weights towards the plain mean of the members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1)  # per rating: the penalty is lambda * N * |coef - prior|^2


def n_coefs(n_members: int) -> int:
    """[w (M), g (M), h (M), c_u, c_i]."""
    return 3 * n_members + 2


def design(preds: np.ndarray, user_feat: np.ndarray, item_feat: np.ndarray) -> np.ndarray:
    """[N, M], [N], [N] -> [N, 3M + 2] regressors in the order of ``n_coefs``."""
    return np.concatenate(
        [preds, preds * user_feat[:, None], preds * item_feat[:, None], user_feat[:, None], item_feat[:, None]], axis=1
    )


def active_columns(n_members: int, gated: bool) -> np.ndarray:
    """Indices of the regressors used: the member ratings alone, or with the count terms."""
    return np.arange(n_coefs(n_members) if gated else n_members)


def ridge_fit(x: np.ndarray, y: np.ndarray, prior: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Least squares with an unpenalised intercept and ``lam * N * |coef - prior|^2``: (coef, intercept)."""
    x_mean, y_mean = x.mean(0), y.mean()
    xc = x - x_mean
    yc = (y - y_mean) - xc @ prior
    gram = xc.T @ xc + lam * len(y) * np.eye(x.shape[1])
    coef = prior + np.linalg.solve(gram, xc.T @ yc)
    return coef, float(y_mean - x_mean @ coef)


@dataclass
class StackChoice:
    gated: bool
    ridge: float
    cv_rmse: float
    table: dict[str, float]  # "gated=..,ridge=.." -> cross-validated RMSE, for the record


def choose(
    preds: np.ndarray, user_feat: np.ndarray, item_feat: np.ndarray, y: np.ndarray, lo: float, hi: float,
    *, folds: int = 5, seed: int = 0, options: tuple[bool, ...] = (False, True),
) -> StackChoice:  # fmt: skip
    """Pick the count terms and ridge strength with the lowest K-fold CV RMSE (clamped predictions)."""
    m = preds.shape[1]
    x_all = design(preds, user_feat, item_feat)
    fold = np.random.default_rng(seed).permutation(len(y)) % max(2, min(folds, len(y)))
    table: dict[str, float] = {}
    best: StackChoice | None = None
    for gated in options:
        cols = active_columns(m, gated)
        x = x_all[:, cols]
        prior = np.zeros(len(cols))
        prior[:m] = 1.0 / m
        for lam in RIDGE_GRID:
            sq = 0.0
            for f in np.unique(fold):
                tr, te = fold != f, fold == f
                coef, b = ridge_fit(x[tr], y[tr], prior, lam)
                sq += float(np.square(np.clip(x[te] @ coef + b, lo, hi) - y[te]).sum())
            score = float(np.sqrt(sq / len(y)))
            table[f"gated={gated},ridge={lam:g}"] = score
            if best is None or score < best.cv_rmse - 1e-12:
                best = StackChoice(gated, lam, score, table)
    assert best is not None
    return best


class RatingStackNet(nn.Module):
    """The fitted blend plus what it reads at prediction time: each user's and item's count feature."""

    coef: torch.Tensor
    intercept: torch.Tensor
    user_feat: torch.Tensor
    item_feat: torch.Tensor
    unseen_feat: torch.Tensor
    bounds: torch.Tensor

    def __init__(self, n_users: int, n_items: int, n_members: int) -> None:
        super().__init__()
        self.register_buffer("coef", torch.zeros(n_coefs(n_members)))  # see ``n_coefs``
        self.register_buffer("intercept", torch.zeros(()))
        self.register_buffer("user_feat", torch.zeros(n_users))  # [U] standardised log1p(train count)
        self.register_buffer("item_feat", torch.zeros(n_items))  # [I]
        self.register_buffer("unseen_feat", torch.zeros(2))  # the user/item feature of a zero count
        self.register_buffer("bounds", torch.tensor([0.0, 5.0]))  # rating range: predictions are clamped to it
        self.n_members = n_members

    def set_counts(
        self, user_counts: np.ndarray, item_counts: np.ndarray, fit_users: np.ndarray, fit_items: np.ndarray
    ) -> None:
        """Standardise log1p(count) with the mean and spread over the pairs the blend is fitted on."""
        lu, li = np.log1p(user_counts.astype(np.float64)), np.log1p(item_counts.astype(np.float64))
        mu, su = lu[fit_users].mean(), max(lu[fit_users].std(), 1e-3)
        mi, si = li[fit_items].mean(), max(li[fit_items].std(), 1e-3)
        self.user_feat.copy_(torch.as_tensor((lu - mu) / su, dtype=torch.float32))
        self.item_feat.copy_(torch.as_tensor((li - mi) / si, dtype=torch.float32))
        self.unseen_feat.copy_(torch.tensor([-mu / su, -mi / si], dtype=torch.float32))

    def user_features(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B,); users past the training ones have a zero count."""
        known = users < len(self.user_feat)
        return torch.where(known, self.user_feat[users.clamp(max=len(self.user_feat) - 1)], self.unseen_feat[0])

    def item_features(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_feat[items]

    def member_weights(self, au: torch.Tensor, ai: torch.Tensor) -> torch.Tensor:
        """(...), (...) broadcastable count features -> (..., M) per-pair member weights."""
        m = self.n_members
        w, g, h = self.coef[:m], self.coef[m : 2 * m], self.coef[2 * m : 3 * m]
        return w + au.unsqueeze(-1) * g + ai.unsqueeze(-1) * h

    def offset(self, au: torch.Tensor, ai: torch.Tensor) -> torch.Tensor:
        """The part of the rating that no member carries: intercept and the count terms."""
        return self.intercept + self.coef[-2] * au + self.coef[-1] * ai

    def clamp(self, ratings: torch.Tensor) -> torch.Tensor:
        return ratings.clamp(float(self.bounds[0]), float(self.bounds[1]))

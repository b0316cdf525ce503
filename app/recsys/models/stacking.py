"""The rating stack, ``hybrid-rating``: a ridge-regularised linear blend of rating models' predictions.

Shapes: N rated (user, item) pairs, M members. ``preds`` is [N, M] member ratings, ``user_feat`` and
``item_feat`` are [N] standardised log(1 + training count) of each pair's user and item.

The blend (Netflix-prize style linear stacking, fitted on held-out validation ratings) is

    r = b + sum_m p_m * (w_m + g_m * a_u + h_m * a_i) + c_u * a_u + c_i * a_i

where the count terms (``gated``) let the blend trust collaborative members more for well-known
users and items. Whether they help, and the ridge strength, are chosen by K-fold cross-validation
on the validation ratings alone; the ridge pulls the weights towards the plain mean of the members.

``RatingStack`` is the model: it trains on ratings whatever the run's objective. In a run with objective
'rating' its members are the run's rating models (served too, as ``mf-rating`` ...); otherwise it trains
its own on the ratings, so the default set predicts ratings from the first run. It shares member
handling with the ranking hybrid (``ensemble.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from app.recsys.data import InteractionData
from app.recsys.models.base import EpochCallback, Recommender, TrainConfig, trained_on_ratings
from app.recsys.models.ensemble import Ensemble

# The rating models whose errors differ most (chosen on the u1.base validation slice).
RATING_MEMBERS = ("mf", "content", "gmf")

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


@dataclass(frozen=True)
class RatingStackConfig:
    members: tuple[str, ...] = ()  # empty: every registered name of RATING_MEMBERS
    rating_counts: str = "auto"  # count terms in the stack: auto (cross-validated) | on | off
    rating_folds: int = 5  # cross-validation folds over the validation ratings
    # The default set leaves the stack out above this many items: its GMF member does not scale there yet
    # (AdamW's weight decay steps every embedding row at each step, O((U + I) d); MF and content use sparse
    # tables above sparse_above). Asked for by name, it trains all the same.
    max_items: int = 20_000


def _registered(names: tuple[str, ...]) -> tuple[str, ...]:
    from app.recsys.models import model_names

    known = set(model_names())
    return tuple(n for n in names if n in known)


class RatingStack(Ensemble):
    """Ratings on the data set's scale: a linear stack of rating members, fitted on the validation ratings.

    Cost: its members' on the rated events (trained first unless the run offers them), then a ridge
    solve of O(N M^2) per candidate setting over the N validation ratings.
    """

    name = "hybrid-rating"
    config_cls = RatingStackConfig
    supports_rating = True
    rating_only = True
    closed_form = True  # once its members are trained
    default_members = RATING_MEMBERS
    member_objective = "rating"
    # A run on ratings trains (and serves) the members first; any other run leaves them to the stack.
    rating_depends_on: ClassVar[tuple[str, ...] | None] = _registered(RATING_MEMBERS)

    @classmethod
    def default_train_config(cls) -> TrainConfig:
        """Caps the members' epochs at their own defaults; the stack itself is a closed-form solve."""
        return TrainConfig(epochs=200, objective="rating")

    def accepts(self, member: Recommender) -> bool:
        return trained_on_ratings(member)

    @classmethod
    def item_limit(cls, config: RatingStackConfig) -> int:
        return config.max_items

    def build(self, *, n_users: int, n_items: int, n_members: int = 1, rating: int = 1) -> torch.nn.Module:
        return RatingStackNet(n_users, n_items, n_members)

    def _stack(self) -> RatingStackNet:
        assert isinstance(self.net, RatingStackNet)
        return self.net

    # -- training -------------------------------------------------------------------------------
    def before_fit(
        self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig, on_epoch: EpochCallback | None
    ) -> TrainConfig:
        """Rating members: the ones handed in, else the run's rating models, and the rest trained here."""
        rated = train.has_ratings()
        if not rated.any():
            raise ValueError(f"{self.name} needs interactions with a rating; this data set has none")
        if self._given:  # handed in: exactly these, and they must rate
            names = list(self.members)
            wrong = [n for n, m in self.members.items() if not trained_on_ratings(m)]
            if wrong:
                raise ValueError(f"{self.name}: members {wrong} were not trained with objective 'rating'")
        else:  # the run's rating models where offered, the rest trained here
            names = self.configured_members()
            pool = {**self._offered, **self.members}
            self.members = {n: pool[n] for n in names if n in pool and trained_on_ratings(pool[n])}
        if not names:
            raise ValueError(f"{self.name} has no members: none of its member names is registered")
        self.extra = {"members": names, "member_reports": self.train_members(names, train, valid, cfg)}
        return cfg

    def solve(self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig) -> None:
        """The members' linear stack, fitted on the validation ratings (their plain mean when too few)."""
        names = list(self.members)
        ratings = train.ratings[train.has_ratings()]
        lo, hi = float(ratings.min()), float(ratings.max())
        net = self.bind(train, n_members=len(names))
        assert isinstance(net, RatingStackNet)
        net.bounds.copy_(torch.tensor([lo, hi]))
        self.extra |= {
            "objective": "rating",
            "rating_min": lo,
            "rating_max": hi,
            "rating_mean": float(ratings.mean()),
        }
        held = None if valid is None else valid.subset(valid.has_ratings())
        if held is None or held.n_interactions < 2 * max(2, self.config.rating_folds):  # too few: the plain mean
            net.set_counts(train.user_counts(), train.item_counts(), train.users, train.items)
            net.coef[: len(names)] = 1.0 / len(names)
            self.extra["stack"] = {"fitted_on": 0}
            self.extra["weights"] = self.weights
            return
        net.set_counts(train.user_counts(), train.item_counts(), held.users, held.items)
        users = torch.as_tensor(held.users, device=self.device)
        items = torch.as_tensor(held.items, device=self.device)
        with torch.no_grad():
            preds = self._member_pair_ratings(users, items).double().cpu().numpy()  # [N, M]
            au = net.user_features(users).double().cpu().numpy()
            ai = net.item_features(items).double().cpu().numpy()
        y = held.ratings.astype(np.float64)
        options = {"auto": (False, True), "on": (True,), "off": (False,)}.get(self.config.rating_counts)
        if options is None:
            raise ValueError(f"unknown rating_counts {self.config.rating_counts!r}: use auto, on or off")
        choice = choose(preds, au, ai, y, lo, hi, folds=self.config.rating_folds, seed=cfg.seed, options=options)
        cols = active_columns(len(names), choice.gated)
        prior = np.zeros(len(cols))
        prior[: len(names)] = 1.0 / len(names)
        coef, intercept = ridge_fit(design(preds, au, ai)[:, cols], y, prior, choice.ridge)
        full = np.zeros(n_coefs(len(names)))
        full[cols] = coef
        net.coef.copy_(torch.as_tensor(full, dtype=torch.float32))
        net.intercept.fill_(intercept)
        member_rmse = np.sqrt(np.square(np.clip(preds, lo, hi) - y[:, None]).mean(0))
        self.extra["stack"] = {
            "fitted_on": int(len(y)),
            "count_terms": choice.gated,
            "ridge": choice.ridge,
            "cv_rmse": choice.cv_rmse,
            "cv": choice.table,
            "member_valid_rmse": dict(zip(names, member_rmse.tolist(), strict=True)),
        }
        self.extra["weights"] = self.weights
        self.metrics["valid_rmse_cv"] = choice.cv_rmse  # out-of-fold: what the stack does on unseen pairs

    # -- rating predictions ---------------------------------------------------------------------
    def _fill(self, preds: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """(..., M) member ratings, (..., M) bool -> missing ones replaced by the mean of the others."""
        n = ok.sum(-1, keepdim=True)
        mean = (preds * ok).sum(-1, keepdim=True) / n.clamp(min=1)
        mean = torch.where(n > 0, mean, torch.full_like(mean, float(self.extra.get("rating_mean", 0.0))))
        return torch.where(ok, preds, mean)

    def _member_pair_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,), (B,) -> (B, M) member ratings clamped to the rating range."""
        net = self._stack()
        u = users.cpu().numpy()
        preds = torch.zeros((len(users), len(self.members)), device=self.device)
        ok = torch.zeros_like(preds, dtype=torch.bool)
        for m, member in enumerate(self.members.values()):
            serve = torch.as_tensor((u >= 0) & (u < len(member.user_ids)), device=self.device)
            if serve.any():
                preds[serve, m] = member.predict_ratings(users[serve], items[serve]).float()  # type: ignore[attr-defined]
                ok[serve, m] = True
        return self._fill(net.clamp(preds), ok)

    def _unseen_past_end(self, users: np.ndarray) -> torch.Tensor:
        """(B,) users, -1 for one never seen -> the nets' convention: a row past the training users."""
        return torch.as_tensor(np.where(users >= 0, users, self.dims.get("n_users", 0)), device=self.device)

    def _member_candidate_ratings(
        self, batch: InteractionData, users: np.ndarray, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B, K) -> (B, K, M) member ratings clamped to the rating range (a member that cannot rate a
        user stands in with the others' mean), and (B, 1, M) which members could."""
        net = self._stack()
        preds = torch.zeros((*items.shape, len(self.members)), device=self.device)
        ok = torch.zeros((len(users), 1, len(self.members)), dtype=torch.bool, device=self.device)
        for m, member in enumerate(self.members.values()):
            serve = self.serves_users(member, users)
            if serve.any():
                rows = np.flatnonzero(serve)
                scored = member.score_candidates(batch.select(rows), users[rows], items[rows]).float()
                preds[torch.as_tensor(rows, device=self.device), :, m] = scored
                ok[torch.as_tensor(rows, device=self.device), :, m] = True
        return self._fill(net.clamp(preds), ok.expand_as(preds)), ok

    def contributions(
        self, batch: InteractionData, users: np.ndarray, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B, K) -> (B, K, M) each member's weighted rating and (B, K) the rest of the stacked rating
        (intercept and count terms); the rating is their sum, clamped to the rating range."""
        users = np.asarray(users, dtype=np.int64)
        items = torch.as_tensor(items, device=self.device)
        net = self._stack()
        au = net.user_features(self._unseen_past_end(users)).unsqueeze(1).expand(items.shape)  # [B, K]
        ai = net.item_features(items)  # [B, K]
        preds, ok = self._member_candidate_ratings(batch, users, items)  # [B, K, M], [B, 1, M]
        contrib = preds * net.member_weights(au, ai)  # [B, K, M]
        n_ok = ok.sum(-1, keepdim=True)  # [B, 1, 1]
        if bool(((n_ok > 0) & (n_ok < ok.shape[-1])).any()):  # credit stand-ins to the members that scored
            moved = (contrib * ~ok).sum(-1, keepdim=True) / n_ok.clamp(min=1)
            contrib = torch.where(n_ok > 0, torch.where(ok, contrib + moved, torch.zeros_like(contrib)), contrib)
        return contrib, net.offset(au, ai)

    @torch.no_grad()
    def explain_candidates(
        self, batch: InteractionData, users: np.ndarray, items: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
        """Stacked ratings of the candidates as their scores; ``weights`` are refused (the stack's are fitted
        jointly with its intercept and count terms)."""
        if weights is not None:
            raise ValueError(f"{self.name} does not re-blend its members per request")
        contrib, rest = self.contributions(batch, users, items)  # [B, K, M], [B, K]
        scores = self._stack().clamp(contrib.sum(-1) + rest)
        return scores, np.asarray(list(self.members), dtype=object), contrib.argmax(-1)

    @torch.no_grad()
    def predict_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,), (B,) -> (B,) stacked ratings, clamped to the training range."""
        net = self._stack()
        au, ai = net.user_features(users), net.item_features(items)
        preds = self._member_pair_ratings(users, items)  # [B, M]
        return net.clamp((preds * net.member_weights(au, ai)).sum(-1) + net.offset(au, ai))

    @property
    def weights(self) -> dict[str, float]:
        """The stack's member weights for a user and item of typical training counts."""
        return dict(zip(self.members, self._stack().coef[: len(self.members)].detach().cpu().tolist(), strict=True))

"""Hybrid: a weighted sum of its members' per-user standardised scores, weights learned on validation.

Weights (and gates on the user's history length) are fitted by the shared train loop with a listwise
softmax loss over each validation user's unseen items, early-stopped on validation NDCG@K. Members
train themselves unless given pre-trained (``from_members``) and are saved in ``members/<name>/``.

With ``objective='rating'`` the members are rating models trained on ratings, and the hybrid is a
linear stack of their rating predictions (``stacking.py``): ridge least squares on the validation
ratings, with count terms and ridge strength chosen by cross-validation on those ratings alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F

from app.recsys.data import InteractionData
from app.recsys.models import stacking
from app.recsys.models.abilities import RatingPredictor
from app.recsys.models.base import (
    EpochCallback,
    EpochInfo,
    FitReport,
    Recommender,
    TrainConfig,
    trained_on_ratings,
    tuned_train_config,
)
from app.recsys.models.fusion import FusionNet, fuse, fused_ndcg, normalise_candidates
from app.recsys.models.stacking import RatingStackNet
from app.recsys.training import rating_errors, train_loop

DEFAULT_MEMBERS = ("ease", "content", "mf", "neumf", "sasrec", "gru4rec", "popularity")
# Rating objective: the rating models whose errors differ most (chosen on the u1.base validation slice).
RATING_MEMBERS = ("mf", "content", "gmf")


def _registered_defaults(names: tuple[str, ...] = DEFAULT_MEMBERS) -> tuple[str, ...]:
    from app.recsys.models import model_names

    registered = set(model_names())
    return tuple(n for n in names if n in registered)


# Candidate cells (user x item) one block of member scoring holds while the weights are fitted: each member
# gathers a d-vector per cell, so 2^21 cells stay near 0.5 GiB at d = 64.
FIT_CELLS = 1 << 21


@dataclass(frozen=True)
class HybridConfig:
    members: tuple[str, ...] = ()  # empty: every registered name of DEFAULT_MEMBERS
    normalise: str = "zscore"  # zscore | rank (reciprocal rank among the user's unseen items)
    rank_offset: float = 10.0  # k in 1 / (k + rank) for rank fusion
    gated: bool = True  # member weights also depend on the user's history length
    max_fit_users: int = 4096  # validation users whose member scores are cached for fitting the weights
    reference_items: int = 4096  # items whose scores normalise each member per user (all, in a smaller catalogue)
    # A larger catalogue learns the weights on each user's candidates: every member's top fit_depth items.
    fit_all_items: int = 20_000
    fit_depth: int = 100
    # Rating objective (see stacking.py):
    rating_members: tuple[str, ...] = ()  # empty: every registered name of RATING_MEMBERS
    rating_counts: str = "auto"  # count terms in the stack: auto (cross-validated) | on | off
    rating_folds: int = 5  # cross-validation folds over the validation ratings


def member_train_config(cls: type[Recommender], cfg: TrainConfig, objective: str = "implicit") -> TrainConfig:
    """The member's tuned defaults (for ``objective``) with the hybrid run's seed, device and verbosity.

    ``cfg.epochs`` caps the member's epochs too, so a quick hybrid run (``--epochs 5``) is quick
    throughout; the hybrid's default (200) leaves every member's own default in force.
    """
    base = tuned_train_config(cls, objective)
    epochs = min(base.epochs, cfg.epochs)
    return replace(base, epochs=epochs, seed=cfg.seed, device=cfg.device, verbose=cfg.verbose, objective=objective)


class Hybrid(Recommender):
    """Weighted fusion of its members' standardised scores.

    Cost: its members', trained first, plus O(U_fit W M) per epoch for the weights (U_fit = max_fit_users,
    W = I up to fit_all_items, else M x fit_depth candidates, M members); memory 4 U_fit W M bytes of
    cached member scores.
    """

    name = "hybrid"
    config_cls = HybridConfig
    uses_features = True  # the content member reads item features
    reads_history = True
    supports_rating = True  # with objective 'rating': a stack of its rating members
    depends_on: ClassVar[tuple[str, ...]] = _registered_defaults()  # pipelines train these first
    rating_depends_on: ClassVar[tuple[str, ...]] = _registered_defaults(RATING_MEMBERS)  # the same, for ratings

    def __init__(self, config: HybridConfig | None = None) -> None:
        super().__init__(config)
        self.members: dict[str, Recommender] = {}
        self._offered: dict[str, Recommender] = {}  # models of the pipeline run, to pick rating members from
        self._given = False  # members handed in by ``from_members``: used as they are

    @classmethod
    def default_train_config(cls) -> TrainConfig:
        """For the weights (tuned on ML-100K validation); early stopping ends the fit long before 200."""
        return TrainConfig(epochs=200, batch_size=64, lr=0.05, patience=10)

    @classmethod
    def from_members(
        cls, members: Iterable[Recommender] | dict[str, Recommender], config: HybridConfig | None = None
    ) -> Self:
        """A hybrid over already trained members; ``fit`` then only learns the weights."""
        items = members.items() if isinstance(members, dict) else ((m.name, m) for m in members)
        model = cls(config)
        model.members = dict(items)
        model._given = True
        return model

    def use_dependencies(self, trained: dict[str, Recommender]) -> None:
        """Pipeline hook: members trained earlier in the same run; ``fit`` then only learns weights."""
        self._offered = dict(trained)
        self.members = {n: trained[n] for n in self.member_names() if n in trained}

    def rating_member_names(self) -> list[str]:
        from app.recsys.models import model_names

        registered = set(model_names())
        return [n for n in self.config.rating_members or RATING_MEMBERS if n in registered and n != self.name]

    @property
    def rating_model(self) -> bool:
        return bool(self.dims.get("rating", 0))

    def member_names(self) -> list[str]:
        if self.members:
            return list(self.members)
        from app.recsys.models import model_names

        registered = set(model_names())
        return [n for n in self.config.members or DEFAULT_MEMBERS if n in registered and n != self.name]

    def build(self, *, n_users: int, n_items: int, n_members: int = 1, rating: int = 0) -> torch.nn.Module:
        if rating:
            return RatingStackNet(n_users, n_items, n_members)
        return FusionNet(n_users, n_members, self.config.gated)

    def _fusion(self) -> FusionNet:
        assert isinstance(self.net, FusionNet)
        return self.net

    def to(self, device: torch.device | str) -> Self:
        super().to(device)
        for m in self.members.values():
            m.to(device)
        return self

    # -- training -------------------------------------------------------------------------------
    def fit(
        self,
        train: InteractionData,
        valid: InteractionData | None,
        cfg: TrainConfig,
        on_epoch: EpochCallback | None = None,
    ) -> FitReport:
        if cfg.objective == "rating":
            return self._fit_rating(train, valid, cfg, on_epoch)
        if cfg.objective != "implicit":
            raise ValueError(f"unknown objective {cfg.objective!r}: use implicit or rating")
        t0 = time.perf_counter()
        self.device = torch.device(cfg.device)
        names = self.member_names()
        if not names:
            raise ValueError("hybrid has no members: none of its member names is registered")
        member_reports = self._train_members(names, train, valid, cfg)
        net = self.bind(train, n_members=len(names))
        assert isinstance(net, FusionNet)
        self.extra = {"members": names, "member_reports": member_reports, "objective": "implicit"}
        metric = f"ndcg@{cfg.eval_k}"
        if valid is None or valid.n_interactions == 0:  # nothing to learn from: equal weights
            net.fit_lengths(train.user_counts(), train.user_counts())
            return FitReport(epochs_run=0, metric_name=metric)
        users = np.unique(valid.users)
        if len(users) > self.config.max_fit_users:
            users = np.sort(np.random.default_rng(cfg.seed).choice(users, self.config.max_fit_users, replace=False))
        net.fit_lengths(train.user_counts(), train.user_counts()[users])
        first = torch.as_tensor(valid.items[valid.indptr[users]], device=self.device)  # [U] held-out items
        with torch.no_grad():
            if train.n_items <= self.config.fit_all_items:  # every item: the weights see what ranking sees
                candidates = torch.arange(train.n_items, device=self.device).expand(len(users), -1)
                seen, targets = train.seen_mask(users, device=self.device), first  # [U, I], [U]
            else:  # each user's retrieval candidates, as ranking will see them on a large catalogue
                candidates, seen = self.fit_candidates(train, users, first)  # [U, W], [U, W]
                targets = torch.zeros_like(first)  # the held-out item is the first candidate
            z = self.member_scores_chunked(train, users, candidates)  # [U, W, M]
        lengths = torch.as_tensor(train.user_counts()[users], device=self.device)  # [U]

        def step(idx: torch.Tensor) -> torch.Tensor:
            logits = fuse(z[idx], net.user_weights(lengths[idx])).masked_fill(seen[idx], float("-inf"))  # [B, I]
            return F.cross_entropy(logits, targets[idx])

        def validate() -> float:
            return fused_ndcg(z, net.user_weights(lengths), seen, targets, cfg.eval_k)

        report = train_loop(
            self, n_samples=len(users), step=step, validate=validate, cfg=cfg, metric_name=metric, on_epoch=on_epoch
        )
        with torch.no_grad():  # never worse on validation than the best single member or the plain sum
            learned = (net.weight.detach().clone(), net.gate.detach().clone())
            zero = torch.zeros_like(learned[1])
            starts = [learned, (torch.ones_like(zero), zero), *((e, zero) for e in torch.eye(len(names)))]
            scored = []
            for w, g in starts:
                net.weight.copy_(w), net.gate.copy_(g)
                scored.append(fused_ndcg(z, net.user_weights(lengths), seen, targets, cfg.eval_k))
            best = int(np.argmax(scored))
            net.weight.copy_(starts[best][0]), net.gate.copy_(starts[best][1])
        report.best_metric = scored[best]
        report.seconds = time.perf_counter() - t0  # members trained here included
        self.extra["weights"] = self.weights
        self.extra["gates"] = dict(zip(names, net.gate.detach().cpu().tolist(), strict=True))
        self.metrics["valid_" + metric] = report.best_metric
        return report

    @torch.no_grad()
    def fit_candidates(
        self, train: InteractionData, users: np.ndarray, targets: torch.Tensor, chunk: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(U,) users and their held-out items -> (U, W) candidates: the held-out item first, then each
        member's top ``fit_depth`` unseen items, what retrieval gives the ranking stage; and (U, W) the
        repeats among them (an item two members found), left out of the softmax."""
        tops = []
        for member in self.members.values():
            member.prepare_for_serving()  # frozen weights from here: an encoder's catalogue encoded once
            ok = self._serves_users(member, users)
            part = targets.unsqueeze(1).repeat(1, self.config.fit_depth)  # users it cannot score: repeats only
            for start in range(0, len(users), chunk):
                rows = np.flatnonzero(ok[start : start + chunk]) + start
                if rows.size:
                    scores = member.score_history(train, users[rows]).float()  # [B, I]
                    scores = scores.masked_fill(train.seen_mask(users[rows], device=scores.device), float("-inf"))
                    part[torch.as_tensor(rows, device=self.device)] = scores.topk(self.config.fit_depth, 1).indices
            tops.append(part)
        candidates = torch.cat([targets.unsqueeze(1), *tops], dim=1)  # [U, W]
        order = candidates.sort(dim=1, stable=True)  # a repeat sorts after its first occurrence
        repeat = torch.zeros_like(candidates, dtype=torch.bool)
        repeat.scatter_(1, order.indices[:, 1:], order.values[:, 1:] == order.values[:, :-1])
        return candidates, repeat

    def _train_members(
        self,
        names: list[str],
        train: InteractionData,
        valid: InteractionData | None,
        cfg: TrainConfig,
        objective: str = "implicit",
    ) -> dict[str, dict]:
        """Fit the members not handed in pre-trained, each with its own tuned defaults."""
        from app.recsys.models import get_model_class

        reports: dict[str, dict] = {}
        for name in names:
            if name in self.members:
                continue
            cls = get_model_class(name)
            member = cls().to(self.device)
            rep = member.fit(train, valid, member_train_config(cls, cfg, objective))
            reports[name] = {"best_metric": rep.best_metric, "seconds": rep.seconds, "epochs": rep.epochs_run}
            self.members[name] = member
        return reports

    def _fit_rating(
        self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig, on_epoch: EpochCallback | None
    ) -> FitReport:
        """Rating members (trained on ratings), then their linear stack fitted on the validation ratings."""
        t0 = time.perf_counter()
        self.device = torch.device(cfg.device)
        rated = train.has_ratings()
        if not rated.any():
            raise ValueError("hybrid: objective 'rating' needs interactions with a rating")
        if self._given:  # handed in: exactly these, and they must rate
            names = list(self.members)
            wrong = [n for n, m in self.members.items() if not trained_on_ratings(m)]
            if wrong:
                raise ValueError(f"hybrid: members {wrong} were not trained with objective 'rating'")
        else:  # the run's rating models where offered, the rest trained here
            names = self.rating_member_names()
            pool = {**self._offered, **self.members}
            self.members = {n: pool[n] for n in names if n in pool and trained_on_ratings(pool[n])}
        if not names:
            raise ValueError("hybrid: no rating members: none of its rating member names is registered")
        member_reports = self._train_members(names, train, valid, cfg, objective="rating")
        self.members = {n: self.members[n] for n in names}
        ratings = train.ratings[rated]
        lo, hi = float(ratings.min()), float(ratings.max())
        net = self.bind(train, n_members=len(names), rating=1)
        assert isinstance(net, RatingStackNet)
        net.bounds.copy_(torch.tensor([lo, hi]))
        self.extra = {
            "members": names,
            "member_reports": member_reports,
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
            return FitReport(epochs_run=0, metric_name="rmse", seconds=time.perf_counter() - t0)
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
        choice = stacking.choose(
            preds, au, ai, y, lo, hi, folds=self.config.rating_folds, seed=cfg.seed, options=options
        )
        cols = stacking.active_columns(len(names), choice.gated)
        prior = np.zeros(len(cols))
        prior[: len(names)] = 1.0 / len(names)
        coef, intercept = stacking.ridge_fit(stacking.design(preds, au, ai)[:, cols], y, prior, choice.ridge)
        full = np.zeros(stacking.n_coefs(len(names)))
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
        errors = rating_errors(self, held)
        self.metrics.update({f"valid_{k}": v for k, v in errors.items()})
        self.metrics["valid_rmse_cv"] = choice.cv_rmse  # out-of-fold: what the stack does on unseen pairs
        seconds = time.perf_counter() - t0
        if on_epoch is not None:
            on_epoch(EpochInfo(1, 1, errors["rmse"] ** 2, errors["rmse"], "rmse", errors["rmse"], 1, seconds))
        return FitReport(
            epochs_run=1, best_epoch=1, best_metric=errors["rmse"], metric_name="rmse", seconds=seconds,
            history=[{"epoch": 1, "loss": errors["rmse"] ** 2, "rmse": errors["rmse"], "seconds": seconds}],
        )  # fmt: skip

    # -- rating predictions ---------------------------------------------------------------------
    def _stack(self) -> RatingStackNet:
        assert isinstance(self.net, RatingStackNet)
        return self.net

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
                assert isinstance(member, RatingPredictor)  # a rating stack's members are rating models
                preds[serve, m] = member.predict_ratings(users[serve], items[serve]).float()
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
            serve = self._serves_users(member, users)
            if serve.any():
                rows = np.flatnonzero(serve)
                scored = member.score_candidates(batch.select(rows), users[rows], items[rows]).float()
                preds[torch.as_tensor(rows, device=self.device), :, m] = scored
                ok[torch.as_tensor(rows, device=self.device), :, m] = True
        return self._fill(net.clamp(preds), ok.expand_as(preds)), ok

    def _rating_parts(
        self, batch: InteractionData, users: np.ndarray, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B, K) -> (B, K, M) each member's weighted rating and (B, K) the rest of the stacked rating."""
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
    def predict_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,), (B,) -> (B,) stacked ratings, clamped to the training range. Needs ``objective='rating'``."""
        if not self.rating_model:
            raise ValueError("hybrid was trained on implicit feedback; train with objective='rating'")
        net = self._stack()
        au, ai = net.user_features(users), net.item_features(items)
        preds = self._member_pair_ratings(users, items)  # [B, M]
        return net.clamp((preds * net.member_weights(au, ai)).sum(-1) + net.offset(au, ai))

    # -- scoring --------------------------------------------------------------------------------
    def reference_items(self) -> tuple[np.ndarray, np.ndarray]:
        """The items whose member scores set each user's normalisation, and each item's position among
        them (-1: not one). Every item of a catalogue of at most ``reference_items``, else a fixed random
        sample of that many, whose mean and spread estimate the catalogue's without bias: K candidates
        then cost K + reference_items member scores, not I."""
        n, size = self.n_items, self.config.reference_items
        cached = self.__dict__.get("_reference")
        if cached is None or cached[0] != n:
            ref = np.arange(n) if n <= size else np.sort(np.random.default_rng(n).choice(n, size, replace=False))
            pos = np.full(n, -1, dtype=np.int64)
            pos[ref] = np.arange(ref.size)
            cached = self.__dict__["_reference"] = (n, ref, pos)
        return cached[1], cached[2]

    def _serves_users(self, member: Recommender, users: np.ndarray) -> np.ndarray:
        """(B,) -> (B,) bool: the member can score these users (its training users, or any from their items)."""
        if member.reads_history:
            return np.ones(len(users), dtype=bool)
        return (users >= 0) & (users < len(member.user_ids))

    def user_blocks(self, n_users: int, n_candidates: int) -> list[slice]:
        """Slices of users small enough that a member scoring their [B, K + R] candidates (plus the reference
        items) gathers at most FIT_CELLS vectors: how many users are scored at once when fitting and ranking."""
        rows = max(1, FIT_CELLS // (n_candidates + self.reference_items()[0].size))
        return [slice(s, s + rows) for s in range(0, n_users, rows)]

    def member_scores_chunked(self, train: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        """:meth:`member_scores` of many users (fitting the weights), a :meth:`user_blocks` block at a time."""
        parts = [
            self.member_scores(train.select(users[b]), users[b], items[b])
            for b in self.user_blocks(len(users), items.shape[1])
        ]
        return torch.cat(parts) if parts else torch.zeros((0, items.shape[1], len(self.members)), device=self.device)

    def member_scores(self, batch: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        """(B,) users, (B, K) items (as ``score_candidates``) -> (B, K, M) member scores normalised per user
        over the reference items the user has not seen; 0 for a member that cannot score the user."""
        users = np.asarray(users, dtype=np.int64)
        items = torch.as_tensor(items, device=self.device)
        ref_np, ref_pos = self.reference_items()
        ref = torch.as_tensor(ref_np, device=self.device).expand(len(users), -1)  # [B, R]
        both = torch.cat([items, ref], dim=1)  # [B, K + R]
        raw = torch.zeros((*both.shape, len(self.members)), device=self.device)  # [B, K + R, M]
        oks = []
        for m, member in enumerate(self.members.values()):
            ok = self._serves_users(member, users)
            if ok.all():
                raw[:, :, m] = member.score_candidates(batch, users, both).float()
            elif ok.any():
                rows = np.flatnonzero(ok)
                scored = member.score_candidates(batch.select(rows), users[rows], both[rows]).float()
                raw[torch.as_tensor(rows, device=self.device), :, m] = scored
            oks.append(ok)
        seen_rows, pos = batch.rows_of(np.arange(len(users)))
        at = ref_pos[batch.items[pos]]
        mine = at >= 0  # the users' items that are reference items
        free = torch.ones((len(users), ref_np.size), dtype=torch.bool)  # [B, R]
        free[torch.as_tensor(seen_rows[mine]), torch.as_tensor(at[mine])] = False
        how, offset, scale = self.config.normalise, self.config.rank_offset, self.n_items / ref_np.size
        z = normalise_candidates(raw, items.shape[1], free.to(self.device), how, offset, scale)
        return z * torch.as_tensor(np.stack(oks, axis=1), device=self.device).unsqueeze(1)  # [B, K, M]

    def user_weights(self, batch: InteractionData, users: np.ndarray) -> torch.Tensor:
        """(B,) -> (B, M) each user's member weights (gated on their history length)."""
        return self._fusion().user_weights(torch.as_tensor(batch.user_counts(), device=self.device))

    @torch.no_grad()
    def contributions(
        self, batch: InteractionData, users: np.ndarray, items: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B,), (B, K) -> (B, K, M) each member's weighted share of the score; the scores are the sums over
        M (for a rating hybrid, plus the stack's intercept and count terms, clamped to the rating range).
        ``weights`` ([M]) replaces the learned ones (a request that re-blends the members)."""
        users = np.asarray(users, dtype=np.int64)
        items = torch.as_tensor(items, device=self.device)
        if self.rating_model:
            return self._rating_parts(batch, users, items)[0]
        w = self.user_weights(batch, users) if weights is None else weights.to(self.device).expand(len(users), -1)
        return self.member_scores(batch, users, items) * w.unsqueeze(1)

    @torch.no_grad()
    def score_candidates(self, batch: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        return self.explain_candidates(batch, users, items)[0]

    @torch.no_grad()
    def explain_candidates(
        self, batch: InteractionData, users: np.ndarray, items: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
        """(B,), (B, K) -> (B, K) scores, the member names and (B, K) the index of the member that added most
        to each score. ``weights`` as in ``contributions``."""
        users = np.asarray(users, dtype=np.int64)
        items = torch.as_tensor(items, device=self.device)
        if self.rating_model:
            contrib, rest = self._rating_parts(batch, users, items)  # [B, K, M], [B, K]
            scores = self._stack().clamp(contrib.sum(-1) + rest)
        else:
            contrib = self.contributions(batch, users, items, weights)
            scores = contrib.sum(-1)
        return scores, np.asarray(list(self.members), dtype=object), contrib.argmax(-1)

    @torch.no_grad()
    def score_history(self, history: InteractionData, users: np.ndarray) -> torch.Tensor:
        users = np.asarray(users, dtype=np.int64)
        everything = torch.arange(self.n_items, device=self.device).expand(len(users), -1)
        known = np.where(users < self.dims.get("n_users", 0), users, -1)  # rows past the training users: unseen
        parts = [
            self.score_candidates(history.select(users[b]), known[b], everything[b])
            for b in self.user_blocks(len(users), self.n_items)
        ]
        return torch.cat(parts) if parts else torch.zeros((0, self.n_items), device=self.device)

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the hybrid scores from the users' items: call score_history(history, users)")

    @property
    def weights(self) -> dict[str, float]:
        """Member weights for a user of typical history length (the gates shift them per user); for a
        rating hybrid, the stack's weights for a user and item of typical training counts."""
        if self.rating_model:
            w = self._stack().coef[: len(self.members)]
        else:
            w = self._fusion().weight
        return dict(zip(self.members, w.detach().cpu().tolist(), strict=True))

    # -- persistence: members live in members/<name>/ of the hybrid's own folder ------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        self.extra["members"] = list(self.members)
        super().save(path)
        for name, member in self.members.items():
            member.save(path / "members" / name)

    def after_load(self, path: Path) -> None:
        from app.recsys.models import get_model_class

        self.members = {
            name: get_model_class(name).load(Path(path) / "members" / name, device=self.device)
            for name in self.extra.get("members", [])
        }

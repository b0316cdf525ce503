"""Hybrid: a weighted sum of its members' per-user standardised scores, weights learned on validation.

Weights (and gates on the user's history length) are fitted by the one trainer with a listwise
softmax loss over each validation user's unseen items, early-stopped on validation NDCG@K. Members
train themselves unless given pre-trained (``from_members``) and are saved in ``members/<name>/``
(``ensemble.py``). A request may re-blend the members with its own weights (``contributions``).

The hybrid ranks; the rating stack over rating members is its own model, ``hybrid-rating``
(``stacking.py``), which a run with objective 'rating' trains in the hybrid's place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from app.recsys.data import InteractionData
from app.recsys.models.base import Batches, EpochCallback, FitReport, TrainConfig
from app.recsys.models.ensemble import Ensemble
from app.recsys.models.fusion import FusionNet, fuse, fused_ndcg, normalise_candidates

DEFAULT_MEMBERS = ("ease", "content", "mf", "neumf", "sasrec", "gru4rec", "popularity")


def registered(names: tuple[str, ...]) -> tuple[str, ...]:
    """The registered ones among ``names``, in that order."""
    from app.recsys.models import model_names

    known = set(model_names())
    return tuple(n for n in names if n in known)


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


class Hybrid(Ensemble):
    """Weighted fusion of its members' standardised scores.

    Cost: its members', trained first, plus O(U_fit W M) per epoch for the weights (U_fit = max_fit_users,
    W = I up to fit_all_items, else M x fit_depth candidates, M members); memory 4 U_fit W M bytes of
    cached member scores.
    """

    name = "hybrid"
    config_cls = HybridConfig
    default_members = DEFAULT_MEMBERS
    depends_on: ClassVar[tuple[str, ...]] = registered(DEFAULT_MEMBERS)  # pipelines train these first
    for_ratings = "hybrid-rating"  # what a run with objective 'rating' trains instead

    @classmethod
    def default_train_config(cls) -> TrainConfig:
        """For the weights (tuned on ML-100K validation); early stopping ends the fit long before 200."""
        return TrainConfig(epochs=200, batch_size=64, lr=0.05, patience=10)

    def build(self, *, n_users: int, n_items: int, n_members: int = 1, rating: int = 0) -> torch.nn.Module:
        if rating:
            raise ValueError(
                "a rating stack saved by an older DeepRec under the name 'hybrid': retrain it as 'hybrid-rating' "
                "(deeprec train --model hybrid-rating)"
            )
        return FusionNet(n_users, n_members, self.config.gated)

    def _fusion(self) -> FusionNet:
        assert isinstance(self.net, FusionNet)
        return self.net

    # -- training -------------------------------------------------------------------------------
    def before_fit(
        self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig, on_epoch: EpochCallback | None
    ) -> TrainConfig:
        """The members not handed in are trained first, each with its own tuned settings."""
        if cfg.objective == "rating":
            raise ValueError("hybrid ranks: for ratings train hybrid-rating, the stack of rating models")
        if cfg.objective != "implicit":
            raise ValueError(f"unknown objective {cfg.objective!r}: use implicit")
        names = self.member_names()
        if not names:
            raise ValueError("hybrid has no members: none of its member names is registered")
        self.extra = {"members": names, "member_reports": self.train_members(names, train, valid, cfg)}
        return cfg

    def start_fit(self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig) -> Batches:
        """The weights, learned with a listwise softmax over each validation user's unseen items (or its
        retrieval candidates on a large catalogue), from the members' scores computed once."""
        names = list(self.members)
        net = self.bind(train, n_members=len(names))
        assert isinstance(net, FusionNet)
        self.extra["objective"] = "implicit"
        if valid is None:  # nothing to learn from: equal weights
            net.fit_lengths(train.user_counts(), train.user_counts())
            return Batches.nothing()
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

        def loss(idx: torch.Tensor) -> torch.Tensor:
            logits = fuse(z[idx], net.user_weights(lengths[idx])).masked_fill(seen[idx], float("-inf"))  # [B, I]
            return F.cross_entropy(logits, targets[idx])

        def validate() -> float:
            return fused_ndcg(z, net.user_weights(lengths), seen, targets, cfg.eval_k)

        @torch.no_grad()
        def finish(report: FitReport) -> None:
            """Never worse on validation than the best single member or the plain sum."""
            learned = (net.weight.detach().clone(), net.gate.detach().clone())
            zero = torch.zeros_like(learned[1])
            starts = [learned, (torch.ones_like(zero), zero), *((e, zero) for e in torch.eye(len(names)))]
            scored = []
            for w, g in starts:
                net.weight.copy_(w), net.gate.copy_(g)
                scored.append(validate())
            best = int(np.argmax(scored))
            net.weight.copy_(starts[best][0]), net.gate.copy_(starts[best][1])
            report.best_metric = scored[best]
            self.extra["weights"] = self.weights
            self.extra["gates"] = dict(zip(names, net.gate.detach().cpu().tolist(), strict=True))

        return Batches(len(users), loss, validate=validate, finish=finish)

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
            ok = self.serves_users(member, users)
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

    def cells_per_user(self) -> int:
        return int(self.reference_items()[0].size)

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
            ok = self.serves_users(member, users)
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
        """(B,), (B, K) -> (B, K, M) each member's weighted share of the score; the scores are the sums over M.
        ``weights`` ([M]) replaces the learned ones (a request that re-blends the members)."""
        users = np.asarray(users, dtype=np.int64)
        items = torch.as_tensor(items, device=self.device)
        w = self.user_weights(batch, users) if weights is None else weights.to(self.device).expand(len(users), -1)
        return self.member_scores(batch, users, items) * w.unsqueeze(1)

    @torch.no_grad()
    def explain_candidates(
        self, batch: InteractionData, users: np.ndarray, items: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
        contrib = self.contributions(batch, users, items, weights)
        return contrib.sum(-1), np.asarray(list(self.members), dtype=object), contrib.argmax(-1)

    @property
    def weights(self) -> dict[str, float]:
        """Member weights for a user of typical history length (the gates shift them per user)."""
        return dict(zip(self.members, self._fusion().weight.detach().cpu().tolist(), strict=True))

"""Hybrid: a weighted sum of its members' per-user standardised scores, weights learned on validation.

Weights (and gates on the user's history length) are fitted by the shared train loop with a listwise
softmax loss over each validation user's unseen items, early-stopped on validation NDCG@K. Members
train themselves unless given pre-trained (``from_members``) and are saved in ``members/<name>/``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F

from app.recsys.data import InteractionData
from app.recsys.models.base import EpochCallback, FitReport, Recommender, TrainConfig
from app.recsys.models.fusion import FusionNet, fuse, fused_ndcg, normalise_scores
from app.recsys.training import train_loop

DEFAULT_MEMBERS = ("ease", "content", "mf", "neumf", "sasrec", "gru4rec", "popularity")


def _registered_defaults() -> tuple[str, ...]:
    from app.recsys.models import model_names

    registered = set(model_names())
    return tuple(n for n in DEFAULT_MEMBERS if n in registered)


@dataclass(frozen=True)
class HybridConfig:
    members: tuple[str, ...] = ()  # empty: every registered name of DEFAULT_MEMBERS
    normalise: str = "zscore"  # zscore | rank (reciprocal rank among the user's unseen items)
    rank_offset: float = 10.0  # k in 1 / (k + rank) for rank fusion
    gated: bool = True  # member weights also depend on the user's history length
    max_fit_users: int = 4096  # validation users whose member scores are cached for fitting the weights


def reads_history(model: Recommender) -> bool:
    """The model scores from the user's items at request time, so it serves users unseen in training."""
    return model.sequential or type(model).score_history is not Recommender.score_history


def member_train_config(cls: type[Recommender], cfg: TrainConfig) -> TrainConfig:
    """The member's tuned defaults with the hybrid run's seed, device and verbosity.

    ``cfg.epochs`` caps the member's epochs too, so a quick hybrid run (``--epochs 5``) is quick
    throughout; the hybrid's default (200) leaves every member's own default in force.
    """
    default = getattr(cls, "default_train_config", None)
    base = default() if callable(default) else TrainConfig()
    epochs = min(base.epochs, cfg.epochs)
    return replace(base, epochs=epochs, seed=cfg.seed, device=cfg.device, verbose=cfg.verbose, objective="implicit")


class Hybrid(Recommender):
    name = "hybrid"
    config_cls = HybridConfig
    uses_features = True  # the content member reads item features
    depends_on: ClassVar[tuple[str, ...]] = _registered_defaults()  # pipelines train these first

    def __init__(self, config: HybridConfig | None = None) -> None:
        super().__init__(config)
        self.members: dict[str, Recommender] = {}
        self._local = threading.local()  # .last: [I, M] contributions of this thread's last one-user request

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
        return model

    def use_dependencies(self, trained: dict[str, Recommender]) -> None:
        """Pipeline hook: members trained earlier in the same run; ``fit`` then only learns weights."""
        self.members = {n: trained[n] for n in self.member_names() if n in trained}

    def member_names(self) -> list[str]:
        if self.members:
            return list(self.members)
        from app.recsys.models import model_names

        registered = set(model_names())
        return [n for n in self.config.members or DEFAULT_MEMBERS if n in registered and n != self.name]

    def build(self, *, n_users: int, n_items: int, n_members: int = 1) -> torch.nn.Module:
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
        t0 = time.perf_counter()
        self.device = torch.device(cfg.device)
        names = self.member_names()
        if not names:
            raise ValueError("hybrid has no members: none of its member names is registered")
        member_reports = self._train_members(names, train, valid, cfg)
        net = self.bind(train, n_members=len(names))
        assert isinstance(net, FusionNet)
        self.extra = {"members": names, "member_reports": member_reports}
        metric = f"ndcg@{cfg.eval_k}"
        if valid is None or valid.n_interactions == 0:  # nothing to learn from: equal weights
            net.fit_lengths(train.user_counts(), train.user_counts())
            return FitReport(epochs_run=0, metric_name=metric)
        users = np.unique(valid.users)
        if len(users) > self.config.max_fit_users:
            users = np.sort(np.random.default_rng(cfg.seed).choice(users, self.config.max_fit_users, replace=False))
        net.fit_lengths(train.user_counts(), train.user_counts()[users])
        with torch.no_grad():
            z = self._member_scores(train, users)  # [U, I, M]
        seen = train.seen_mask(users, device=self.device)  # [U, I]
        targets = torch.as_tensor(valid.items[valid.indptr[users]], device=self.device)  # [U]
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

    def _train_members(
        self, names: list[str], train: InteractionData, valid: InteractionData | None, cfg: TrainConfig
    ) -> dict[str, dict]:
        """Fit the members not handed in pre-trained, each with its own tuned defaults."""
        from app.recsys.models import get_model_class

        reports: dict[str, dict] = {}
        for name in names:
            if name in self.members:
                continue
            cls = get_model_class(name)
            member = cls().to(self.device)
            rep = member.fit(train, valid, member_train_config(cls, cfg))
            reports[name] = {"best_metric": rep.best_metric, "seconds": rep.seconds, "epochs": rep.epochs_run}
            self.members[name] = member
        return reports

    # -- scoring --------------------------------------------------------------------------------
    def _member_scores(self, history: InteractionData | None, users: np.ndarray) -> torch.Tensor:
        """(B,) -> (B, I, M) normalised member scores (seen items of ``history`` set the statistics)."""
        users = np.asarray(users, dtype=np.int64)
        seen = None if history is None else history.seen_mask(users, device=self.device)
        cols = []
        for member in self.members.values():
            raw = torch.zeros((len(users), self.n_items), device=self.device)
            # Members without a history-based path only know their training users; others add nothing.
            if history is None:
                ok = (users < len(member.user_ids)) & (not member.sequential)
            else:
                ok = users < len(member.user_ids) if not reads_history(member) else users >= 0
            if ok.all():
                raw = self._raw(member, history, users)
            elif ok.any():
                raw[torch.as_tensor(ok, device=self.device)] = self._raw(member, history, users[ok])
            z = normalise_scores(raw.float(), seen, self.config.normalise, self.config.rank_offset)
            cols.append(z * torch.as_tensor(ok, device=self.device).unsqueeze(1))
        return torch.stack(cols, dim=-1)

    def _raw(self, member: Recommender, history: InteractionData | None, users: np.ndarray) -> torch.Tensor:
        if history is None:
            return member.score_users(torch.as_tensor(users, device=self.device)).float()
        return member.score_history(history, users).float()

    @torch.no_grad()
    def contributions(self, users: np.ndarray, history: InteractionData | None = None) -> torch.Tensor:
        """(B,) -> (B, I, M) each member's weighted share of the score; the scores are the sums over M."""
        net = self._fusion()
        users = np.asarray(users, dtype=np.int64)
        if history is not None:
            lengths = torch.as_tensor(history.user_counts()[users], device=self.device)
        else:
            n_train = len(net.train_lengths)
            u = torch.as_tensor(users, device=self.device)
            lengths = net.train_lengths[u.clamp(max=n_train - 1)] * (u < n_train)
        return self._member_scores(history, users) * net.user_weights(lengths).unsqueeze(1)

    @torch.no_grad()
    def reasons(
        self, users: np.ndarray, items: torch.Tensor, history: InteractionData | None = None
    ) -> list[list[str]]:
        """(B,) users, (B, K) recommended items (-1 = none) -> the member that added most to each item."""
        contrib = self.contributions(users, history)  # [B, I, M]
        picked = contrib.gather(1, items.clamp(min=0).unsqueeze(-1).expand(-1, -1, contrib.shape[2]))  # [B, K, M]
        best = picked.argmax(-1).cpu().numpy()
        names = np.asarray(list(self.members), dtype=object)
        return [[str(n) for n in row] for row in names[best]]

    @torch.no_grad()
    def score_history(self, history: InteractionData, users: np.ndarray) -> torch.Tensor:
        contrib = self.contributions(users, history)  # [B, I, M]
        if len(contrib) == 1:  # one request's user: kept so ``explain`` can name the members behind it
            self._local.last = contrib[0]
        return contrib.sum(-1)  # [B, I]

    def explain(self, items: torch.Tensor) -> list[str]:
        """(K,) items of the last single-user ``score_history`` call -> the member behind each one."""
        names = list(self.members)
        last = getattr(self._local, "last", None)
        if last is None:
            return [max(self.weights, key=self.weights.__getitem__)] * len(items)
        best = last[torch.as_tensor(items, device=self.device)].argmax(-1).tolist()  # [K]
        return [names[b] for b in best]

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.contributions(users.cpu().numpy()).sum(-1)  # [B, I]

    @property
    def weights(self) -> dict[str, float]:
        """Member weights for a user of typical history length (the gates shift them per user)."""
        return dict(zip(self.members, self._fusion().weight.detach().cpu().tolist(), strict=True))

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

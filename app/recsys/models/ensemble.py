"""Ensembles: a model over trained member models, saved with them in ``members/<name>/``.

Two ensembles share this base: the ranking hybrid (``hybrid.py``, a learned fusion of the members'
normalised scores) and the rating stack (``stacking.py``, a linear blend of their rating predictions).
The base owns what both do with members: which ones, training those not handed in, moving, saving
and loading them, which users each can score, and scoring a whole catalogue a block of users at a time.
An ensemble explains its scores one way, ``explain_candidates``: the scores and, per candidate, the
member that added most to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch

from app.recsys.data import InteractionData
from app.recsys.models.base import Recommender, TrainConfig, tuned_train_config

# Candidate cells (user x item) one block of member scoring holds: each member gathers a d-vector per
# cell, so 2^21 cells stay near 0.5 GiB at d = 64.
FIT_CELLS = 1 << 21


def member_train_config(cls: type[Recommender], cfg: TrainConfig, objective: str = "implicit") -> TrainConfig:
    """The member's tuned defaults (for ``objective``) with the ensemble run's seed, device and verbosity.

    ``cfg.epochs`` caps the member's epochs too, so a quick run (``--epochs 5``) is quick throughout;
    an ensemble's default (200) leaves every member's own default in force.
    """
    base = tuned_train_config(cls, objective)
    epochs = min(base.epochs, cfg.epochs)
    return replace(base, epochs=epochs, seed=cfg.seed, device=cfg.device, verbose=cfg.verbose, objective=objective)


class Ensemble(Recommender):
    """Members by name, trained first (or handed in), and the scoring every ensemble shares.

    Subclasses set ``default_members`` (used when the config's ``members`` is empty),
    ``member_objective`` (what the members are trained for), ``accepts`` (which offered models
    may be members) and implement ``before_fit`` (which calls ``train_members``), ``start_fit`` or ``solve``,
    ``explain_candidates`` and ``weights``.
    """

    uses_features = True  # the content member reads item features
    reads_history = True  # members that read history serve users they never saw
    default_members: ClassVar[tuple[str, ...]] = ()
    member_objective: ClassVar[str] = "implicit"

    def __init__(self, config: object = None) -> None:
        super().__init__(config)
        self.members: dict[str, Recommender] = {}
        self._offered: dict[str, Recommender] = {}  # models of the pipeline run, to pick members from
        self._given = False  # members handed in by ``from_members``: used as they are

    @classmethod
    def from_members(cls, members: Iterable[Recommender] | dict[str, Recommender], config: object = None) -> Self:
        """An ensemble over already trained members; ``fit`` then only learns how to combine them."""
        items = members.items() if isinstance(members, dict) else ((m.name, m) for m in members)
        model = cls(config)
        model.members = dict(items)
        model._given = True
        return model

    def accepts(self, member: Recommender) -> bool:
        """Whether a model trained earlier in the run can serve as a member (any, by default)."""
        return True

    def use_dependencies(self, trained: dict[str, Recommender]) -> None:
        """Pipeline hook: models trained earlier in the same run; the accepted ones become members."""
        self._offered = dict(trained)
        self.members = {n: trained[n] for n in self.configured_members() if n in trained and self.accepts(trained[n])}

    def configured_members(self) -> list[str]:
        """The config's ``members`` (empty: ``default_members``) that are registered, in that order."""
        from app.recsys.models import model_names

        registered = set(model_names())
        names = getattr(self.config, "members", ()) or self.default_members
        return [n for n in names if n in registered and n != self.name]

    def member_names(self) -> list[str]:
        """The members held (trained or handed in), else the configured ones."""
        return list(self.members) if self.members else self.configured_members()

    def to(self, device: torch.device | str) -> Self:
        super().to(device)
        for m in self.members.values():
            m.to(device)
        return self

    def train_members(
        self, names: list[str], train: InteractionData, valid: InteractionData | None, cfg: TrainConfig
    ) -> dict[str, dict]:
        """Fit the members not held yet, each with its own tuned defaults for ``member_objective``."""
        from app.recsys.models import get_model_class

        reports: dict[str, dict] = {}
        for name in names:
            if name in self.members:
                continue
            cls = get_model_class(name)
            member = cls().to(self.device)
            rep = member.fit(train, valid, member_train_config(cls, cfg, self.member_objective))
            reports[name] = {"best_metric": rep.best_metric, "seconds": rep.seconds, "epochs": rep.epochs_run}
            self.members[name] = member
        self.members = {n: self.members[n] for n in names}
        return reports

    # -- scoring --------------------------------------------------------------------------------
    @staticmethod
    def serves_users(member: Recommender, users: np.ndarray) -> np.ndarray:
        """(B,) -> (B,) bool: the member can score these users (its training users, or any from their items)."""
        if member.reads_history:
            return np.ones(len(users), dtype=bool)
        return (users >= 0) & (users < len(member.user_ids))

    def cells_per_user(self) -> int:
        """Member scores a user costs besides its candidates (the hybrid's normalisation items)."""
        return 0

    def user_blocks(self, n_users: int, n_candidates: int) -> list[slice]:
        """Slices of users small enough that a member scoring their [B, K + cells_per_user] candidates gathers
        at most FIT_CELLS vectors: how many users are scored at once when fitting and ranking."""
        rows = max(1, FIT_CELLS // (n_candidates + self.cells_per_user()))
        return [slice(s, s + rows) for s in range(0, n_users, rows)]

    def explain_candidates(
        self, batch: InteractionData, users: np.ndarray, items: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
        """(B,), (B, K) -> (B, K) scores, the member names and (B, K) the index of the member that added
        most to each score; ``weights`` ([M]) replace the learned ones where the ensemble allows it."""
        raise NotImplementedError

    @torch.no_grad()
    def score_candidates(self, batch: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        return self.explain_candidates(batch, users, items)[0]

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
        raise NotImplementedError(f"{self.name} scores from the users' items: call score_history(history, users)")

    @property
    def weights(self) -> dict[str, float]:
        """Each member's weight for a typical user (and, for ratings, item)."""
        raise NotImplementedError

    # -- persistence: members live in members/<name>/ of the ensemble's own folder ----------------
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

"""Evaluation protocols on a trained model: full-ranking leave-one-out, the sampled NCF protocol, ratings.

Primary (``loo``): each user's last event by time is the test item, the one before it validation.
Every catalogue item is a candidate except the user's training and validation items; the
test-time history (what sequential models read) is train + validation.
Secondary (``sampled``): the test item ranked among 99 negatives drawn once per user with a
fixed seed, never one of the user's positives, shared by every model (He et al., WWW 2017).
Sampled metrics can reverse the order of models (Krichene & Rendle, KDD 2020): always labelled.
Rating: RMSE/MAE on MovieLens' u1.base/u1.test, or on a global temporal split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from app.recsys.data import InteractionData
from app.recsys.metrics import coverage, hits_from_ranks, mean_over_users, novelty, target_ranks, user_metrics
from app.recsys.models.base import Recommender
from app.recsys.splits import Split, file_split, leave_one_out, temporal_split
from app.recsys.training import rating_errors

LABELS = {
    "loo": "leave-one-out by time, full ranking: every item except the user's train+valid items is a candidate",
    "sampled": "SAMPLED (NCF protocol): test item ranked among {n} sampled negatives; not comparable to full ranking",
    "rating-u1": "rating prediction on MovieLens u1.base/u1.test (validation carved from u1.base)",
    "rating-temporal": "rating prediction on a global temporal split (last 10% of events test, 10% before valid)",
}


@dataclass
class EvalData:
    """A data source as frames (InteractionData.from_frames columns), from a folder or the database."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    rating_train: pd.DataFrame | None = None  # an explicit rating split such as u1.base / u1.test
    rating_test: pd.DataFrame | None = None

    def snapshot(self) -> InteractionData:
        return InteractionData.from_frames(self.interactions, self.items)


def loo_split(data: EvalData) -> Split:
    return leave_one_out(data.snapshot())


def rating_split(data: EvalData, kind: str) -> Split:
    """'u1' (the explicit file split; needs rating_train/rating_test) or 'temporal'."""
    if kind == "u1":
        if data.rating_train is None or data.rating_test is None:
            raise ValueError(f"{data.name} has no explicit rating split (u1.base/u1.test)")
        return file_split(data.rating_train, data.rating_test, data.items, seed=0)
    if kind == "temporal":
        rated = data.interactions[pd.to_numeric(data.interactions["value"], errors="coerce").notna()]
        return temporal_split(InteractionData.from_frames(rated, data.items))
    raise ValueError(f"unknown rating split {kind!r}: use u1 or temporal")


def _targets(split: Split) -> tuple[InteractionData, np.ndarray, np.ndarray]:
    """Test-time history (train + valid), the users with a test item and each one's (first) test item."""
    history = split.train.union(split.valid)
    users = np.unique(split.test.users)
    return history, users, split.test.items[split.test.indptr[users]]


def _scores(model: Recommender, history: InteractionData, users: np.ndarray) -> torch.Tensor:
    scores = model.score_history(history, users).float()  # [B, I]
    return scores.masked_fill(torch.isnan(scores), float("-inf"))


@torch.no_grad()
def evaluate_full_ranking(
    model: Recommender, split: Split, ks: tuple[int, ...] = (5, 10, 20), batch_size: int = 1024
) -> dict[str, float]:
    """Ranking metrics, coverage@K and novelty@K for the test item among all unseen items."""
    history, users, items = _targets(split)
    k_max = max(ks)
    ranks, tops = [], []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        target = torch.as_tensor(items[start : start + batch_size], device=model.device)
        scores = _scores(model, history, batch)
        exclude = history.seen_mask(batch, device=scores.device)  # [B, I] train + valid
        exclude[torch.arange(len(batch), device=scores.device), target] = False  # a target is always a candidate
        scores = scores.masked_fill(exclude, float("-inf"))
        ranks.append(target_ranks(scores, target).cpu())
        values, idx = torch.topk(scores, min(k_max, scores.shape[1]), dim=1)
        tops.append(idx.masked_fill(torch.isneginf(values), -1).cpu())
    rank = torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.long)
    top = torch.cat(tops) if tops else torch.empty(0, k_max, dtype=torch.long)
    out = _from_ranks(rank, ks)
    counts = torch.as_tensor(split.train.item_counts())
    for k in ks:
        out[f"coverage@{k}"] = coverage(top[:, :k], split.train.n_items)
        out[f"novelty@{k}"] = novelty(top[:, :k], counts, split.train.n_users)
    out["n_users"] = float(len(users))
    return out


def _from_ranks(ranks: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    hits = hits_from_ranks(ranks, max(ks))  # [U, K]
    n_rel = torch.ones(len(ranks), dtype=torch.long)
    out: dict[str, float] = {}
    for k in ks:
        out.update(mean_over_users(user_metrics(hits[:, :k], n_rel), n_rel, k))
    return out


@dataclass(frozen=True)
class SampledCandidates:
    """users [U]; items [U, 1 + n]: column 0 is the test item, then n negatives (-1 where too few exist)."""

    users: np.ndarray
    items: np.ndarray
    seed: int

    @property
    def n_negatives(self) -> int:
        return self.items.shape[1] - 1


def sample_candidates(split: Split, n_negatives: int = 99, seed: int = 0, chunk: int = 0) -> SampledCandidates:
    """Draws each test user's negatives once, uniformly without replacement from items the user
    never interacted with in train, valid or test. Vectorised: random keys, positives pushed last."""
    everything = split.train.union(split.valid).union(split.test)
    _, users, targets = _targets(split)
    n_items = everything.n_items
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, (1 << 22) // max(n_items, 1))
    n = min(n_negatives, n_items)
    negs = []
    for start in range(0, len(users), chunk):
        batch = users[start : start + chunk]
        keys = rng.random((len(batch), n_items))  # [B, I]
        keys[everything.seen_mask(batch).numpy()] = 2.0  # positives sort after every unseen item
        pick = np.argpartition(keys, n - 1, axis=1)[:, :n] if n < n_items else np.argsort(keys, axis=1)
        picked = np.take_along_axis(keys, pick, axis=1)
        order = np.argsort(picked, axis=1)  # a canonical order, so results do not depend on argpartition
        pick, picked = np.take_along_axis(pick, order, axis=1), np.take_along_axis(picked, order, axis=1)
        negs.append(np.where(picked < 2.0, pick, -1))
    neg = np.concatenate(negs) if negs else np.empty((0, n), dtype=np.int64)
    if n < n_negatives:
        neg = np.concatenate([neg, np.full((len(users), n_negatives - n), -1)], axis=1)
    return SampledCandidates(users, np.concatenate([targets[:, None], neg], axis=1).astype(np.int64), seed)


@torch.no_grad()
def evaluate_sampled(
    model: Recommender,
    split: Split,
    cands: SampledCandidates,
    ks: tuple[int, ...] = (5, 10, 20),
    batch_size: int = 1024,
) -> dict[str, float]:
    """Ranking metrics of the test item (column 0) among its sampled candidates; ties count against it."""
    history = split.train.union(split.valid)
    ranks = []
    for start in range(0, len(cands.users), batch_size):
        batch = cands.users[start : start + batch_size]
        cand = torch.as_tensor(cands.items[start : start + batch_size], device=model.device)  # [B, C]
        scores = _scores(model, history, batch).gather(1, cand.clamp(min=0))
        scores = scores.masked_fill(cand < 0, float("-inf"))
        ranks.append(target_ranks(scores, torch.zeros(len(batch), dtype=torch.long, device=scores.device)).cpu())
    out = _from_ranks(torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.long), ks)
    out["n_users"] = float(len(cands.users))
    return out


@torch.no_grad()
def evaluate_rating(model: Recommender, split: Split) -> dict[str, float]:
    """RMSE and MAE on the test rows that carry a rating."""
    out = rating_errors(model, split.test)
    out["n_ratings"] = float(split.test.has_ratings().sum())
    return out

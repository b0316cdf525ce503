"""Model-generic scoring: every call is one vectorised forward pass over the catalogue, for the users (or
sequences) of one request or of many requests at once (``score_users``, ``score_sequences``).

Works for any registered model through the shared interface (``score_history``, ``score_sequences``,
``predict_ratings``) and its class attributes, so new models need no serving code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from app.recsys.data import InteractionData
from app.recsys.models.base import Recommender
from app.serving.registry import LoadedModel


def dedupe_latest(items: np.ndarray) -> np.ndarray:
    """Keep each item's latest event, in time order, as the training snapshot does. [N] -> [M]."""
    if items.size == 0:
        return items
    _, first_from_end = np.unique(items[::-1], return_index=True)
    return items[np.sort(items.size - 1 - first_from_end)]


def _user_ids_plus_one(lm: LoadedModel) -> np.ndarray:
    """The model's user ids and one more row, "<request user>", for a user the model never saw."""
    user_ids = lm.cache.get("user_ids+1")
    if user_ids is None:
        user_ids = lm.cache["user_ids+1"] = np.append(lm.model.user_ids, "<request user>").astype(object)
    return user_ids


def history_data(lm: LoadedModel, user: int, cols: np.ndarray) -> tuple[InteractionData, int]:
    """A one-user InteractionData from time-ordered model columns (-1: unknown), and the row to score.

    ``user`` is the training index, or -1 for a user the model never saw: they get an extra row
    past the last training user, which history-based models read as "profile only".
    """
    data, rows = batch_history(lm, [user_request(lm, user, cols)])
    return data, int(rows[0])


# A user's scoring request: (row in the model's user space, their distinct items in time order).
UserRequest = tuple[int, np.ndarray]
# An ensemble's reason for each of a user's scores: (member names, [I] index into them).
Explained = tuple[np.ndarray, np.ndarray]


def user_request(lm: LoadedModel, user: int, cols: np.ndarray) -> UserRequest:
    """What ``score_users`` needs of one user: their row (-1: the extra "<request user>" row) and items."""
    row = user if user >= 0 else len(_user_ids_plus_one(lm)) - 1
    return row, dedupe_latest(cols[cols >= 0].astype(np.int64))


def batch_history(lm: LoadedModel, requests: Sequence[UserRequest]) -> tuple[InteractionData, np.ndarray]:
    """One InteractionData holding every request's items under its row (rows must differ), and the rows."""
    rows = np.fromiter((r for r, _ in requests), dtype=np.int64, count=len(requests))
    lengths = np.fromiter((i.size for _, i in requests), dtype=np.int64, count=len(requests))
    items = np.concatenate([i for _, i in requests]) if requests else np.empty(0, np.int64)
    data = InteractionData(
        user_ids=_user_ids_plus_one(lm),
        item_ids=lm.item_ids,
        users=np.repeat(rows, lengths),
        items=items,
        ratings=np.full(items.size, np.nan, dtype=np.float32),
        ts=np.arange(items.size, dtype=np.int64),  # each request's items are already in time order
        item_features=np.zeros((lm.n_items, 0), dtype=np.float32),
        feature_schema=lm.model.feature_schema,
    )
    return data, rows


def distinct_rows(rows: np.ndarray) -> list[np.ndarray]:
    """Positions of ``rows`` split into passes in which no row repeats (two requests for one user, or two
    users unknown to the model, cannot share an InteractionData row); one pass when all differ."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_rows)) + 1]
    rank = np.arange(rows.size) - np.repeat(starts, np.diff(np.r_[starts, rows.size]))  # nth of its row
    occurrence = np.empty_like(rank)
    occurrence[order] = rank
    return [np.flatnonzero(occurrence == k) for k in range(int(occurrence.max()) + 1)] if rows.size else []


@torch.inference_mode()
def score_users(lm: LoadedModel, requests: Sequence[UserRequest]) -> list[tuple[torch.Tensor, Explained | None]]:
    """[I] scores per request, from one forward pass over all of them (more only when a row repeats), with
    an ensemble's member behind each score (None for other models)."""
    rows = np.fromiter((r for r, _ in requests), dtype=np.int64, count=len(requests))
    out: list[tuple[torch.Tensor, Explained | None]] = [None] * len(requests)  # type: ignore[list-item]
    explained_by = getattr(lm.model, "score_history_explained", None)
    for part in distinct_rows(rows):
        data, users = batch_history(lm, [requests[i] for i in part])
        if callable(explained_by):
            scores, names, codes = explained_by(data, users)
            per_row = codes.to(torch.int16).cpu().numpy()  # a few members: small codes
            for b, i in enumerate(part):
                out[i] = scores[b].float(), (names, per_row[b])
        else:
            scores = lm.model.score_history(data, users)
            for b, i in enumerate(part):
                out[i] = scores[b].float(), None
    return out


def score_user(lm: LoadedModel, user: int, cols: np.ndarray) -> torch.Tensor:
    """[I] scores for one user from their items now (model columns, oldest first) and, when the
    model knows the user, their learned state."""
    return score_users(lm, [user_request(lm, user, cols)])[0][0]


def history_aware(model: Recommender) -> bool:
    """The model reads each user's items at scoring time (sequence, profile or item-item models)."""
    return model.sequential or type(model).score_history is not Recommender.score_history


def sequence_request(lm: LoadedModel, cols: np.ndarray) -> np.ndarray:
    """A sequence's known model columns + 1, the latest ``max_len`` of them (what ``score_sequences`` reads)."""
    cols = cols[cols >= 0]
    max_len = int(getattr(lm.model.config, "max_len", 50))
    return cols[-max_len:].astype(np.int64) + 1


@torch.inference_mode()
def score_sequences(lm: LoadedModel, seqs: Sequence[np.ndarray]) -> list[tuple[torch.Tensor, int]]:
    """[I] next-item scores after each sequence (from ``sequence_request``), all in one forward pass over
    a left-padded [B, L] batch, and how many items it read (0: the model knew none of them, and the
    scores are not to be used)."""
    lengths = np.fromiter((s.size for s in seqs), dtype=np.int64, count=len(seqs))
    width = max(int(lengths.max()) if lengths.size else 0, 1)
    padded = np.zeros((len(seqs), width), dtype=np.int64)
    padded[np.arange(width) >= width - lengths[:, None]] = np.concatenate(seqs) if seqs else []  # row-major
    scores = lm.model.score_sequences(torch.as_tensor(padded, device=lm.device))
    return [(scores[b].float(), int(n)) for b, n in enumerate(lengths)]


def can_rate(lm: LoadedModel) -> bool:
    """Trained on ratings: predictions are on the data set's scale."""
    model = lm.model
    return model.supports_rating and (
        model.extra.get("objective") == "rating" or bool(model.dims.get("rating", 0)) or "valid_rmse" in model.metrics
    )


@torch.inference_mode()
def predict_ratings(lm: LoadedModel, user: int, cols: np.ndarray) -> torch.Tensor:
    """(K,) model columns for one known user -> (K,) ratings."""
    items = torch.as_tensor(cols, dtype=torch.int64, device=lm.device)
    users = torch.full_like(items, user)
    return lm.model.predict_ratings(users, items).float()


def _raw_item_embeddings(model: Recommender) -> torch.Tensor | None:
    own = getattr(model, "item_embeddings", None)  # a model may say what its item embeddings are
    if callable(own):
        return own()
    net = model.net
    if net is None:
        return None
    weights = getattr(net, "item_weights", None)
    if callable(weights):
        return weights()
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Embedding) and name.split(".")[-1] == "item":
            w = module.weight
            if w.shape[0] == model.n_items:
                return w
            if w.shape[0] == model.n_items + 1 and module.padding_idx == 0:
                return w[1:]
    return None


@torch.inference_mode()
def item_embeddings(lm: LoadedModel) -> torch.Tensor | None:
    """[I, D] L2-normalised learned item embeddings (cached per loaded version), None if the model has none."""
    if "emb" not in lm.cache:
        raw = _raw_item_embeddings(lm.model)
        lm.cache["emb"] = None if raw is None else torch.nn.functional.normalize(raw.detach().float(), dim=1)
    return lm.cache["emb"]


@torch.inference_mode()
def seed_items(lm: LoadedModel, picked: torch.Tensor, hist_cols: np.ndarray) -> list[int] | None:
    """(k,) picked columns -> the history column each one is most similar to, or None without embeddings."""
    emb = item_embeddings(lm)
    if emb is None or hist_cols.size == 0 or picked.numel() == 0:
        return None
    hist = torch.as_tensor(hist_cols[-50:], dtype=torch.int64, device=emb.device)
    sims = emb[picked] @ emb[hist].T  # [k, H]
    return hist[sims.argmax(dim=1)].tolist()

"""Model-generic scoring for one request: every call is one vectorised forward pass over the catalogue.

Works for any registered model through the shared interface (``score_history``, ``score_sequences``,
``predict_ratings``) and its class attributes, so new models need no serving code.
"""

from __future__ import annotations

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


def history_data(lm: LoadedModel, user: int, cols: np.ndarray) -> tuple[InteractionData, int]:
    """A one-user InteractionData from time-ordered model columns (-1: unknown), and the row to score.

    ``user`` is the training index, or -1 for a user the model never saw: they get an extra row
    past the last training user, which history-based models read as "profile only".
    """
    items = dedupe_latest(cols[cols >= 0].astype(np.int64))
    user_ids = lm.cache.get("user_ids+1")
    if user_ids is None:
        user_ids = lm.cache["user_ids+1"] = np.append(lm.model.user_ids, "<request user>").astype(object)
    row = user if user >= 0 else len(user_ids) - 1
    data = InteractionData(
        user_ids=user_ids,
        item_ids=lm.item_ids,
        users=np.full(items.size, row, dtype=np.int64),
        items=items,
        ratings=np.full(items.size, np.nan, dtype=np.float32),
        ts=np.arange(items.size, dtype=np.int64),  # already in time order
        item_features=np.zeros((lm.n_items, 0), dtype=np.float32),
        feature_schema=lm.model.feature_schema,
    )
    return data, row


def history_aware(model: Recommender) -> bool:
    """The model reads each user's items at scoring time (sequence, profile or item-item models)."""
    return model.sequential or type(model).score_history is not Recommender.score_history


@torch.inference_mode()
def score_user(lm: LoadedModel, user: int, cols: np.ndarray) -> torch.Tensor:
    """[I] scores for one user from their items now (model columns, oldest first) and, when the
    model knows the user, their learned state."""
    data, row = history_data(lm, user, cols)
    return lm.model.score_history(data, np.array([row]))[0].float()


@torch.inference_mode()
def score_sequence(lm: LoadedModel, cols: np.ndarray) -> tuple[torch.Tensor, int]:
    """[I] next-item scores after time-ordered model columns (-1: unknown), and how many were known."""
    cols = cols[cols >= 0]
    max_len = int(getattr(lm.model.config, "max_len", 50))
    seq = torch.as_tensor(cols[-max_len:] + 1, dtype=torch.int64, device=lm.device).unsqueeze(0)  # [1, L]
    if seq.shape[1] == 0:
        seq = torch.zeros((1, 1), dtype=torch.int64, device=lm.device)
    return lm.model.score_sequences(seq)[0].float(), int(cols.size)


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

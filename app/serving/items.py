"""Rating/score predictions for given items, and similar items by learned embeddings.

Documented fallbacks: items newer than the model (in the catalogue with features only) are scored
and matched through the content model; a user the model never saw goes through the same chain as
recommendations (sequence model, content model, popularity).
"""

from __future__ import annotations

import numpy as np
import torch

from app.recsys.metrics import validation_rmse
from app.serving import scoring
from app.serving.batching import Steps
from app.serving.metrics import STRATEGY, inference_timer
from app.serving.registry import LoadedModel, ModelSet
from app.serving.results import NotFound, Prediction, RecList, ScoredItem, UnknownModel
from app.serving.service import Filters, RecommendationService, _best

# Models whose learned item embeddings answer "similar items", best first when no model is named.
SIMILAR_PREFERENCE = ("sasrec", "mf", "gru4rec", "neumf", "gmf", "mlp", "content")


def _raters(models: ModelSet, user_id: str) -> list[LoadedModel]:
    """Loaded rating models that know the user, lowest comparable validation RMSE first."""
    out = [m for m in models.values() if scoring.can_rate(m) and m.user_of(user_id) >= 0]
    return sorted(out, key=lambda m: (validation_rmse(m.metrics) or ("", np.inf))[1])


def predict(svc: RecommendationService, user_id: str, item_ids: list[str], model: str | None = None) -> dict:
    return svc.run(predict_steps(svc, user_id, item_ids, model))


def predict_steps(
    svc: RecommendationService, user_id: str, item_ids: list[str], model: str | None = None
) -> Steps[dict]:
    """``predict`` as steps (``batching``): its forward pass is shared with the requests handed over with it."""
    svc.check_model(model)
    models = svc.snapshot()
    cat = svc.catalogue.get()
    rows = cat.rows_of(item_ids)
    if (rows < 0).any():
        cat = svc.catalogue.get(max_age_s=1.0)  # the item may be seconds old
        rows = cat.rows_of(item_ids)
    unknown = sorted({i for i, r in zip(item_ids, rows, strict=True) if r < 0})
    if unknown:
        raise NotFound({"message": "unknown item ids", "unknown_item_ids": unknown})
    hist = svc.history(user_id, cat)
    if not hist.exists and not any(m.user_of(user_id) >= 0 for m in models.values()):
        raise NotFound({"message": f"unknown user {user_id!r}", "unknown_user_ids": [user_id]})
    name = model or svc.default_model(models)
    sc = yield from svc.user_scores(models, name, user_id, hist)
    if sc is None:
        STRATEGY.labels("popular").inc()
        scores = cat.popularity[rows]
        preds = [Prediction(i, float(s), None, "popularity") for i, s in zip(item_ids, scores, strict=True)]
        if name == "popularity":
            detail = "scores are event counts in the database"
        else:
            why = "no trained model yet" if not models else f"user unknown to {name} and no fallback model knows them"
            detail = f"{why}: scores are event counts in the database"
        version = models["popularity"].version if "popularity" in models else None  # as recommendations say
        out = {"model": "popularity", "version": version, "strategy": "popular", "predictions": preds}
        return {**out, "detail": detail}
    lm = sc.lm
    cols = lm.items_of(item_ids)
    score = np.full(len(item_ids), np.nan)
    score[cols >= 0] = sc.scores[torch.as_tensor(cols[cols >= 0], device=lm.device)].cpu().numpy()
    scored_by = np.where(cols >= 0, lm.name, "").astype(object)
    new = np.flatnonzero(cols < 0)
    if new.size:
        content = _best(models, [n for n in svc.content_models(models) if hasattr(models[n].model, "score_new_items")])
        if content is None:
            missing = sorted({item_ids[i] for i in new})
            raise NotFound({"message": f"items unknown to {lm.name} and no content model", "unknown_item_ids": missing})
        feats = content.model.feature_schema.encode(cat.features_frame(rows[new]))
        data, row = scoring.history_data(content, content.user_of(user_id), hist.cols(content))
        with inference_timer(content.name), torch.inference_mode():
            s = content.model.score_new_items(np.array([row]), feats, history=data)[0]  # type: ignore[attr-defined]
        score[new] = s.float().cpu().numpy()
        scored_by[new] = content.name
    ratings = np.full(len(item_ids), np.nan)
    raters = _raters(models, user_id)
    rater = lm if lm in raters else (raters[0] if raters else None)
    if rater is not None:
        rcols = rater.items_of(item_ids)
        ok = rcols >= 0
        if ok.any():
            with inference_timer(rater.name):
                ratings[ok] = scoring.predict_ratings(rater, rater.user_of(user_id), rcols[ok]).cpu().numpy()
    preds = [
        Prediction(i, float(s), None if np.isnan(r) else float(r), str(b))
        for i, s, r, b in zip(item_ids, score, ratings, scored_by, strict=True)
    ]
    STRATEGY.labels(sc.strategy).inc()
    out = {"model": lm.name, "version": lm.version, "strategy": sc.strategy, "predictions": preds}
    return {**out, "detail": sc.detail}


def _top(lm: LoadedModel, sims: torch.Tensor, allowed: torch.Tensor, n: int, reason: str) -> list[ScoredItem]:
    values, idx = torch.topk(sims.masked_fill(~allowed, float("-inf")), min(n, lm.n_items))
    keep = torch.isfinite(values)
    cols = idx[keep].cpu().numpy()
    return [ScoredItem(str(lm.item_ids[c]), float(v), reason) for c, v in zip(cols, values[keep].tolist(), strict=True)]


def similar(svc: RecommendationService, item_id: str, n: int = 10, model: str | None = None) -> RecList:
    svc.check_model(model)
    models = svc.snapshot()
    with_emb = [m for m in models if scoring.item_embeddings(models[m]) is not None]
    if model is not None and model in models and model not in with_emb:
        raise UnknownModel(model, with_emb, "model has no item embeddings")
    cat = svc.catalogue.get()
    row = int(cat.rows_of([item_id])[0])
    if row < 0:
        cat = svc.catalogue.get(max_age_s=1.0)
        row = int(cat.rows_of([item_id])[0])
    order = [model] if model else [m for m in SIMILAR_PREFERENCE if m in with_emb] + with_emb
    for name in order:
        lm = models.get(name)
        if lm is None or name not in with_emb or lm.items_of([item_id])[0] < 0:
            continue
        col = int(lm.items_of([item_id])[0])
        emb = scoring.item_embeddings(lm)
        assert emb is not None
        _, active = cat.aligned(lm)
        allowed = active.clone()
        allowed[col] = False
        with inference_timer(lm.name), torch.inference_mode():
            items = _top(lm, emb @ emb[col], allowed, n, f"similar to {item_id}")
        STRATEGY.labels("similar").inc()
        return RecList(lm.name, lm.version, "similar", items)
    if row < 0:
        raise NotFound({"message": f"unknown item {item_id!r}", "unknown_item_ids": [item_id]})
    content = _best(models, [m for m in with_emb if hasattr(models[m].model, "encode_items")])
    if content is not None:  # an item with features only: embed them with the content encoder
        feats = content.model.feature_schema.encode(cat.features_frame(np.array([row])))
        emb = scoring.item_embeddings(content)
        assert emb is not None
        with inference_timer(content.name), torch.inference_mode():
            enc = content.model.encode_items(feats)  # type: ignore[attr-defined]  # [1, D]
            q = torch.nn.functional.normalize(enc.float(), dim=1)[0]  # [D]
            _, active = cat.aligned(content)
            items = _top(content, emb @ q, active, n, f"features like {item_id}")
        STRATEGY.labels("content").inc()
        return RecList(content.name, content.version, "content", items, f"{item_id} is newer than the models")
    cats = list(cat.items["categories"].iloc[row] or [])
    out = svc.popular(cat, models, Filters(n=n, categories=tuple(cats)), np.array([item_id], dtype=object))
    out.detail = "no model knows this item: popular items in its categories"
    return out

"""Recommendations, next items and session next items: model choice, fallback chain, filters, top-N.

Fallback for a user the requested model never saw: a sequence model over their recent events,
else the content model over them, else popular items within the filters; ``strategy`` says which.
Each list is one forward pass over the catalogue, then one masked top-N.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.recsys.models import get_model_class, model_names
from app.recsys.store import served_name, served_names, trained_objective
from app.serving import scoring
from app.serving.batching import Scorers, Steps, drive, run_alone
from app.serving.cache import ScoreCache
from app.serving.history import Catalogue, CatalogueCache, HistoryReader, UserHistory
from app.serving.metrics import SCORE_BATCH, STRATEGY, inference_timer
from app.serving.registry import LoadedModel, ModelRegistry, ModelSet
from app.serving.results import NotFound, NotReady, RecList, ScoredItem, UnknownModel

T = TypeVar("T")

DEFAULT_MODEL = "hybrid"
RERANK_ABOVE_N = 100  # longer lists ranked from reused scores are not kept
NEXT_ITEMS = "next-items:"  # cache keys (NEXT_ITEMS + sequence model, user) hold a user's next-item scores
# When the default is not trained yet, the first of these that is loaded serves instead.
PREFERENCE = ("hybrid", "sasrec", "neumf", "mf", "gru4rec", "ease", "content", "gmf", "mlp")


def _timed(fn: Callable[[LoadedModel, Sequence[Any]], list[Any]]) -> Callable[[LoadedModel, Sequence[Any]], list[Any]]:
    def run(lm: LoadedModel, requests: Sequence[Any]) -> list[Any]:
        with inference_timer(lm.name):
            return fn(lm, requests)

    return run


# What the steps of a request may ask to have scored (``batching.drive``), each timed per pass.
SCORERS: Scorers = {"user": _timed(scoring.score_users), "sequence": _timed(scoring.score_sequences)}


def _observe_batch(lm: LoadedModel, n: int) -> None:
    SCORE_BATCH.labels(lm.name).observe(n)


@dataclass(frozen=True)
class Filters:
    n: int = 10
    categories: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    exclude_seen: bool = True


@dataclass
class Scores:
    """One forward pass: the model that made it, [I] scores in its item space, and how."""

    lm: LoadedModel
    scores: torch.Tensor
    strategy: str
    hist_cols: np.ndarray  # the user's known items, model columns, oldest first
    detail: str | None = None
    # an ensemble's reason for each item, from its forward pass: (distinct reasons, [I] index into them)
    explained: tuple[np.ndarray, np.ndarray] | None = None
    # reused scores: the last list ranked from them, with what it depends on besides them (catalogue layout,
    # filters)
    last_ranked: tuple[tuple[bytes, Filters], list[ScoredItem]] | None = None


def _weigh(sc: Scores | None) -> int:
    """Bytes an entry holds: the score vector, the history columns and the per-item reason codes."""
    if sc is None:
        return 64
    size = sc.scores.element_size() * sc.scores.numel() + sc.hist_cols.nbytes
    return size + (int(sc.explained[1].nbytes) if sc.explained is not None else 0)


def _best(models: ModelSet, names: Sequence[str]) -> LoadedModel | None:
    """The loaded model among ``names`` with the best validation NDCG (ties: order of ``names``); a model
    trained for ranking before one trained on ratings (``content`` before ``content-rating``)."""
    loaded = [models[n] for n in names if n in models]
    if not loaded:
        return None

    def rank(m: LoadedModel) -> tuple[bool, float]:
        return trained_objective(m.model) != "rating", float(m.metrics.get("valid_ndcg@10") or 0.0)

    return max(loaded, key=rank)


class RecommendationService:
    """``cache_size`` > 0 keeps that many users' score vectors for reuse (see :mod:`app.serving.cache`),
    within ``cache_bytes`` when given."""

    def __init__(
        self,
        registry: ModelRegistry,
        sessions: sessionmaker[Session],
        catalogue: CatalogueCache,
        cache_size: int = 0,
        cache_bytes: int | None = None,
        batch_size: int = 1,
    ) -> None:
        self.registry = registry
        self.sessions = sessions
        self.engine: Engine = sessions.kw["bind"]
        self.catalogue = catalogue
        # one commit signal (SQLite's data_version) for the histories and the catalogue, when it has one
        self._read_history = HistoryReader(self.engine, cache_size, cache_bytes, version=catalogue.watch)
        # keys: (requested model, user) or (NEXT_ITEMS + sequence model, user); grouped by user for refreshes
        self.cache: ScoreCache[Scores | None] = ScoreCache(
            cache_size, max_bytes=cache_bytes, weigh=_weigh, group=lambda key: key[1]
        )
        self.batch_size = max(1, int(batch_size))  # most requests in one shared forward pass (``run_many``)

    def on_history_change(self, listener: Callable[[frozenset[str] | None], None]) -> None:
        """Call ``listener`` after each sync of the kept histories with the users who have new events (None:
        any may have), from the serving thread that synced: it must return at once."""
        self._read_history.listeners.append(listener)

    def close(self) -> None:
        self._read_history.close()
        self.catalogue.close()

    # -- shared ---------------------------------------------------------------------------------
    def snapshot(self) -> ModelSet:
        if not self.registry.ready:
            raise NotReady()
        return self.registry.models

    @staticmethod
    def check_model(name: str | None, *, sequential: bool = False) -> None:
        """Registered names and the served ``-rating`` names of rating-capable ones (``hybrid-rating``)."""
        if name is None:
            return
        served = served_names()
        valid = [m for m in model_names() if get_model_class(m).sequential] if sequential else served
        if name not in valid:  # no sequence model has a rating version
            raise UnknownModel(name, valid, "not a sequence model" if name in served else "unknown model")

    def history(self, user_id: str, cat: Catalogue | None = None) -> UserHistory:
        """The user's items now, oldest first (one indexed query), as external ids of ``cat``."""
        exists, db_ids = self._read_history(user_id)
        return (cat or self.catalogue.get()).history(exists, db_ids)

    def default_model(self, models: ModelSet) -> str:
        """The implicit hybrid, else the first loaded of PREFERENCE, else of their rating versions."""
        if DEFAULT_MODEL in models:
            return DEFAULT_MODEL
        order = (*PREFERENCE, *(served_name(m, "rating") for m in PREFERENCE))  # ~5 us a name: not on every request
        return next((m for m in order if m in models), DEFAULT_MODEL)

    def sequential_models(self, models: ModelSet) -> list[str]:
        return [n for n in models if models[n].model.sequential]

    def content_models(self, models: ModelSet) -> list[str]:
        return [n for n in models if models[n].model.uses_features and scoring.history_aware(models[n].model)]

    # -- scoring with fallbacks -----------------------------------------------------------------
    def score_user(self, models: ModelSet, name: str, user_id: str, hist: UserHistory) -> Steps[Scores | None]:
        """The requested model if it can serve this user, else the fallback chain; None means popular.

        Steps (``batching``): each forward pass is yielded, so requests handed over together share it."""
        if name == "popularity":  # asked for by name: the popular list, never a fallback model's
            return None
        lm = models.get(name)
        detail = None if lm is not None else f"model {name!r} has no trained version yet"
        if lm is not None:
            if lm.model.sequential:
                if not hist.empty:
                    cols = hist.cols(lm)
                    s, known = yield "sequence", lm, scoring.sequence_request(lm, cols)
                    if known:
                        return Scores(lm, s, "sequential", cols)
                detail = f"{name} knows none of the user's items"
            else:
                user = lm.user_of(user_id)
                if user >= 0 and name != "popularity":
                    cols = hist.cols(lm)
                    s, explained = yield "user", lm, scoring.user_request(lm, user, cols)
                    return Scores(lm, s, "personalized", cols, explained=explained)
                if name != "popularity":
                    detail = f"user unknown to {name}"
        if not hist.empty:
            seq = lm if lm is not None and lm.model.sequential else _best(models, self.sequential_models(models))
            if seq is not None:
                cols = hist.cols(seq)
                s, known = yield "sequence", seq, scoring.sequence_request(seq, cols)
                if known:
                    return Scores(seq, s, "sequential", cols, detail)
            content = _best(models, self.content_models(models))
            if content is not None:
                cols = hist.cols(content)
                if (cols >= 0).any():
                    s, explained = yield "user", content, scoring.user_request(content, content.user_of(user_id), cols)
                    return Scores(content, s, "content", cols, detail, explained)
        return None

    # -- running steps: alone, or many requests together ---------------------------------------
    def run(self, steps: Steps[T]) -> T:
        """One request's steps on their own: its result, or its error raised."""
        return run_alone(steps, SCORERS, _observe_batch)

    def run_many(self, steps: Sequence[Steps[Any]]) -> list[Any]:
        """Requests handed over together: each one's result or error, in order. Their forward passes are
        shared, at most ``batch_size`` requests per pass (see ``batching.drive``)."""
        return drive(steps, SCORERS, self.batch_size, _observe_batch)

    def user_scores(self, models: ModelSet, name: str, user_id: str, hist: UserHistory) -> Steps[Scores | None]:
        """``score_user`` through the cache: reused only for the same loaded versions and the same history."""
        if not self.cache.enabled:
            return (yield from self.score_user(models, name, user_id, hist))
        kept = lambda: self._kept_scores(models, name, user_id, hist)  # noqa: E731
        return (yield from self._through((name, user_id), (models.token, hist.fingerprint()), kept))

    def _kept_scores(self, models: ModelSet, name: str, user_id: str, hist: UserHistory) -> Steps[Scores | None]:
        """``score_user`` for the cache: the scores in their own storage, not a view of a larger batch tensor."""
        sc = yield from self.score_user(models, name, user_id, hist)
        if sc is not None:
            sc.scores = sc.scores.clone()
        return sc

    def refresh_steps(self, key: tuple[str, str]) -> Steps[bool]:
        """Recompute the cache entry ``key`` for its user's history now, as their next request would
        (``ScoreRefresher``, in the serving lane); False when the entry already matches that history (a
        request got there first) or there is nothing to compute (popular lists are not cached)."""
        models = self.snapshot()
        name, user_id = key
        cat = self.catalogue.get()
        hist = self.history(user_id, cat)
        fingerprint = (models.token, hist.fingerprint())
        if self.cache.fresh(key, fingerprint):
            return False
        old = self.cache.stored(key)
        if name.startswith(NEXT_ITEMS):
            lm = models.get(name.removeprefix(NEXT_ITEMS))
            if lm is None or hist.empty:
                return False
            sc = yield from self._sequence_scores(lm, hist.item_ids)
        else:
            sc = yield from self._kept_scores(models, name, user_id, hist)
        if sc is not None and old is not None and old.last_ranked is not None:
            self.ranked(sc, cat, old.last_ranked[0][1])  # the list the user asked for last, ready for them
        self.cache.put(key, fingerprint, sc)
        return True

    def _through(self, key: Any, fingerprint: Any, make: Callable[[], Steps[Scores | None]]) -> Steps[Scores | None]:
        """``ScoreCache.through`` for steps: the entry of ``key`` with this ``fingerprint``, else the steps
        ``make()`` builds, run (yielding their forward passes) and stored."""
        hit, value = self.cache.get(key, fingerprint)
        if not hit:
            value = yield from make()
            self.cache.put(key, fingerprint, value)
        return value

    def ranked(self, sc: Scores, cat: Catalogue, f: Filters) -> list[ScoredItem]:
        """``rank`` with exclude-seen from ``f``; for scores from the cache, the same user asking again with the
        same filters and catalogue layout (items, active flags, categories) gets the list ranked last time (the
        same inputs, so the same list)."""
        seen = sc.hist_cols if f.exclude_seen else None
        if not self.cache.enabled or f.n > RERANK_ABOVE_N:
            return self.rank(sc, cat, f, seen)
        key = (cat.layout, f)
        last = sc.last_ranked
        if last is not None and last[0] == key:
            return last[1]
        items = self.rank(sc, cat, f, seen)
        sc.last_ranked = (key, items)
        return items

    def rank(self, sc: Scores, cat: Catalogue, f: Filters, seen: np.ndarray | None) -> list[ScoredItem]:
        """Mask (inactive, categories, exclude, seen) and take the top N in the model's item space."""
        lm = sc.lm
        rows, active = cat.aligned(lm)
        allowed = active.clone()
        if f.categories:
            in_cat = np.where(rows >= 0, cat.category_mask(list(f.categories))[np.maximum(rows, 0)], False)
            allowed &= torch.as_tensor(in_cat, device=lm.device)
        drop = lm.items_of(list(f.exclude)) if f.exclude else np.empty(0, np.int64)
        if seen is not None:
            drop = np.concatenate([drop, seen])
        drop = drop[drop >= 0]
        if drop.size:
            allowed[torch.as_tensor(drop, device=lm.device)] = False
        values, idx = torch.topk(sc.scores.masked_fill(~allowed, float("-inf")), min(f.n, lm.n_items))
        scores, cols = values.tolist(), idx.tolist()
        if scores and not (math.isfinite(scores[0]) and math.isfinite(scores[-1])):  # masked (or NaN) ones out
            kept = [(c, v) for c, v in zip(cols, scores, strict=True) if math.isfinite(v)]
            cols, scores = [c for c, _ in kept], [v for _, v in kept]
        reasons = self.reasons(sc, cols)
        ids = lm.item_ids
        return [ScoredItem(str(ids[c]), v, r) for c, v, r in zip(cols, scores, reasons, strict=True)]

    def reasons(self, sc: Scores, idx: list[int]) -> list[str]:
        """Why each picked column (of ``sc.lm``) was recommended."""
        lm, hist = sc.lm, sc.hist_cols[sc.hist_cols >= 0]
        if sc.strategy == "sequential" and hist.size:
            return [f"next after {lm.item_ids[hist[-1]]}"] * len(idx)
        if sc.explained is not None:  # an ensemble's member behind each score
            names, codes = sc.explained
            return names[codes[idx]].tolist()
        picked = torch.as_tensor(idx, dtype=torch.int64, device=lm.device)
        seeds = scoring.seed_items(lm, picked, hist)
        if seeds is None:
            return [lm.name] * len(idx)
        return [f"similar to {lm.item_ids[s]}" for s in seeds]

    def popular(self, cat: Catalogue, models: ModelSet, f: Filters, seen_ids: np.ndarray) -> RecList:
        """Most interacted-with items within the filters, counted in the database now."""
        allowed = cat.active.copy()
        if f.categories:
            allowed &= cat.category_mask(list(f.categories))
        drop = cat.rows_of(np.concatenate([np.asarray(f.exclude, dtype=object), seen_ids]))
        allowed[drop[drop >= 0]] = False
        scores = torch.as_tensor(np.where(allowed, cat.popularity, -np.inf))
        values, idx = torch.topk(scores, min(f.n, cat.size)) if cat.size else (torch.empty(0), torch.empty(0))
        keep = torch.isfinite(values)
        why = f"popular in {', '.join(f.categories)}" if f.categories else "popular"
        picked = zip(idx[keep].tolist(), values[keep].tolist(), strict=True)
        items = [ScoredItem(str(cat.item_ids[i]), float(v), why) for i, v in picked]
        STRATEGY.labels("popular").inc()
        version = models["popularity"].version if "popularity" in models else None
        detail = None if models else "no trained model yet: popularity computed from the database"
        return RecList("popularity", version, "popular", items, detail)

    # -- endpoints ------------------------------------------------------------------------------
    def recommend(self, user_id: str, *, model: str | None = None, filters: Filters = Filters()) -> RecList:
        return self.run(self.recommend_steps(user_id, model=model, filters=filters))

    def recommend_ready(
        self, user_id: str, *, model: str | None = None, filters: Filters = Filters()
    ) -> RecList | None:
        """``recommend_steps``'s list when memory alone gives it (``_ready``), for the event loop; else None.
        A bad model name or models still loading raise as there."""
        if not self.cache.enabled or filters.n > RERANK_ABOVE_N:
            return None
        self.check_model(model)
        models = self.snapshot()
        ready = self._ready(model or self.default_model(models), user_id, models, filters)
        if ready is None:
            return None
        sc, items = ready
        STRATEGY.labels(sc.strategy).inc()
        return RecList(sc.lm.name, sc.lm.version, sc.strategy, items, sc.detail)

    def next_items_ready(self, user_id: str, *, model: str | None, filters: Filters) -> RecList | None:
        """``next_items_steps``'s list when memory alone gives it (``_ready``), for the event loop; else None."""
        if not self.cache.enabled or filters.n > RERANK_ABOVE_N:
            return None
        self.check_model(model, sequential=True)
        models = self.snapshot()
        lm = models.get(model) if model else _best(models, self.sequential_models(models))
        ready = None if lm is None else self._ready(NEXT_ITEMS + lm.name, user_id, models, filters)
        if ready is None:
            return None
        sc, items = ready
        STRATEGY.labels("sequential").inc()
        return RecList(sc.lm.name, sc.lm.version, "sequential", items)

    def _ready(
        self, name: str, user_id: str, models: ModelSet, filters: Filters
    ) -> tuple[Scores, list[ScoredItem]] | None:
        """The cache entry ``(name, user_id)`` and the list ranked from it for ``filters``, when memory alone
        gives both: no query, no forward pass, no ranking. That is: the catalogue current, the user's history
        kept and nothing committed since (SQLite's data version, one PRAGMA), the entry stored for that history
        and these models, and its last list ranked for these filters on this catalogue layout: the list the
        serving lane would return. None otherwise, and nothing counted (the lane counts its own look-ups)."""
        cat = self.catalogue.peek()
        kept = self._read_history.peek(user_id) if cat is not None else None
        if cat is None or kept is None:
            return None
        hit, sc = self.cache.get((name, user_id), (models.token, cat.history(*kept).fingerprint()), count=False)
        last = sc.last_ranked if hit and sc is not None else None
        if sc is None or last is None or last[0] != (cat.layout, filters):
            return None
        self._read_history.cache.count_hit()
        self.cache.count_hit()
        return sc, last[1]

    def recommend_steps(
        self, user_id: str, *, model: str | None = None, filters: Filters = Filters()
    ) -> Steps[RecList]:
        self.check_model(model)
        models = self.snapshot()
        name = model or self.default_model(models)
        cat = self.catalogue.get()
        hist = self.history(user_id, cat)
        sc = yield from self.user_scores(models, name, user_id, hist)
        if sc is None:
            out = self.popular(cat, models, filters, hist.item_ids if filters.exclude_seen else np.empty(0, object))
            if name in models and name != "popularity":
                out.detail = f"user unknown to {name} and no recent events a fallback model knows"
            return out
        STRATEGY.labels(sc.strategy).inc()
        return RecList(sc.lm.name, sc.lm.version, sc.strategy, self.ranked(sc, cat, filters), sc.detail)

    def next_items(self, user_id: str, *, model: str | None, filters: Filters) -> RecList:
        return self.run(self.next_items_steps(user_id, model=model, filters=filters))

    def next_items_steps(self, user_id: str, *, model: str | None, filters: Filters) -> Steps[RecList]:
        self.check_model(model, sequential=True)
        models = self.snapshot()
        hist = self.history(user_id)
        if not hist.exists:
            raise NotFound({"message": f"unknown user {user_id!r}", "unknown_user_ids": [user_id]})
        return (yield from self._next(models, model, hist.item_ids, filters, (user_id, hist)))

    def session_next(self, item_ids: list[str], *, model: str | None, filters: Filters) -> RecList:
        return self.run(self.session_next_steps(item_ids, model=model, filters=filters))

    def session_next_steps(self, item_ids: list[str], *, model: str | None, filters: Filters) -> Steps[RecList]:
        self.check_model(model, sequential=True)
        models = self.snapshot()
        out = yield from self._next(models, model, np.asarray(item_ids, dtype=object), filters)
        cat = self.catalogue.get()
        unknown = [i for i, r in zip(item_ids, cat.rows_of(item_ids), strict=True) if r < 0]
        out.extra["unknown_item_ids"] = unknown
        return out

    def _sequence_scores(self, lm: LoadedModel, items: np.ndarray) -> Steps[Scores | None]:
        cols = lm.items_of(items)
        s, known = yield "sequence", lm, scoring.sequence_request(lm, cols)
        return Scores(lm, s.clone(), "sequential", cols) if known else None

    def _next(
        self,
        models: ModelSet,
        model: str | None,
        items: np.ndarray,
        f: Filters,
        user: tuple[str, UserHistory] | None = None,
    ) -> Steps[RecList]:
        """Next items after ``items``; with ``user`` (a user's id and history) the scores go through the cache."""
        lm = models.get(model) if model else _best(models, self.sequential_models(models))
        cat = self.catalogue.get()
        seen_ids = items if f.exclude_seen else np.empty(0, dtype=object)
        if lm is None or items.size == 0:
            out = self.popular(cat, models, f, seen_ids)
            out.detail = "no events to continue from" if lm is not None else "no sequence model trained yet"
            return out
        if user is not None and self.cache.enabled:
            key, fingerprint = (NEXT_ITEMS + lm.name, user[0]), (models.token, user[1].fingerprint())
            sc = yield from self._through(key, fingerprint, lambda: self._sequence_scores(lm, items))
        else:
            sc = yield from self._sequence_scores(lm, items)
        if sc is None:
            out = self.popular(cat, models, f, seen_ids)
            out.detail = f"{lm.name} knows none of these items"
            return out
        STRATEGY.labels("sequential").inc()
        return RecList(lm.name, lm.version, "sequential", self.ranked(sc, cat, f))

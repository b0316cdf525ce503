"""The serving pipeline, top to bottom: history read -> retrieval -> ranking -> filters -> top-N -> reasons.

Every endpoint follows it. A user's events are read at request time (one indexed query). Retrieval gives
the ranking model a few hundred candidates from ANN indexes and popular items (``retrieval``); below
DEEPREC_ANN_MIN_ITEMS every item is a candidate, so small catalogues are ranked exactly, and
``exact=True`` asks for that on any catalogue. The model ranks the candidates (``score_candidates``; the
hybrid also says which member added most), the ranked candidates are cached, and filters (inactive,
categories, exclude, seen) are applied to them on every request; when they leave too few, retrieval
widens. A user the requested model cannot serve falls back to a sequence model over their recent events,
then the content model, then popular items; ``strategy`` and ``detail`` say which and why.

The cache key holds the loaded versions, the user and a digest of their history, so a swap or a new event
simply misses; nothing is invalidated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from cachetools import LRUCache
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.recsys.data import InteractionData
from app.recsys.index import RETRIEVAL_FILE, SIMILAR_FILE
from app.recsys.metrics import validation_rmse
from app.recsys.models import get_model_class, model_names
from app.recsys.models.abilities import (
    ExplainsCandidates,
    FeatureEncoder,
    ItemEmbeddings,
    ItemVectors,
)
from app.recsys.models.base import trained_on_ratings
from app.recsys.models.ensemble import Ensemble
from app.recsys.models.hybrid import Hybrid
from app.recsys.store import served_name, served_names, trained_objective
from app.serving import retrieval
from app.serving.catalogue import Catalogue, CatalogueKeeper, find_items
from app.serving.history import UserHistory, read_history
from app.serving.metrics import CACHE_ENTRIES, CACHE_REQUESTS, STRATEGY, inference_timer
from app.serving.registry import LoadedModel, ModelRegistry, ModelSet
from app.serving.results import (
    BadRequest,
    ModelUnavailable,
    NotFound,
    NotReady,
    Prediction,
    RecList,
    ScoredItem,
    UnknownModel,
)
from app.serving.retrieval import Candidates

log = logging.getLogger(__name__)

DEFAULT_MODEL = "hybrid"
# When the default is not trained yet, the first of these that is loaded serves instead.
PREFERENCE = ("hybrid", "sasrec", "neumf", "mf", "gru4rec", "ease", "content", "gmf", "mlp")
# Models whose item embeddings answer "similar items", best first when no model is named.
SIMILAR_PREFERENCE = ("sasrec", "mf", "gru4rec", "neumf", "gmf", "mlp", "content")
WIDEN = (4, 16)  # retrieval depth multipliers tried in turn when filters leave fewer than n candidates
MAX_FILTERED_EXACT = 100_000  # beyond the widest retrieval, items allowed by the filters ranked exactly up to this


@dataclass(frozen=True)
class Filters:
    n: int = 10
    categories: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    exclude_seen: bool = True


@dataclass(frozen=True)
class Plan:
    """Who ranks a request: the model, the user's index in it (-1: served from their items) and how."""

    lm: LoadedModel
    user: int
    strategy: str
    detail: str | None = None
    user_id: str = ""  # the external id, for retrievers with their own user indices


@dataclass(frozen=True)
class Ranked:
    """Candidates in the ranking model's columns, best first, with what made each: the cached value."""

    cols: np.ndarray  # [K]
    scores: np.ndarray  # [K] float32
    found_by: np.ndarray  # [K] index into sources
    sources: tuple[str, ...]
    complete: bool  # every item was a candidate
    members: np.ndarray | None = None  # an ensemble's member names
    codes: np.ndarray | None = None  # [K] index into members: who added most to each score

    @property
    def nbytes(self) -> int:
        extra = self.codes.nbytes if self.codes is not None else 0
        return 200 + self.cols.nbytes + self.scores.nbytes + self.found_by.nbytes + extra


class RankedCache(LRUCache):
    """A plain LRU of ranked lists bounded by bytes and by entries; thread-safe through ``lock``."""

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        super().__init__(maxsize=max(1, max_bytes), getsizeof=lambda r: r.nbytes)
        self.max_entries = max_entries
        self.lock = threading.Lock()

    def __setitem__(self, key: Any, value: Ranked) -> None:
        super().__setitem__(key, value)
        while len(self) > self.max_entries:
            self.popitem()


def _best(models: ModelSet, names: list[str]) -> LoadedModel | None:
    """The loaded model among ``names`` with the best validation NDCG (ties: order of ``names``); a model
    trained for ranking before one trained on ratings (``content`` before ``content-rating``)."""
    loaded = [models[n] for n in names if n in models]
    if not loaded:
        return None
    return max(
        loaded, key=lambda m: (trained_objective(m.model) != "rating", float(m.metrics.get("valid_ndcg@10") or 0))
    )


def user_batch(lm: LoadedModel, cols: np.ndarray) -> InteractionData:
    """One user's items (columns of ``lm``, oldest first; -1 unknown) as a one-row batch, each item at its
    latest position as in a training snapshot."""
    known = cols[cols >= 0].astype(np.int64)
    if known.size:
        _, last = np.unique(known[::-1], return_index=True)
        known = known[np.sort(known.size - 1 - last)]
    return InteractionData(
        user_ids=np.array(["<request>"], dtype=object),
        item_ids=lm.item_ids,
        users=np.zeros(known.size, dtype=np.int64),
        items=known,
        ratings=np.full(known.size, np.nan, dtype=np.float32),
        ts=np.arange(known.size, dtype=np.int64),
        item_features=np.zeros((lm.n_items, 0), dtype=np.float32),
        feature_schema=lm.model.feature_schema,
    )


def parse_weights(spec: str, ranker: LoadedModel) -> torch.Tensor:
    """``mf:0.5,gru4rec:0.5`` -> [M] weights in the hybrid's member order, normalised to sum to 1 (members
    left out weigh 0). A 422 (``BadRequest``) says what is wrong: not a hybrid, an unknown member, a bad or
    negative number, a member given twice, or nothing to weigh."""
    model = ranker.model
    if not isinstance(model, Hybrid):
        raise BadRequest(f"weights re-blend the ranking hybrid's members; {ranker.name} is not a ranking hybrid")
    members = list(model.members)
    out = torch.zeros(len(members), dtype=torch.float64)
    given: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        name, sep, value = part.partition(":")
        name = name.strip()
        if not sep or not name:
            raise BadRequest(f"weights: {part!r} is not member:number (e.g. mf:0.5,gru4rec:0.5)")
        if name not in members:
            raise BadRequest(f"weights: {name!r} is not a member of {ranker.name} ({', '.join(members)})")
        if name in given:
            raise BadRequest(f"weights: {name!r} is given twice")
        try:
            w = float(value)
        except ValueError:
            raise BadRequest(f"weights: {part!r} is not member:number (e.g. mf:0.5,gru4rec:0.5)") from None
        if not np.isfinite(w) or w < 0:
            raise BadRequest(f"weights: {part!r}: a weight is a finite number >= 0")
        given.add(name)
        out[members.index(name)] = w
    total = float(out.sum())
    if total <= 0:
        raise BadRequest("weights: at least one member needs a weight above 0")
    return (out / total).float()


@dataclass
class RecommendationService:
    registry: ModelRegistry
    sessions: sessionmaker[Session]
    catalogue: CatalogueKeeper
    ann_min_items: int = 50_000
    depth: int = 200
    similar_depth: int = 2000  # similar items have no ranking stage: the index search itself goes deep
    cache_bytes: int = 256 * 2**20
    cache_entries: int = 4096
    cache: RankedCache | None = field(init=False)

    def __post_init__(self) -> None:
        self.engine: Engine = self.sessions.kw["bind"]
        self.cache = RankedCache(self.cache_bytes, self.cache_entries) if self.cache_entries > 0 else None

    # -- shared ---------------------------------------------------------------------------------
    def snapshot(self) -> ModelSet:
        if not self.registry.ready:
            raise NotReady()
        return self.registry.models

    def current(self) -> Catalogue:
        try:
            return self.catalogue.current(timeout_s=5.0)
        except TimeoutError:
            raise NotReady() from None

    @staticmethod
    def check_model(name: str | None, *, sequential: bool = False) -> None:
        """Registered names (``hybrid-rating`` included) and the served ``-rating`` names of rating-capable ones."""
        if name is None:
            return
        served = served_names()
        valid = [m for m in model_names() if get_model_class(m).sequential] if sequential else served
        if name not in valid:
            raise UnknownModel(name, valid, "not a sequence model" if name in served else "unknown model")

    def loaded(self, models: ModelSet, name: str, asked: bool) -> LoadedModel | None:
        """``models[name]``; a model asked for by name whose active version failed to load is a 503, never
        silently replaced by another."""
        lm = models.get(name)
        if lm is None and asked and name in self.registry.errors:
            raise ModelUnavailable(name, self.registry.errors[name])
        return lm

    def default_model(self, models: ModelSet) -> str:
        if DEFAULT_MODEL in models:
            return DEFAULT_MODEL
        order = (*PREFERENCE, *(served_name(get_model_class(m).for_ratings or m, "rating") for m in PREFERENCE))
        return next((m for m in order if m in models), DEFAULT_MODEL)

    def history(self, user_id: str, cat: Catalogue | None = None) -> UserHistory:
        """The user's items now, oldest first (one indexed query)."""
        cat = cat if cat is not None else self.current()
        with self.engine.connect() as conn:
            exists, db_ids = read_history(conn, user_id)
        return UserHistory.of(exists, db_ids, cat)

    def _cached(self, key: tuple, make: Callable[[], Ranked]) -> Ranked:
        if self.cache is None:
            return make()
        with self.cache.lock:
            ranked = self.cache.get(key)
        CACHE_REQUESTS.labels("miss" if ranked is None else "hit").inc()
        if ranked is None:
            ranked = make()
            with self.cache.lock:
                self.cache[key] = ranked
                CACHE_ENTRIES.set(len(self.cache))
        return ranked

    # -- who ranks: the requested model, else the fallback chain -------------------------------------
    def plan(self, models: ModelSet, name: str, user_id: str, hist: UserHistory, asked: bool) -> Plan | str | None:
        """The Plan for a user, or the detail of why none serves (popular items then), None when popularity
        itself was asked for."""
        if name == "popularity":
            return None
        lm = self.loaded(models, name, asked)
        detail = f"model {name!r} has no trained version yet"
        if lm is not None:
            if lm.model.sequential:
                if (hist.cols(lm) >= 0).any():
                    return Plan(lm, -1, "sequential", user_id=user_id)
                detail = f"{name} knows none of the user's items"
            else:
                user = lm.user_of(user_id)
                if user >= 0:
                    return Plan(lm, user, "personalized", user_id=user_id)
                detail = f"user unknown to {name}"
        if not hist.empty:
            seq = lm if lm is not None and lm.model.sequential else _best(models, self.sequential(models))
            if seq is not None and (hist.cols(seq) >= 0).any():
                return Plan(seq, -1, "sequential", detail, user_id)
            content = _best(models, [n for n in models if isinstance(models[n].model, FeatureEncoder)])
            if content is not None and (hist.cols(content) >= 0).any():
                return Plan(content, content.user_of(user_id), "content", detail, user_id)
            detail += " and no recent events a fallback model knows"
        return detail

    @staticmethod
    def sequential(models: ModelSet) -> list[str]:
        return [n for n in models if models[n].model.sequential]

    # -- retrieval and ranking ---------------------------------------------------------------------
    def _retrieve(self, plan: Plan, hist: UserHistory, cat: Catalogue, depth: int, exact: bool) -> Candidates:
        """The ranker's candidates: every item on a small catalogue (or when asked), else the top ``depth`` of
        each retriever that can query for this user (the ranker and an ensemble's members with item vectors,
        as loaded versions with their indexes) and of popular items."""
        ranker = plan.lm
        if exact or ranker.n_items < self.ann_min_items:
            return Candidates.everything(ranker)
        models = self.registry.models
        names = [ranker.name, *(ranker.model.members if isinstance(ranker.model, Ensemble) else ())]
        found = []
        for name in dict.fromkeys(names):
            lm = ranker if name == ranker.name else models.get(name)
            if lm is None or not isinstance(lm.model, ItemVectors):
                continue
            user = lm.user_of(plan.user_id)
            cols = hist.cols(lm)
            if not lm.model.reads_history and user < 0:
                continue  # a model of user embeddings that never saw this user
            if lm.model.sequential and not (cols >= 0).any():
                continue
            with inference_timer(lm.name):
                q = lm.model.user_queries(user_batch(lm, cols), np.array([user]))  # type: ignore[attr-defined]
                found.append((lm.name, lm, retrieval.search(lm, RETRIEVAL_FILE, q, depth)[0][0]))
        found.append((retrieval.POPULAR, ranker, retrieval.popular_cols(ranker, cat, depth)))
        return Candidates.union(ranker, cat, found)

    def _rank(self, plan: Plan, batch: InteractionData, cand: Candidates, weights: torch.Tensor | None) -> Ranked:
        lm = plan.lm
        items = torch.as_tensor(cand.cols, device=lm.device).unsqueeze(0)  # [1, K]
        users = np.array([plan.user])
        members = codes = None
        with inference_timer(lm.name):
            if isinstance(lm.model, ExplainsCandidates):
                scores, members, codes_t = lm.model.explain_candidates(batch, users, items, weights)
                codes = codes_t[0].to(torch.int16).cpu().numpy()
            else:
                scores = lm.model.score_candidates(batch, users, items)
        s = scores[0].float().cpu().numpy()
        order = np.argsort(-s, kind="stable")
        return Ranked(
            cand.cols[order],
            s[order],
            cand.found_by[order],
            cand.sources,
            cand.complete,
            members,
            None if codes is None else codes[order],
        )

    def ranked_for(
        self, plan: Plan, hist: UserHistory, cat: Catalogue, depth: int, exact: bool, weights: torch.Tensor | None
    ) -> Ranked:
        batch = user_batch(plan.lm, hist.cols(plan.lm))
        return self._rank(plan, batch, self._retrieve(plan, hist, cat, depth, exact), weights)

    # -- filters, top-N, reasons -----------------------------------------------------------------------
    def _allowed(self, ranked: Ranked, lm: LoadedModel, cat: Catalogue, f: Filters, seen: np.ndarray) -> np.ndarray:
        """[K] which ranked candidates the filters let through: active, in the categories, not excluded or seen."""
        rows = cat.aligned(lm)[0][ranked.cols]
        ok = rows >= 0
        ok[ok] = cat.active[rows[ok]]
        if f.categories:
            ok[ok] = cat.category_mask(f.categories)[rows[ok]]
        drop = lm.items_of(list(f.exclude)) if f.exclude else np.empty(0, np.int64)
        if f.exclude_seen:
            drop = np.concatenate([drop, seen])
        if drop.size:
            ok &= ~np.isin(ranked.cols, drop[drop >= 0])
        return ok

    def _filtered_exact(
        self, plan: Plan, hist: UserHistory, cat: Catalogue, f: Filters, w: torch.Tensor | None
    ) -> Ranked | None:
        """The items the filters allow, ranked exactly, when few enough (a narrow category on a large catalogue)."""
        lm = plan.lm
        rows = np.flatnonzero(cat.active & (cat.category_mask(f.categories) if f.categories else True))
        if rows.size > MAX_FILTERED_EXACT:
            return None
        cols = cat.aligned(lm)[1][rows]
        cols = cols[cols >= 0]
        cand = Candidates(cols, np.zeros(cols.size, np.int16), ("filters",), True)
        return self._rank(plan, user_batch(lm, hist.cols(lm)), cand, w)

    def top(
        self,
        plan: Plan,
        hist: UserHistory,
        cat: Catalogue,
        f: Filters,
        key: tuple | None,
        exact: bool = False,
        weights: torch.Tensor | None = None,
    ) -> tuple[Ranked, np.ndarray]:
        """The ranked candidates and the positions of the first ``f.n`` the filters allow; retrieval widens
        (WIDEN), then the allowed items are ranked exactly, while too few get through."""
        seen = hist.cols(plan.lm)
        ranked = self._get(plan, hist, cat, self.depth, exact, weights, key)
        picked = np.flatnonzero(self._allowed(ranked, plan.lm, cat, f, seen))[: f.n]
        for times in WIDEN:
            if picked.size >= f.n or ranked.complete:
                break
            ranked = self._get(plan, hist, cat, self.depth * times, exact, weights, key)
            picked = np.flatnonzero(self._allowed(ranked, plan.lm, cat, f, seen))[: f.n]
        if picked.size < f.n and not ranked.complete:
            narrow = self._filtered_exact(plan, hist, cat, f, weights)
            if narrow is not None:
                ranked = narrow
                picked = np.flatnonzero(self._allowed(ranked, plan.lm, cat, f, seen))[: f.n]
        return ranked, picked

    def _get(
        self,
        plan: Plan,
        hist: UserHistory,
        cat: Catalogue,
        depth: int,
        exact: bool,
        weights: torch.Tensor | None,
        key: tuple | None,
    ) -> Ranked:
        make = lambda: self.ranked_for(plan, hist, cat, depth, exact, weights)  # noqa: E731
        return make() if key is None or exact else self._cached((*key, depth), make)

    def items(self, plan: Plan, hist: UserHistory, ranked: Ranked, picked: np.ndarray) -> list[ScoredItem]:
        lm = plan.lm
        cols = ranked.cols[picked]
        reasons = self.reasons(plan, hist, ranked, picked)
        found = np.asarray(ranked.sources, dtype=object)[ranked.found_by[picked]]
        ids = lm.item_ids[cols]
        return [
            ScoredItem(str(i), float(s), r, str(b))
            for i, s, r, b in zip(ids, ranked.scores[picked], reasons, found, strict=True)
        ]

    def reasons(self, plan: Plan, hist: UserHistory, ranked: Ranked, picked: np.ndarray) -> list[str]:
        """Why each picked item: the ensemble member behind it, the item it follows, or its nearest item."""
        lm, n = plan.lm, picked.size
        known = hist.cols(lm)
        known = known[known >= 0]
        if plan.strategy == "sequential" and known.size:
            return [f"next after {lm.item_ids[known[-1]]}"] * n
        if ranked.members is not None and ranked.codes is not None:
            return ranked.members[ranked.codes[picked]].tolist()
        if not isinstance(lm.model, ItemEmbeddings) or not known.size or not n:
            return [lm.name] * n
        sims = retrieval.unit_rows(lm, ranked.cols[picked]) @ retrieval.unit_rows(lm, known[-50:]).T  # [n, H]
        seeds = known[-50:][sims.argmax(1).cpu().numpy()]
        return [f"similar to {s}" for s in lm.item_ids[seeds]]

    def popular(self, cat: Catalogue, models: ModelSet, f: Filters, seen_rows: np.ndarray) -> RecList:
        """The most interacted-with items within the filters (the catalogue's counts, current to a second)."""
        rows = cat.popular_rows()
        ok = np.ones(rows.size, dtype=bool)
        if f.categories:
            ok = cat.category_mask(f.categories)[rows]
            if ok.sum() < f.n:  # a narrow category: all of its items, by popularity
                rows = np.flatnonzero(cat.active & cat.category_mask(f.categories))
                rows = rows[np.argsort(-cat.popularity[rows], kind="stable")]
                ok = np.ones(rows.size, dtype=bool)
        drop = np.concatenate([cat.rows_of(list(f.exclude)), seen_rows])
        if drop.size:
            ok &= ~np.isin(rows, drop[drop >= 0])
        picked = rows[ok][: f.n]
        why = f"popular in {', '.join(f.categories)}" if f.categories else "popular"
        items = [ScoredItem(str(cat.item_ids[r]), float(cat.popularity[r]), why, retrieval.POPULAR) for r in picked]
        STRATEGY.labels("popular").inc()
        version = models["popularity"].version if "popularity" in models else None
        detail = None if models else "no trained model yet: popularity computed from the database"
        return RecList("popularity", version, "popular", items, detail)

    # -- endpoints ------------------------------------------------------------------------------------
    def recommend(
        self,
        user_id: str,
        *,
        model: str | None = None,
        filters: Filters = Filters(),
        exact: bool = False,
        weights: str | None = None,
    ) -> RecList:
        self.check_model(model)
        models = self.snapshot()
        cat = self.current()
        name = model or self.default_model(models)
        hist = self.history(user_id, cat)
        plan = self.plan(models, name, user_id, hist, asked=model is not None)
        if not isinstance(plan, Plan):
            out = self.popular(cat, models, filters, hist.rows if filters.exclude_seen else np.empty(0, np.int64))
            if plan is not None and name in models:
                out.detail = plan
            return out
        w = parse_weights(weights, plan.lm) if weights is not None else None
        blend = None if w is None else tuple(round(float(x), 6) for x in w)  # normalised: equal blends share a key
        key = (models.token, "user", name, user_id, hist.digest, blend)
        ranked, picked = self.top(plan, hist, cat, filters, key, exact, w)
        STRATEGY.labels(plan.strategy).inc()
        return RecList(
            plan.lm.name, plan.lm.version, plan.strategy, self.items(plan, hist, ranked, picked), plan.detail
        )

    def next_items(
        self, user_id: str, *, model: str | None = None, filters: Filters = Filters(), exact: bool = False
    ) -> RecList:
        self.check_model(model, sequential=True)
        models = self.snapshot()
        cat = self.current()
        hist = self.history(user_id, cat)
        if not hist.exists:
            raise NotFound({"message": f"unknown user {user_id!r}", "unknown_user_ids": [user_id]})
        return self._next(models, model, hist, cat, filters, exact, ("user", user_id, hist.digest))

    def session_next(
        self, item_ids: list[str], *, model: str | None = None, filters: Filters = Filters(), exact: bool = False
    ) -> RecList:
        self.check_model(model, sequential=True)
        models = self.snapshot()
        cat = self.current()
        out = self._next(models, model, UserHistory.of_items(item_ids, cat), cat, filters, exact, None)
        known = cat.rows_of(item_ids) >= 0
        out.extra["unknown_item_ids"] = [i for i, k in zip(item_ids, known, strict=True) if not k]
        return out

    def _next(
        self,
        models: ModelSet,
        model: str | None,
        hist: UserHistory,
        cat: Catalogue,
        f: Filters,
        exact: bool,
        key: tuple | None,
    ) -> RecList:
        lm = self.loaded(models, model, True) if model else None
        detail = None if lm is not None or model is None else f"model {model!r} has no trained version yet"
        lm = lm or _best(models, self.sequential(models))  # an untrained one asked for: the best trained one
        seen = hist.rows if f.exclude_seen else np.empty(0, np.int64)
        if lm is None or hist.empty:
            out = self.popular(cat, models, f, seen)
            out.detail = detail or ("no sequence model trained yet" if lm is None else "no events to continue from")
            return out
        if not (hist.cols(lm) >= 0).any():
            out = self.popular(cat, models, f, seen)
            out.detail = f"{lm.name} knows none of these items"
            return out
        plan = Plan(lm, -1, "sequential", detail)
        ranked, picked = self.top(
            plan, hist, cat, f, None if key is None else (models.token, "next", lm.name, *key), exact
        )
        STRATEGY.labels("sequential").inc()
        return RecList(lm.name, lm.version, "sequential", self.items(plan, hist, ranked, picked), detail)

    def similar(self, item_id: str, *, n: int = 10, model: str | None = None, exact: bool = False) -> RecList:
        self.check_model(model)
        models = self.snapshot()
        cat = self.current()
        with_emb = [m for m in models if isinstance(models[m].model, ItemEmbeddings)]
        if model is not None:
            lm = self.loaded(models, model, True)
            if lm is not None and model not in with_emb:
                raise UnknownModel(model, with_emb, "model has no item embeddings")
        order = [model] if model else [m for m in SIMILAR_PREFERENCE if m in with_emb] + with_emb
        for name in order:
            lm = models.get(name)
            if lm is None or name not in with_emb or lm.items_of([item_id])[0] < 0:
                continue
            col = int(lm.items_of([item_id])[0])
            query = retrieval.unit_rows(lm, np.array([col]))  # [1, D]
            return self._similar(lm, cat, query, n, exact, f"similar to {item_id}", "similar", drop=col)
        if model is not None and model not in models:
            why = f"model {model!r} has no trained version yet"
        else:
            why = f"{model} does not know {item_id!r}" if model else f"no model knows {item_id!r}"
        rows = cat.rows_of([item_id])
        found = find_items_of(self.sessions, [item_id]) if rows[0] < 0 else None
        if rows[0] < 0 and (found is None or found.empty):
            raise NotFound({"message": f"unknown item {item_id!r}", "unknown_item_ids": [item_id]})
        content = _best(models, [m for m in with_emb if isinstance(models[m].model, FeatureEncoder)])
        if content is not None:  # an item with features only: its encoding searched among the content model's
            frame = found if found is not None else find_items_of(self.sessions, [item_id])
            feats = content.model.feature_schema.encode(frame.assign(categories=frame["categories"]))
            with torch.no_grad():
                query = content.model.encode_items(feats)  # type: ignore[attr-defined]
            return self._similar(
                content,
                cat,
                query,
                n,
                exact,
                f"features like {item_id}",
                "content",
                detail=f"{why}: matched by its features",
            )
        cats = tuple(find_items_of(self.sessions, [item_id])["categories"].iloc[0] or [])
        out = self.popular(cat, models, Filters(n=n, categories=cats), cat.rows_of([item_id]))
        out.detail = f"{why}: popular items in its categories"
        return out

    def _similar(
        self,
        lm: LoadedModel,
        cat: Catalogue,
        query: torch.Tensor,
        n: int,
        exact: bool,
        reason: str,
        strategy: str,
        drop: int = -1,
        detail: str | None = None,
    ) -> RecList:
        """The ``n`` active items nearest ``query`` by cosine (``drop``: the item itself), widening the search
        while inactive ones leave too few. Nothing ranks these candidates after the index, so its search
        returns ``similar_depth`` of them (its HNSW ef), re-scored exactly (``retrieval.rerank_similar``)."""
        rows_of = cat.aligned(lm)[0]
        for times in (1, *WIDEN):
            k = min(lm.n_items, (n + 1) * times if exact else max(self.similar_depth, n + 1) * times)
            with inference_timer(lm.name):
                cols, sims = retrieval.search(lm, SIMILAR_FILE, query, k, exact)
            cols, sims = cols[0], sims[0]
            rows = np.where(cols >= 0, rows_of[np.maximum(cols, 0)], -1)
            ok = (cols >= 0) & (cols != drop) & (rows >= 0)
            ok[ok] = cat.active[rows[ok]]
            if ok.sum() >= n or k >= lm.n_items:
                break
        pick = np.flatnonzero(ok)[:n]
        items = [
            ScoredItem(str(lm.item_ids[c]), float(s), reason, lm.name)
            for c, s in zip(cols[pick], sims[pick], strict=True)
        ]
        STRATEGY.labels(strategy).inc()
        return RecList(lm.name, lm.version, strategy, items, detail)

    def predict(self, user_id: str, item_ids: list[str], model: str | None = None) -> dict[str, Any]:
        """Relevance scores of given items for a user and, from a rating model, ratings on the data set's scale."""
        self.check_model(model)
        models = self.snapshot()
        cat = self.current()
        rows = cat.rows_of(item_ids)
        new = [i for i, r in zip(item_ids, rows, strict=True) if r < 0]
        found = find_items_of(self.sessions, sorted(set(new))) if new else None
        unknown = sorted(set(new) - set(found["item_id"])) if found is not None else []
        if unknown:
            raise NotFound({"message": "unknown item ids", "unknown_item_ids": unknown})
        hist = self.history(user_id, cat)
        if not hist.exists and not any(m.user_of(user_id) >= 0 for m in models.values()):
            raise NotFound({"message": f"unknown user {user_id!r}", "unknown_user_ids": [user_id]})
        name = model or self.default_model(models)
        plan = self.plan(models, name, user_id, hist, asked=model is not None)
        if not isinstance(plan, Plan):
            STRATEGY.labels("popular").inc()
            scores = np.where(rows >= 0, cat.popularity[np.maximum(rows, 0)], 0.0)
            preds = [Prediction(i, float(s), None, "popularity") for i, s in zip(item_ids, scores, strict=True)]
            if name == "popularity":
                detail = "scores are event counts in the database"
            else:
                why = "no trained model yet" if not models else plan or f"user unknown to {name}"
                detail = f"{why}: scores are event counts in the database"
            version = models["popularity"].version if "popularity" in models else None
            return {
                "model": "popularity",
                "version": version,
                "strategy": "popular",
                "predictions": preds,
                "detail": detail,
            }
        lm = plan.lm
        cols = lm.items_of(item_ids)
        score = np.full(len(item_ids), np.nan)
        scored_by = np.where(cols >= 0, lm.name, "").astype(object)
        batch = user_batch(lm, hist.cols(lm))
        if (cols >= 0).any():
            cand = Candidates(cols[cols >= 0], np.zeros(int((cols >= 0).sum()), np.int16), ("given",), True)
            ranked = self._rank(plan, batch, cand, None)
            score[cols >= 0] = pd.Series(ranked.scores, index=ranked.cols).reindex(cols[cols >= 0]).to_numpy()
        missing = np.flatnonzero(cols < 0)
        if missing.size:
            self._score_new(models, user_id, hist, item_ids, missing, score, scored_by, lm)
        ratings, unrated = self._ratings(models, user_id, item_ids, lm)
        preds = [
            Prediction(i, float(s), None if np.isnan(r) else float(r), str(b))
            for i, s, r, b in zip(item_ids, score, ratings, scored_by, strict=True)
        ]
        STRATEGY.labels(plan.strategy).inc()
        return {
            "model": lm.name,
            "version": lm.version,
            "strategy": plan.strategy,
            "predictions": preds,
            "detail": "; ".join(d for d in (plan.detail, unrated) if d) or None,
        }

    def _score_new(
        self,
        models: ModelSet,
        user_id: str,
        hist: UserHistory,
        item_ids: list[str],
        missing: np.ndarray,
        score: np.ndarray,
        scored_by: np.ndarray,
        lm: LoadedModel,
    ) -> None:
        """Items the ranking model does not know (newer than it): scored from their features by the content model."""
        content = _best(models, [n for n in models if isinstance(models[n].model, FeatureEncoder)])
        if content is None:
            ids = sorted({item_ids[i] for i in missing})
            raise NotFound({"message": f"items unknown to {lm.name} and no content model", "unknown_item_ids": ids})
        wanted = [item_ids[i] for i in missing]
        frame = find_items_of(self.sessions, sorted(set(wanted))).set_index("item_id").reindex(wanted).reset_index()
        frame["categories"] = frame["categories"].apply(lambda c: c if isinstance(c, list) else [])
        feats = content.model.feature_schema.encode(frame)
        batch = user_batch(content, hist.cols(content))
        with inference_timer(content.name), torch.no_grad():
            s = content.model.score_new_items(batch, np.array([content.user_of(user_id)]), feats)[0]  # type: ignore
        score[missing] = s.float().cpu().numpy()
        scored_by[missing] = content.name

    def _ratings(
        self, models: ModelSet, user_id: str, item_ids: list[str], lm: LoadedModel
    ) -> tuple[np.ndarray, str | None]:
        """Ratings from the requested model when it rates, else from the rating model with the lowest
        validation RMSE that knows the user; NaN where none can, with why (None when every item is rated)."""
        rating_models = [m for m in models.values() if trained_on_ratings(m.model)]
        raters = [m for m in rating_models if m.user_of(user_id) >= 0]
        raters.sort(key=lambda m: (validation_rmse(m.metrics) or ("", np.inf))[1])
        rater = lm if lm in raters else (raters[0] if raters else None)
        out = np.full(len(item_ids), np.nan)
        if rater is None:
            if rating_models:
                return out, f"rating is null: no rating model knows user {user_id!r}"
            if any((m.metrics.get("data") or {}).get("n_ratings") == 0 for m in models.values()):
                return out, "rating is null: the data set has no explicit ratings"
            return out, "rating is null: no model trained on ratings is active (train hybrid-rating)"
        cols = rater.items_of(item_ids)
        ok = cols >= 0
        if ok.any():
            items = torch.as_tensor(cols[ok], device=rater.device)
            users = torch.full_like(items, rater.user_of(user_id))
            with inference_timer(rater.name), torch.no_grad():
                out[ok] = rater.model.predict_ratings(users, items).float().cpu().numpy()  # type: ignore[attr-defined]
        why = None if ok.all() else f"rating is null for items {rater.name} does not know"
        return out, why


def find_items_of(sessions: sessionmaker[Session], item_ids: list[str]) -> pd.DataFrame:
    with sessions() as session:
        return find_items(session, item_ids)

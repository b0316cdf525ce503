"""Train models over several seeds and evaluate them under one or more protocols: per-seed and mean ± std.

Each model trains with its own tuned defaults (``default_train_config()``, else ``TrainConfig()``);
only the seed (and, when asked, the epoch budget and device) change. ``loo`` and ``sampled`` share
one fit per model and seed; rating protocols refit rating-capable models with the rating objective.
Models that are not registered, or whose module is not importable, are reported as unavailable.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.recsys.evaluation import (
    LABELS,
    EvalData,
    SampledCandidates,
    evaluate_full_ranking,
    evaluate_rating,
    evaluate_sampled,
    loo_split,
    rating_split,
    sample_candidates,
)
from app.recsys.models import get_model_class, model_names
from app.recsys.models.base import Recommender
from app.recsys.pipeline import build_model, configs_for, dependencies, resolve_models
from app.recsys.splits import Split

PROTOCOLS = ("loo", "sampled", "rating", "rating-u1", "rating-temporal")
Evaluator = Callable[[Recommender], dict[str, float]]


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (5, 10, 20)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = None  # None keeps each model's tuned budget
    device: str = "cpu"
    negatives: int = 99
    negatives_seed: int = 0  # the sampled candidates are the same for every model and seed
    batch_size: int = 1024


@dataclass
class ModelResult:
    name: str
    status: str = "ok"  # ok | unavailable | not applicable | failed
    reason: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)  # {"seed", metric: value, "train_s", ...}

    def _values(self) -> dict[str, list[float]]:
        keys = [k for k in (self.runs[0] if self.runs else {}) if k != "seed"]
        return {k: [float(r[k]) for r in self.runs] for k in keys}

    @property
    def mean(self) -> dict[str, float]:
        return {k: statistics.fmean(v) for k, v in self._values().items()}

    @property
    def std(self) -> dict[str, float]:
        """Sample standard deviation over seeds (0 for a single seed)."""
        return {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in self._values().items()}

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "runs": self.runs, "mean": self.mean, "std": self.std}


@dataclass
class ProtocolResult:
    protocol: str
    label: str
    data: dict[str, Any]
    cfg: EvalConfig
    models: dict[str, ModelResult] = field(default_factory=dict)

    @property
    def sampled(self) -> bool:
        return self.protocol == "sampled"

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "label": self.label,
            "sampled": self.sampled,
            "data": self.data,
            "ks": list(self.cfg.ks),
            "seeds": list(self.cfg.seeds),
            "epochs_override": self.cfg.epochs,
            "models": {name: m.to_dict() for name, m in self.models.items()},
        }


def expand_names(names: str | Sequence[str]) -> list[str]:
    """'all', 'a,b' or a list -> names in the requested order (unregistered ones kept, to be reported)."""
    parts = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for part in (p.strip() for p in parts):
        for name in model_names() if part == "all" else [part] if part else []:
            if name not in out:
                out.append(name)
    return out


def _availability(names: list[str], objective: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(names that import, with their dependencies for ``objective``, in training order) and
    {name: reason} for the rest."""
    missing: dict[str, str] = {}

    def usable(name: str) -> bool:
        if name in missing:
            return False
        try:
            deps = dependencies(name, objective)  # imports the model class
        except KeyError:
            missing[name] = "not registered"
            return False
        except ImportError as e:
            missing[name] = f"not importable: {e}"
            return False
        for dep in deps:
            if not usable(dep):
                missing[name] = f"needs {dep}, which is unavailable ({missing[dep]})"
                return False
        return True

    ok = [n for n in names if usable(n)]
    return resolve_models(ok, objective=objective), missing


def _fit(
    name: str, seed: int, split: Split, cfg: EvalConfig, objective: str, trained: dict[str, Recommender]
) -> tuple[Recommender, dict[str, Any]]:
    """One fit with the model's tuned settings; earlier models of the run are offered as the pipeline does."""
    model_cfg, train_cfg = configs_for(name, {"objective": objective})  # tuned defaults for the objective
    train_cfg = dataclasses.replace(
        train_cfg, seed=seed, device=cfg.device, verbose=False, epochs=cfg.epochs or train_cfg.epochs
    )
    model = build_model(name, model_cfg, train_cfg, trained)
    t0 = time.perf_counter()
    report = model.fit(split.train, split.valid, train_cfg)
    seconds = time.perf_counter() - t0
    model.eval()
    return model, {"train_s": seconds, "epochs": report.epochs_run, "best_epoch": report.best_epoch}


def evaluate_models(
    names: str | Sequence[str],
    data: EvalData,
    protocols: Sequence[str] = ("loo",),
    cfg: EvalConfig = EvalConfig(),
    log: Callable[[str], None] | None = None,
) -> list[ProtocolResult]:
    """Fit every model for every seed and evaluate it under each protocol; one result per protocol."""
    say = log or (lambda msg: None)
    protocols = [_resolve_protocol(p, data) for p in protocols]
    requested = expand_names(names)
    order, missing = _availability(requested)
    results: list[ProtocolResult] = []
    ranking = [p for p in protocols if p in ("loo", "sampled")]
    if ranking:
        split = loo_split(data)
        cands = sample_candidates(split, cfg.negatives, cfg.negatives_seed) if "sampled" in ranking else None
        stats = {**split.train.stats(), "source": data.name, "test_users": int(len(set(split.test.users)))}
        group = [
            (_new(p, {**stats, "split": "loo"}, cfg, requested, missing), _ranker(p, split, cands, cfg))
            for p in ranking
        ]
        for res, _ in group:  # the rating stack rates: the rating protocols measure it
            for name in (n for n in order if get_model_class(n).rating_only and n in res.models):
                res.models[name].status, res.models[name].reason = "not applicable", "rates only"
        _run([n for n in order if not get_model_class(n).rating_only], split, "implicit", cfg, group, say)
        results += [res for res, _ in group]
    for proto in (p for p in protocols if p.startswith("rating-")):
        split = rating_split(data, proto.removeprefix("rating-"))
        order, missing = _availability(requested, "rating")  # hybrid-rating for the hybrid, with rating members
        res = _new(proto, {**split.train.stats(), "source": data.name, "split": split.name}, cfg, requested, missing)
        rating_order = [n for n in order if get_model_class(n).supports_rating]
        for name in list(res.models):
            if name not in rating_order and name not in missing:
                standin = get_model_class(name).for_ratings
                why = f"no rating objective (ratings: {standin})" if standin else "no rating objective"
                res.models[name].status, res.models[name].reason = "not applicable", why
        _run(rating_order, split, "rating", cfg, [(res, _rater(split))], say)
        results.append(res)
    return results


def _resolve_protocol(p: str, data: EvalData) -> str:
    if p == "rating":
        return "rating-u1" if data.rating_train is not None and data.rating_test is not None else "rating-temporal"
    if p not in PROTOCOLS:
        raise ValueError(f"unknown protocol {p!r}; valid: {', '.join(PROTOCOLS)}")
    return p


def _new(protocol: str, stats: dict, cfg: EvalConfig, requested: list[str], missing: dict[str, str]) -> ProtocolResult:
    label = LABELS[protocol].format(n=cfg.negatives)
    res = ProtocolResult(protocol, label, dict(stats), cfg)
    for name in requested:
        res.models[name] = ModelResult(name, *(("unavailable", missing[name]) if name in missing else ()))
    return res


def _ranker(protocol: str, split: Split, cands: SampledCandidates | None, cfg: EvalConfig) -> Evaluator:
    if protocol == "sampled":
        assert cands is not None
        return lambda model: evaluate_sampled(model, split, cands, cfg.ks, cfg.batch_size)
    return lambda model: evaluate_full_ranking(model, split, cfg.ks, cfg.batch_size)


def _rater(split: Split) -> Evaluator:
    return lambda model: evaluate_rating(model, split)


def _run(
    order: list[str],
    split: Split,
    objective: str,
    cfg: EvalConfig,
    group: list[tuple[ProtocolResult, Evaluator]],
    say: Callable[[str], None],
) -> None:
    """Seeds outside, models inside, so a model's dependencies come from the same seed."""
    for seed in cfg.seeds:
        trained: dict[str, Recommender] = {}
        failed: dict[str, str] = {}
        for name in order:
            bad = [d for d in dependencies(name, objective) if d in failed]
            try:
                if bad:
                    raise RuntimeError(f"dependency {bad[0]} failed")
                model, info = _fit(name, seed, split, cfg, objective, trained)
                trained[name] = model
                for res, evaluate in group:
                    row = {"seed": seed, **evaluate(model), **info}
                    res.models.setdefault(name, ModelResult(name)).runs.append(row)
                say(f"{name:>12} seed {seed}: trained in {info['train_s']:.1f}s ({objective})")
            except Exception as e:  # one broken model must not sink a long benchmark
                failed[name] = f"{type(e).__name__}: {e}"
                for res, _ in group:
                    m = res.models.setdefault(name, ModelResult(name))
                    m.status, m.reason = "failed", failed[name]
                say(f"{name:>12} seed {seed}: FAILED {failed[name]}")

"""Training pipeline: split one snapshot, fit the requested models in dependency order, measure them.

Split (leave-one-out by time): each user's last event is the test item and the one before it the
validation item used for early stopping; users with fewer than three events train on everything.
The served model is the one that was measured: its test metrics are honest (the test item was
never seen in training or model selection). Serving reads each user's full history at request
time, so the two held-out events still count for sequence models and for exclude-seen.
With ``holdout="valid"`` only the validation item is held out (more training data, no test metrics).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.recsys import planning
from app.recsys.data import InteractionData
from app.recsys.models import get_model_class, model_names
from app.recsys.models.base import (
    EpochInfo,
    FitReport,
    Recommender,
    TrainConfig,
    trained_on_ratings,
    tuned_train_config,
)
from app.recsys.planning import Sizes, check_fits
from app.recsys.splits import Split, leave_one_out
from app.recsys.training import eval_sample, eval_user_limit, ranking_score, rating_errors

# What `make run` trains first: quick on the demo data (no SASRec: its 200-epoch schedule is the
# slowest), and it covers every serving path: personalized, sequence, content, the hybrid, and
# ratings for POST /v1/predict (the rating stack, which trains its own rating members). On a larger
# catalogue ``default_models`` leaves out what it cannot afford, and on data without ratings the stack.
DEFAULT_MODELS = ("popularity", "mf", "ease", "gru4rec", "content", "hybrid", "hybrid-rating")


@dataclass(frozen=True)
class Progress:
    """One progress event: a model started, finished an epoch, or finished."""

    model: str
    index: int  # 1-based position in the run
    total: int
    stage: str  # start | epoch | done
    epoch: int = 0
    epochs: int = 0
    loss: float | None = None
    metric_name: str = ""
    metric: float | None = None
    pending: tuple[str, ...] = ()  # the models of the run still to train after this one


ProgressCallback = Callable[[Progress], None]


@dataclass
class TrainResult:
    name: str
    model: Recommender
    report: FitReport
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def dependencies(name: str, objective: str | None = None) -> tuple[str, ...]:
    """Models that must be trained before ``name`` (its class's ``depends_on``, default none).

    With ``objective='rating'`` a model may depend on others (``rating_depends_on``: the rating
    hybrid stacks rating models only).
    """
    return get_model_class(name).dependencies_for(objective)


def run_objective(params: Mapping[str, Any] | None) -> str | None:
    """The objective every model of a run is trained with (``params['objective']``), if one is set."""
    value = (params or {}).get("objective")
    return value if isinstance(value, str) else None


def dependencies_for(name: str, objective: str | None) -> tuple[str, ...]:
    """:func:`dependencies` for a run's objective (the plain call when it is not 'rating')."""
    return dependencies(name, objective) if objective == "rating" else dependencies(name)


def for_objective(name: str, objective: str | None) -> str:
    """The model a run with ``objective`` trains for ``name``: with 'rating', the hybrid's rating
    counterpart (``hybrid`` -> ``hybrid-rating``); ``name`` otherwise."""
    if objective != "rating":
        return name
    return get_model_class(name).for_ratings or name


def needs_ratings(name: str) -> bool:
    """The model trains on ratings whatever the run asks (the rating stack): data without them cannot train it."""
    return get_model_class(name).rating_only


def rated(data: InteractionData | Sizes) -> bool:
    """Whether the data holds explicit ratings (Sizes without a count: assumed so)."""
    if isinstance(data, Sizes):
        return data.ratings is None or data.ratings > 0
    return bool(data.has_ratings().any())


def resolve_models(
    spec: str | Sequence[str],
    *,
    closed: bool = False,
    objective: str | None = None,
    default: Sequence[str] | None = None,
) -> list[str]:
    """'all', 'default', a name, a comma list or a list -> registered names in a valid training order.

    With ``objective='rating'`` the hybrid stands for the rating stack, ``hybrid-rating``: a rating
    run trains that, beside the ranking hybrid's versions, never in their place.

    A model named explicitly brings its dependencies (the hybrid needs its members trained in the
    same run); 'default' is a closed set (``default``, else ``DEFAULT_MODELS``; see
    :func:`default_models` for the set a catalogue affords): its hybrid combines the members in the
    set. With ``closed`` nothing is added: dependencies only order what was asked for. ``objective``
    picks the dependencies for that objective (see :func:`dependencies`).
    """
    registered = model_names()
    named: list[str] = []  # bring their dependencies
    fixed: list[str] = []  # a closed set: dependencies only order them
    for part in [spec] if isinstance(spec, str) else list(spec):
        for token in (t.strip() for t in part.split(",")):
            if token == "all":
                named += [for_objective(m, objective) for m in registered]
            elif token == "default":
                chosen_set = DEFAULT_MODELS if default is None else default
                fixed += [for_objective(m, objective) for m in chosen_set if m in registered]
            elif token:
                if token not in registered:
                    raise KeyError(f"unknown model {token!r}; valid: {', '.join(registered + ['all', 'default'])}")
                named.append(for_objective(token, objective))
    named, fixed = list(dict.fromkeys(named)), list(dict.fromkeys(fixed))
    if closed:
        fixed, named = fixed + named, []
    order: list[str] = []
    chosen = set(named) | set(fixed)

    def visit(name: str, path: tuple[str, ...], add_deps: bool) -> None:
        if name in path:
            raise ValueError(f"dependency cycle: {' -> '.join((*path, name))}")
        if name in order:
            return
        for dep in dependencies_for(name, objective):
            if add_deps or dep in chosen:
                visit(dep, (*path, name), add_deps)
        for dep in get_model_class(name).pretrain_from:  # order only: never added
            if dep in chosen:
                visit(dep, (*path, name), add_deps)
        order.append(name)

    for name in fixed:
        visit(name, (), name in named)
    for name in named:
        visit(name, (), True)
    return order


@dataclass(frozen=True)
class DefaultPick:
    """One model of the default set and whether this catalogue keeps it, with the reason."""

    name: str
    kept: bool
    reason: str

    def describe(self) -> str:
        return f"{self.name:>10}  {'kept' if self.kept else 'dropped'}: {self.reason}"


def _tokens(spec: str | Sequence[str]) -> list[str]:
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [t for t in (token.strip() for part in parts for token in part.split(",")) if t]


def without_unrated(names: Sequence[str], spec: str | Sequence[str], data: InteractionData | Sizes) -> list[str]:
    """``names`` less the models that need ratings when the data has none, unless ``spec`` named them:
    'all' and 'default' train on data without ratings; asking for the rating stack by name is an error."""
    if rated(data):
        return list(names)
    asked = set(_tokens(spec))
    return [n for n in names if not needs_ratings(n) or n in asked]


def mentions_default(spec: str | Sequence[str]) -> bool:
    return "default" in _tokens(spec)


def default_models(
    data: InteractionData | Sizes, params: Mapping[str, Any] | None = None, *, available: int | None = None
) -> list[DefaultPick]:
    """The default set for this catalogue, in training order: ``DEFAULT_MODELS`` less EASE above its
    ``max_items``, less every model whose estimated memory (with what the models before it keep)
    exceeds ``available`` (default :func:`~app.recsys.planning.available_memory`), less a hybrid left
    without members, less the rating stack on data without ratings. The hybrid combines whatever
    members stay in the set.
    """
    sizes = data if isinstance(data, Sizes) else Sizes.of(data)
    room = planning.available_memory() if available is None else available
    objective = run_objective(params)
    registered = set(model_names())
    order = resolve_models([m for m in DEFAULT_MODELS if m in registered], closed=True, objective=objective)
    kept: list[str] = []
    picks: list[DefaultPick] = []
    for name in order:
        model_cfg, _ = configs_for(name, params)
        max_items = get_model_class(name).item_limit(model_cfg)
        members = [d for d in dependencies_for(name, objective) if d in kept]
        if needs_ratings(name) and not rated(sizes):
            reason = "the data set has no explicit ratings to train it on"
        elif max_items is not None and sizes.items > max_items:
            reason = f"{sizes.items:,} items is above its max_items={max_items:,}"
        elif dependencies_for(name, objective) and not members:
            reason = "none of its members is in the set"
        else:
            est, need = planning.plan([*kept, name], sizes, params)[-1]
            if need > room:
                reason = f"needs about {planning.gib(need)} with the models before it, {planning.gib(room)} available"
            else:
                kept.append(name)
                reason = f"peak about {planning.gib(est.peak_bytes)}; {est.cost}"
                if members:
                    reason = f"over {', '.join(members)}; {reason}"
        picks.append(DefaultPick(name, name in kept, reason))
    return picks


def configs_for(name: str, params: Mapping[str, Any] | None) -> tuple[Any, TrainConfig]:
    """The model config and TrainConfig for ``name``: tuned defaults, then ``params`` overrides.

    ``params`` keys are TrainConfig or model-config fields and apply to every model that has
    them; a key named after a model holds overrides for that model only, e.g. {"mf": {"dim": 128}}.
    """
    cls = get_model_class(name)
    model_cfg = cls.config_cls()
    params = dict(params or {})
    flat = {k: v for k, v in params.items() if not isinstance(v, Mapping)}
    flat.update(params.get(name, {}) if isinstance(params.get(name), Mapping) else {})
    if cls.rating_only:  # the rating stack trains on ratings in any run
        flat["objective"] = "rating"
    train_cfg = tuned_train_config(cls, flat.get("objective", "implicit"))  # rating models have their own
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(model_cfg)}
    train_cfg = dataclasses.replace(train_cfg, **{k: v for k, v in flat.items() if k in train_fields})
    model_cfg = dataclasses.replace(model_cfg, **{k: v for k, v in flat.items() if k in model_fields})
    return model_cfg, train_cfg


def check_params(names: Sequence[str], params: Mapping[str, Any] | None) -> None:
    """Every override must be a field of TrainConfig or of one of the models' configs."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in names:
        known |= {f.name for f in dataclasses.fields(get_model_class(name).config_cls)}
    for key, value in (params or {}).items():
        if isinstance(value, Mapping):
            if key not in names:
                raise ValueError(f"overrides given for {key!r}, which is not being trained")
            fields = {f.name for f in dataclasses.fields(get_model_class(key).config_cls)}
            fields |= {f.name for f in dataclasses.fields(TrainConfig)}
            bad = sorted(set(value) - fields)
        else:
            bad = [] if key in known else [key]
        if bad:
            raise ValueError(f"unknown parameter(s) {bad}; known: {sorted(known)}")


def make_split(data: InteractionData, holdout: str = "test") -> Split:
    split = leave_one_out(data)
    if holdout == "test":
        return split
    if holdout == "valid":  # the test event goes back to training; validation stays held out
        return Split(split.train.union(split.test), split.valid, split.test.subset(split.test.users < 0), "loo-valid")
    raise ValueError(f"unknown holdout {holdout!r}: use test or valid")


def evaluate(model: Recommender, split: Split, k: int = 10, *, eval_users: int = 0, seed: int = 0) -> dict[str, Any]:
    """Validation and (when held out) test ranking metrics, plus RMSE/MAE for rating models.

    Ranking covers a fixed sample of at most ``eval_users`` users (all when 0), the same sample the
    models early-stopped on (:func:`~app.recsys.training.eval_sample`); ``eval_users`` and
    ``eval_sampled`` record how many users were ranked and whether that was a sample.
    """
    valid = eval_sample(split.valid, eval_users, seed)
    metrics: dict[str, Any] = {f"valid_{m}": v for m, v in ranking_score(model, split.train, valid, k).items()}
    metrics["eval_users"] = int(np.unique(valid.users).size)
    metrics["eval_sampled"] = valid.n_interactions < split.valid.n_interactions
    if split.test.n_interactions:
        history = split.train.union(split.valid)
        test = eval_sample(split.test, eval_users, seed)
        metrics.update({f"test_{m}": v for m, v in ranking_score(model, history, test, k).items()})
    if trained_on_ratings(model):
        for part, targets in (("valid", split.valid), ("test", split.test)):
            if targets.has_ratings().any():
                metrics.update({f"{part}_{m}": v for m, v in rating_errors(model, targets).items()})
    return metrics


def build_model(name: str, model_cfg: Any, train_cfg: TrainConfig, trained: Mapping[str, Recommender]) -> Recommender:
    """A fresh model, handed what earlier models of the run offer it.

    The hybrid gets its trained members (``use_dependencies``); a model that asks to pre-train
    (``wants_pretrained``: NeuMF with ``pretrain=True``) starts from its ``pretrain_from`` models of
    this run (GMF and MLP, as in the paper) when all were trained, instead of training its own.
    """
    cls = get_model_class(name)
    pretrained = [trained[n] for n in cls.pretrain_from if n in trained]
    if cls.pretrain_from and cls.wants_pretrained(model_cfg) and len(pretrained) == len(cls.pretrain_from):
        model = cls.from_pretrained(*pretrained, config=model_cfg)
    else:
        model = cls(model_cfg)
    model = model.to(train_cfg.device)
    deps = {d: trained[d] for d in dependencies_for(name, train_cfg.objective) if d in trained}
    if deps:
        model.use_dependencies(deps)
    return model


def train_models(
    data: InteractionData,
    models: str | Sequence[str] = "default",
    *,
    params: Mapping[str, Any] | None = None,
    on_progress: ProgressCallback | None = None,
    holdout: str = "test",
    device: str | None = None,
    on_result: Callable[[TrainResult], None] | None = None,
    reuse: Mapping[str, Recommender] | None = None,
    closed: bool = False,
    default: Sequence[str] | None = None,
) -> list[TrainResult]:
    """Fit every requested model (and its dependencies) on one split of ``data``; returns them in order.

    ``on_result`` gets each model as soon as it is measured (the CLI saves it there, so a run that
    stops half-way keeps what it finished). ``reuse`` holds already trained models (on this same
    snapshot) that dependants use instead of training them again; they are not returned.
    ``closed`` trains exactly the named models (see :func:`resolve_models`); 'default' is the set
    :func:`default_models` picks for this catalogue (or ``default``, when the caller picked it). Every model's memory
    is estimated first (:mod:`app.recsys.planning`): one that would not fit raises ``ModelTooLarge``.
    """
    reuse = dict(reuse or {})
    if default is None and mentions_default(models):
        default = [p.name for p in default_models(data, params) if p.kept]
    resolved = resolve_models(models, closed=closed, objective=run_objective(params), default=default)
    resolved = without_unrated(resolved, models, data)
    names = [n for n in resolved if n not in reuse]
    # Overrides of a default model this catalogue left out are still known keys, only unused.
    asked = resolve_models(models, closed=closed, objective=run_objective(params)) if default is not None else []
    check_params(list(dict.fromkeys([*names, *asked])), params)
    check_fits(names, Sizes.of(data), params)  # ModelTooLarge before anything trains
    split = make_split(data, holdout)
    trained: dict[str, Recommender] = dict(reuse)
    results: list[TrainResult] = []
    emit: ProgressCallback = on_progress or (lambda p: None)
    for index, name in enumerate(names, start=1):
        model_cfg, train_cfg = configs_for(name, params)
        if device is not None:
            train_cfg = dataclasses.replace(train_cfg, device=device)
        model = build_model(name, model_cfg, train_cfg, trained)
        pending = tuple(names[index:])
        emit(Progress(name, index, len(names), "start", epochs=train_cfg.epochs, pending=pending))

        def on_epoch(info: EpochInfo, name: str = name, index: int = index, pending: tuple[str, ...] = pending) -> None:
            step = Progress(name, index, len(names), "epoch", info.epoch, info.epochs, info.loss, info.metric_name)
            emit(dataclasses.replace(step, metric=info.metric, pending=pending))

        t0 = time.perf_counter()
        report = model.fit(split.train, split.valid, train_cfg, on_epoch)
        model.eval()
        limit = eval_user_limit(train_cfg, split.train.n_items)
        metrics = evaluate(model, split, train_cfg.eval_k, eval_users=limit, seed=train_cfg.seed)
        seconds = time.perf_counter() - t0
        metrics.update(
            best_epoch=report.best_epoch,
            epochs_run=report.epochs_run,
            train_seconds=round(seconds, 3),
            split=split.name,
            data=data.stats(),
        )
        model.metrics = metrics
        trained[name] = model
        results.append(TrainResult(name, model, report, metrics, seconds))
        if on_result is not None:
            on_result(results[-1])
        key = f"ndcg@{train_cfg.eval_k}"
        done = Progress(name, index, len(names), "done", report.epochs_run, train_cfg.epochs, pending=pending)
        emit(dataclasses.replace(done, metric_name=key, metric=metrics.get(f"valid_{key}")))
    return results

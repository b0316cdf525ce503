"""`deeprec train` and `deeprec models`: train from the configured database into the model store, list versions."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.config import Settings, get_settings

if TYPE_CHECKING:
    from app.recsys.data import InteractionData

# CLI flag -> TrainConfig / model-config field (the pipeline routes each to the configs that have it).
OVERRIDES: dict[str, tuple[str, type]] = {
    "--epochs": ("epochs", int),
    "--dim": ("dim", int),
    "--lr": ("lr", float),
    "--batch-size": ("batch_size", int),
    "--weight-decay": ("weight_decay", float),
    "--patience": ("patience", int),
    "--num-negatives": ("num_negatives", int),
    "--seed": ("seed", int),
    "--objective": ("objective", str),
}


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train models from the database into the model store and activate them")
    p.add_argument(
        "--model",
        "-m",
        action="append",
        default=None,
        help="model name, comma list, 'all' or 'default' (repeatable; default: default)",
    )
    for flag, (field, typ) in OVERRIDES.items():
        p.add_argument(flag, dest=field, type=typ, default=None, help=f"override {field}")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other config field, e.g. --param max_len=100 or --param mf.dim=128 (JSON values)",
    )
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: DEEPREC_DEVICE)")
    p.add_argument(
        "--holdout",
        choices=["test", "valid"],
        default="test",
        help="test: hold out each user's last two events (honest test metrics); valid: only the last one",
    )
    p.add_argument("--text-buckets", type=int, default=0, help="hashed title-token features for content models")
    p.add_argument("--if-missing", action="store_true", help="only train models that have no version yet")
    p.add_argument(
        "--reuse-members",
        action="store_true",
        help="train only the named models; dependencies (hybrid members) come from their active "
        "versions when those were trained on the same data",
    )
    p.add_argument("--no-activate", action="store_true", help="save versions without making them active")
    p.add_argument(
        "--quick-first",
        action="store_true",
        help="the first start: train the quick models (popularity, MF capped to seconds) here, queue the rest "
        "as one background job that publishes each model as it is trained (with --if-missing: nothing "
        "when every model has a version)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def add_models_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="list trained model versions in the store")
    p.add_argument("name", nargs="?", help="only this model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_models)


def parse_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for _, (field, _) in OVERRIDES.items():
        if getattr(args, field, None) is not None:
            params[field] = getattr(args, field)
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--param expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        model, dot, field = key.partition(".")
        if dot:
            params.setdefault(model, {})[field] = value
        else:
            params[key] = value
    return params


def train(
    settings: Settings,
    models: Sequence[str] | str = "default",
    *,
    params: dict[str, Any] | None = None,
    if_missing: bool = False,
    activate: bool = True,
    device: str | None = None,
    holdout: str = "test",
    text_buckets: int = 0,
    verbose: bool = False,
    reuse_members: bool = False,
    snapshot: tuple[InteractionData, int | None] | None = None,
) -> list[dict[str, Any]]:
    """Read a snapshot from the database, train, save each model as a new version; returns a summary.

    With ``if_missing`` only models without a version are trained; with ``reuse_members`` only the
    named ones. Either way, what they depend on (the hybrid's members) comes from the active
    versions when those were trained on the same snapshot, and is trained again otherwise.
    """
    from app.jobs.publish import open_store
    from app.jobs.snapshot import database_data
    from app.recsys.pipeline import (
        TrainResult,
        default_models,
        mentions_default,
        resolve_models,
        run_objective,
        train_models,
        without_unrated,
    )
    from app.recsys.store import served_name_of
    from app.recsys.training import resolve_device, set_train_threads

    store = open_store(settings)  # versions are recorded in model_version, which says what is active
    params = dict(params or {})
    objective = run_objective(params)  # a rating run trains hybrid-rating, with its rating members, for hybrid
    wanted = resolve_models(models, objective=objective)
    targets = resolve_models(models, closed=True, objective=objective) if reuse_members else wanted
    if if_missing:
        targets = [n for n in wanted if not store.versions(run_served_name(n, params))]
        if not targets:
            return []
    data, max_id = snapshot if snapshot is not None else database_data(settings, text_buckets=text_buckets)
    if max_id is None:
        raise SystemExit("no interactions in the database: import some first (deeprec demo-data or deeprec import)")
    set_train_threads(settings.train_threads)
    if mentions_default(models):  # the default set this catalogue affords, and why
        picks = default_models(data, params)
        for pick in picks:
            print(f"default: {pick.describe().strip()}")
        dropped = {p.name for p in picks if not p.kept}
        wanted = [n for n in wanted if n not in dropped]
        targets = [n for n in targets if n not in dropped]
        params = {k: v for k, v in params.items() if k not in dropped}  # overrides of what is left out
    wanted, targets = without_unrated(wanted, models, data), without_unrated(targets, models, data)
    if verbose:
        params.setdefault("verbose", True)
    dev = str(resolve_device(device or settings.device))
    summary: list[dict[str, Any]] = []

    def save(r: TrainResult) -> None:
        name = served_name_of(r.model)  # mf or mf-rating: the rating version is active beside the ranking one
        version = store.save(r.model, name=name)
        if activate:
            store.activate(name, version)
        pruned = store.prune(name, settings.keep_versions)
        summary.append(
            {
                "model": name,
                "version": version,
                "active": activate,
                "seconds": round(r.seconds, 2),
                "valid_ndcg@10": r.metrics.get("valid_ndcg@10"),
                "test_ndcg@10": r.metrics.get("test_ndcg@10"),
                "pruned": pruned,
            }
        )

    reuse: dict[str, Any] = {}
    needed = dependencies_of(targets, wanted, objective)
    if if_missing or reuse_members:
        reuse = reusable(store, data, needed, device=dev, params=params)
    names = [n for n in wanted if n in targets or (n in needed and n not in reuse)]
    train_models(data, names, params=params, holdout=holdout, device=dev, on_result=save, reuse=reuse, closed=True)
    return summary


def dependencies_of(targets: list[str], wanted: list[str], objective: str | None = None) -> set[str]:
    """What ``targets`` depend on, transitively, among ``wanted`` (and not targets themselves)."""
    from app.recsys.pipeline import dependencies_for

    needed: set[str] = set()
    stack = list(targets)
    while stack:
        for dep in dependencies_for(stack.pop(), objective):
            if dep in wanted and dep not in targets and dep not in needed:
                needed.add(dep)
                stack.append(dep)
    return needed


def run_served_name(name: str, params: dict[str, Any] | None) -> str:
    """The served name ``name`` is published under when trained with ``params`` (its objective,
    per-model overrides included): ``mf-rating`` for mf on ratings, else ``mf``."""
    from app.recsys.pipeline import configs_for
    from app.recsys.store import served_name

    return served_name(name, configs_for(name, params)[1].objective)


def reusable(
    store: Any, data: Any, names: set[str], *, device: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Active versions of ``names`` that were trained on this same snapshot (same ids), with the
    objective ``params`` ask for: a rating run reuses ``mf-rating``, never the ranking ``mf``.

    One trained on other ids (the data changed since), with another objective, or that cannot be
    loaded is left out, to be trained again.
    """
    import numpy as np

    from app.recsys.pipeline import configs_for
    from app.recsys.store import StoreError, served_name, trained_objective

    out = {}
    for name in sorted(names):
        objective = configs_for(name, params)[1].objective
        try:
            model = store.load(served_name(name, objective), device=device)
        except StoreError:
            continue
        if model.supports_rating and trained_objective(model) != objective:
            continue
        if np.array_equal(model.item_ids, data.item_ids) and np.array_equal(model.user_ids, data.user_ids):
            out[name] = model
    return out


def first_run(
    settings: Settings,
    models: Sequence[str] | str = "default",
    *,
    params: dict[str, Any] | None = None,
    device: str | None = None,
    verbose: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Train the quick models of ``models`` that have no version, here and capped to seconds; queue
    the others (and MF in full) as one first-run job. Returns the quick models' summary and the job
    (id, models, whether it was new), or None when nothing was queued.

    When every model of the set has a version, nothing is read, trained or queued.
    """
    from app.db.session import make_engine, make_sessionmaker
    from app.jobs import first_run as fr
    from app.jobs import queue
    from app.jobs.publish import open_store
    from app.jobs.snapshot import database_data
    from app.recsys.pipeline import default_models, mentions_default, resolve_models, run_objective

    params = dict(params or {})
    store = open_store(settings)
    wanted = resolve_models(models, objective=run_objective(params))
    missing = [n for n in wanted if not store.versions(run_served_name(n, params))]
    if not missing:
        return [], None
    data, max_id = database_data(settings)
    if max_id is None:
        raise SystemExit("no interactions in the database: import some first (deeprec demo-data or deeprec import)")
    if mentions_default(models):
        kept = {p.name for p in default_models(data, params) if p.kept}
        missing = [n for n in missing if n in kept]
    quick = [n for n in missing if n in fr.QUICK]
    summary: list[dict[str, Any]] = []
    if quick:
        summary = train(
            settings, quick, params=fr.quick_params(quick, params), if_missing=True, device=device,
            verbose=verbose, snapshot=(data, max_id),
        )  # fmt: skip
    if not [n for n in missing if n not in fr.REUSED]:
        return summary, None
    engine = make_engine(settings)
    try:
        with make_sessionmaker(engine)() as session:
            queued = queue.enqueue(
                session=session, models=[models] if isinstance(models, str) else list(models), params=params,
                trigger=fr.TRIGGER,
            )  # fmt: skip
            job = {"job_id": queued.job.id, "models": list(queued.job.models), "created": queued.created}
    finally:
        engine.dispose()
    rest = [n for n in missing if n not in fr.REUSED]
    job["training"] = rest
    return summary, job


def run_first_run(args: argparse.Namespace) -> int:
    settings = get_settings()
    t0 = time.perf_counter()
    try:
        summary, job = first_run(
            settings, args.model or ["default"], params=parse_params(args), device=args.device,
            verbose=not args.quiet,
        )  # fmt: skip
    except (KeyError, ValueError, RuntimeError) as e:
        print(f"deeprec train: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if not summary and job is None:
        print("every model already has a version; nothing to train (drop --if-missing to retrain)")
        return 0
    for row in summary:
        ndcg = row["test_ndcg@10"]
        shown = "n/a" if ndcg is None else f"{ndcg:.4f}"
        print(f"{row['model']:>10}  {row['version']}  active  test ndcg@10 {shown}  {row['seconds']:.1f}s  (quick)")
    if job is not None:
        state = "queued" if job["created"] else "already queued"
        print(
            f"training job {job['job_id']} {state}: {', '.join(job['training'])} train in the background "
            "(the worker that `deeprec serve` starts, or `deeprec worker`); each model is served as soon as it "
            "is trained, the hybrid last. Follow it in the console (/console) or at /v1/jobs."
        )
    print(f"done in {time.perf_counter() - t0:.1f}s; store: {settings.models_dir}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    if args.quick_first:
        if not args.if_missing or args.no_activate or args.reuse_members:
            print("deeprec train: --quick-first goes with --if-missing (and neither --no-activate nor "
                  "--reuse-members)", file=sys.stderr)  # fmt: skip
            return 2
        return run_first_run(args)
    settings = get_settings()
    t0 = time.perf_counter()
    try:
        summary = train(
            settings,
            args.model or ["default"],
            params=parse_params(args),
            if_missing=args.if_missing,
            reuse_members=args.reuse_members,
            activate=not args.no_activate,
            device=args.device,
            holdout=args.holdout,
            text_buckets=args.text_buckets,
            verbose=not args.quiet,
        )
    except (KeyError, ValueError, RuntimeError) as e:
        print(f"deeprec train: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if not summary:
        print("every requested model already has a version; nothing to train (drop --if-missing to retrain)")
    for row in summary:
        ndcg = row["test_ndcg@10"]
        shown = "n/a" if ndcg is None else f"{ndcg:.4f}"
        state = "active" if row["active"] else "saved"
        print(f"{row['model']:>10}  {row['version']}  {state}  test ndcg@10 {shown}  {row['seconds']:.1f}s")
    print(f"done in {time.perf_counter() - t0:.1f}s; store: {settings.models_dir}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    from app.recsys.store import ModelStore, StoreError

    store = ModelStore(get_settings().models_dir)
    rows = []
    for name in [args.name] if args.name else store.models():
        active = store.active_version(name)
        for version in store.versions(name):
            try:
                info = store.info(name, version).to_dict()
            except StoreError as e:
                info = {"name": name, "version": version, "error": str(e)}
            rows.append({**info, "active": version == active})
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    if not rows:
        print(f"no trained models in {store.root}; run: deeprec train --model default")
    for r in rows:
        ndcg = r.get("metrics", {}).get("test_ndcg@10")
        shown = "" if ndcg is None else f"test ndcg@10 {ndcg:.4f}"
        print(f"{'*' if r['active'] else ' '} {r['name']:>10}  {r['version']}  {r.get('trained_at', '')}  {shown}")
    return 0

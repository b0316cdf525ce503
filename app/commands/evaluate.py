"""`deeprec evaluate`: train models over seeds and report them under a protocol (table, JSON, PNG chart).

Data comes straight from a MovieLens folder (``--data``) or, without it, from the configured database.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from app.config import Settings, get_settings


def add_evaluate_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate models: ranking (loo, sampled) or rating protocols, over seeds")
    p.add_argument("--models", default="all", help="comma list of model names, or 'all' (default: all)")
    p.add_argument(
        "--protocol",
        default="loo",
        help="loo (full-ranking leave-one-out), sampled (NCF 99 negatives), rating (u1.base/u1.test when "
        "present, else temporal), rating-u1, rating-temporal; a comma list runs several (default: loo)",
    )
    p.add_argument("--k", default="5,10,20", help="cut-offs, comma list (default: 5,10,20)")
    p.add_argument("--data", type=Path, default=None, help="a MovieLens folder (ml-100k, ml-1m, ml-latest-small)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds: 0..N-1 (default: 3)")
    p.add_argument("--out", type=Path, default=Path("var/evaluation"), help="folder for JSON (and PNG)")
    p.add_argument("--plot", action="store_true", help="also draw a PNG chart per protocol (the [plot] extra)")
    p.add_argument("--epochs", type=int, default=None, help="override every model's epoch budget (quick runs)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")
    p.add_argument("--negatives", type=int, default=99, help="negatives per user for the sampled protocol")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: DEEPREC_TRAIN_THREADS)")
    p.add_argument("--quiet", action="store_true", help="no per-model progress lines")
    p.set_defaults(func=run_evaluate)


def load_database(settings: Settings):
    """The interactions and items in the configured database, as an EvalData."""
    from app.db.frames import database_frames
    from app.recsys.evaluation import EvalData

    interactions, items = database_frames(settings)
    if interactions.empty:
        raise ValueError("no interactions in the database: import some first, or pass --data PATH")
    return EvalData("database", interactions, items)


def load_folder(path: Path):
    """A MovieLens folder through the importer's parsers; ml-100k's u1.base/u1.test when present."""
    import pandas as pd

    from app.ingest.movielens import detect_format, read_items, read_ratings
    from app.recsys.evaluation import EvalData

    fmt = detect_format(path)
    ratings = pd.concat([frame for _, frame in read_ratings(path, fmt, 1 << 20)], ignore_index=True)
    item_file = {"ml-100k": "u.item", "ml-1m": "movies.dat", "ml-latest": "movies.csv"}[fmt]
    items = read_items(path, fmt) if (path / item_file).is_file() else None
    base, test = path / "u1.base", path / "u1.test"
    rating_train = rating_test = None
    if fmt == "ml-100k" and base.is_file() and test.is_file():
        cols = ["user_id", "item_id", "value", "ts"]
        rating_train, rating_test = (pd.read_csv(f, sep="\t", names=cols, dtype={"user_id": str, "item_id": str})
                                     for f in (base, test))  # fmt: skip
    return EvalData(f"{fmt} ({path.name})", ratings.drop(columns="type"), items, rating_train, rating_test)


def evaluate(
    *,
    models: str,
    protocols: list[str],
    ks: tuple[int, ...],
    seeds: int,
    data: Path | None,
    out: Path,
    epochs: int | None = None,
    device: str = "cpu",
    negatives: int = 99,
    threads: int = 0,
    plot: bool = False,
    log=None,
    settings: Settings | None = None,
) -> list[Any]:
    """Run the evaluation and write ``evaluate-<protocol>.json`` (and with ``plot``, ``.png``) into ``out``.

    With ``plot``, a missing matplotlib is reported before any model trains."""
    from app.recsys import report
    from app.recsys.experiment import EvalConfig, evaluate_models
    from app.recsys.training import resolve_device, set_train_threads

    if plot:
        report.require_matplotlib()
    settings = settings or get_settings()
    source = load_folder(data) if data is not None else load_database(settings)
    set_train_threads(threads or settings.train_threads)
    cfg = EvalConfig(
        ks=ks, seeds=tuple(range(seeds)), epochs=epochs, device=str(resolve_device(device)), negatives=negatives
    )
    results = evaluate_models(models, source, protocols, cfg, log=log)
    for res in results:
        report.write_json([res], out / f"evaluate-{res.protocol}.json")
        if plot:
            report.plot(res, out / f"evaluate-{res.protocol}.png")
    return results


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(x) for x in text.split(",") if x.strip())
    if not values or min(values) < 1:
        raise ValueError(f"--k expects positive integers, got {text!r}")
    return values


def run_evaluate(args: argparse.Namespace) -> int:
    from app.recsys.report import format_table

    t0 = time.perf_counter()
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        if args.seeds < 1:
            raise ValueError("--seeds must be at least 1")
        results = evaluate(
            models=args.models,
            protocols=[p.strip() for p in args.protocol.split(",") if p.strip()],
            ks=_ints(args.k),
            seeds=args.seeds,
            data=args.data,
            out=args.out,
            epochs=args.epochs,
            device=args.device,
            negatives=args.negatives,
            threads=args.threads,
            plot=args.plot,
            log=log,
        )
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"deeprec evaluate: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    failed = False
    for res in results:
        print(format_table(res))
        print()
        failed |= any(m.status == "failed" for m in res.models.values())
    suffix = ".json/.png" if args.plot else ".json"
    names = ", ".join(f"evaluate-{r.protocol}{suffix}" for r in results)
    print(f"wrote {names} to {args.out} in {time.perf_counter() - t0:.1f}s")
    return 1 if failed else 0

"""The hybrid's fit and evaluation cost on a large catalogue, with members whose training does not matter.

    python bench/hybrid_eval.py --cache var/bench-scale/100k/snap.pkl [--users 1000] [--exact-users 16]

Reads the snapshot (``bench/train_steps.py --cache`` writes the pickle; without it, the database of
``DEEPREC_DATABASE_URL``), fits popularity and builds MF and GRU4Rec with initial weights (what they
cost to score does not depend on their training), fits a hybrid over them for a few epochs, then times
``ranking_score`` on ``--users`` validation users: on the members' candidates (what evaluation does
above ``fit_all_items``) and, for ``--exact-users``, by scoring every item (the full ranking it replaces),
extrapolated per user.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", help="pickle of the snapshot (bench/train_steps.py --cache)")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--exact-users", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()

    import torch

    from app.config import get_settings
    from app.recsys.models.base import TrainConfig
    from app.recsys.models.gru4rec import GRU4Rec
    from app.recsys.models.hybrid import Hybrid
    from app.recsys.models.mf import MF
    from app.recsys.models.popularity import Popularity
    from app.recsys.pipeline import make_split
    from app.recsys.training import eval_sample, ranking_score, ranks_on_candidates, set_train_threads

    set_train_threads(get_settings().train_threads)
    if args.cache and Path(args.cache).is_file():
        with open(args.cache, "rb") as f:
            data = pickle.load(f)
    else:
        from app.jobs.snapshot import database_data

        data, _ = database_data(get_settings())
    split = make_split(data)
    train = split.train
    out: dict = {"users": data.n_users, "items": data.n_items, "events": train.n_interactions}
    pop = Popularity()
    pop.fit(train, None, TrainConfig())
    members = [pop]
    for cls in (MF, GRU4Rec):
        m = cls()
        torch.manual_seed(0)
        m.bind(train)
        m.net.eval()
        members.append(m)
    hybrid = Hybrid.from_members(members)
    cfg = dataclasses.replace(Hybrid.default_train_config(), epochs=args.epochs)
    t = time.perf_counter()
    hybrid.fit(train, split.valid, cfg)
    out["hybrid_fit_s"] = round(time.perf_counter() - t, 1)
    out["on_candidates"] = ranks_on_candidates(hybrid, data.n_items)
    sample = eval_sample(split.valid, args.users, 0)
    t = time.perf_counter()
    out["ndcg@10_candidates"] = ranking_score(hybrid, train, sample)["ndcg@10"]
    out["eval_s_candidates"] = round(time.perf_counter() - t, 1)
    out["eval_users"] = args.users
    few = eval_sample(split.valid, args.exact_users, 0)
    hybrid.config = dataclasses.replace(hybrid.config, fit_all_items=10**12)  # force the full ranking
    t = time.perf_counter()
    ranking_score(hybrid, train, few)
    per_user = (time.perf_counter() - t) / args.exact_users
    out["eval_s_full_per_user"] = round(per_user, 2)
    out["eval_s_full_extrapolated"] = round(per_user * args.users, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

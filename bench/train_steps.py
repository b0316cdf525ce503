"""Per-step training cost on a large database: what an epoch of each model costs, without running one.

    python bench/train_steps.py --models mf,gru4rec,content [--steps 30] [--param KEY=VALUE ...] [--cache FILE]

Reads the training snapshot of ``DEEPREC_DATABASE_URL`` once per model (each model in its own process, so peak
RSS is its own), makes the split ``deeprec train`` makes, and runs the model with its tuned defaults through
the trainer's steps (``start_fit``, then the ``Batches`` it returns), timing: the setup before the loop
(training windows, item tables), the per-epoch preparation (negatives), ``--steps`` optimiser steps after 3
warm-up steps, and one validation. An epoch is estimated as preparation + steps per epoch x mean step +
validation; the process's CPU seconds per step are reported beside the wall time (on a shared machine they
move less with the load). ``--cache`` keeps the snapshot in a pickle file (read once for every model). Run the
closed-form models and the hybrid with ``deeprec train`` instead.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(name: str, steps: int, params: dict, cache: str | None) -> dict:
    import dataclasses

    import torch

    from app.config import get_settings
    from app.jobs.snapshot import database_data
    from app.recsys.pipeline import build_model, configs_for, make_split
    from app.recsys.training import Optimizers, seed_everything, set_train_threads

    set_train_threads(get_settings().train_threads)  # DEEPREC_TRAIN_THREADS; 0: every core
    t0 = time.perf_counter()
    if cache and Path(cache).is_file():
        with open(cache, "rb") as f:
            data = pickle.load(f)
    else:
        data, _ = database_data(get_settings())
        if cache:
            with open(cache, "wb") as f:
                pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    split = make_split(data)
    out: dict = {"model": name, "users": data.n_users, "items": data.n_items, "events": split.train.n_interactions}
    out["read_s"] = round(time.perf_counter() - t0, 1)
    model_cfg, cfg = configs_for(name, params)
    cfg = dataclasses.replace(cfg, verbose=False)
    model = build_model(name, model_cfg, cfg, {})
    if model.closed_form:
        raise SystemExit(f"{name} is fitted in closed form: time it with deeprec train")
    valid = split.valid if split.valid.n_interactions else None
    started = time.perf_counter()
    seed_everything(cfg.seed)  # what Trainer.fit does before start_fit
    batches = model.start_fit(split.train, valid, cfg)
    out["setup_s"] = round(time.perf_counter() - started, 2)
    net = model.net
    gen = seed_everything(cfg.seed)
    opt = Optimizers(net, cfg)
    t = time.perf_counter()
    if batches.new_epoch is not None:
        batches.new_epoch(1)
    out["prepare_s"] = round(time.perf_counter() - t, 2)
    net.train()
    perm = torch.randperm(batches.n, generator=gen)
    times, cpu = [], []
    for n, start in enumerate(range(0, batches.n, cfg.batch_size)):
        if n >= steps + 3:
            break
        t, c = time.perf_counter(), time.process_time()
        loss = batches.loss(perm[start : start + cfg.batch_size])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if n >= 3:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    model.eval()
    t, c = time.perf_counter(), time.process_time()
    if valid is not None:
        with torch.no_grad():
            out["valid_metric"] = float(
                batches.validate() if batches.validate else model.validate(split.train, valid, cfg)
            )
    out["validate_s"] = round(time.perf_counter() - t, 2)
    out["validate_cpu_s"] = round(time.process_time() - c, 2)
    out["batch_size"] = cfg.batch_size
    out["steps_per_epoch"] = math.ceil(batches.n / cfg.batch_size)
    out["step_ms"] = round(1000 * sum(times) / max(len(times), 1), 2)
    out["step_cpu_ms"] = round(1000 * sum(cpu) / max(len(cpu), 1), 2)
    out["epoch_s_est"] = round(out["prepare_s"] + out["steps_per_epoch"] * out["step_ms"] / 1000 + out["validate_s"], 1)
    out["sparse"] = model.extra.get("sparse")
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mf,gru4rec,content")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--param", action="append", default=[], help="KEY=VALUE (JSON value), as deeprec train")
    p.add_argument("--cache", help="pickle file of the snapshot: written by the first model, read by the rest")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    params = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.param)}
    if args.one:
        print(json.dumps(measure(args.one, args.steps, params, args.cache)))
        return
    for name in args.models.split(","):
        extra = [a for kv in args.param for a in ("--param", kv)]
        cmd = [sys.executable, __file__, "--one", name, "--steps", str(args.steps), *extra]
        cmd += ["--cache", args.cache] if args.cache else []
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(json.dumps({"model": name, "error": res.stderr[-2000:]}))
        else:
            print(res.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()

"""Training benchmark on MovieLens-100K: per model, seconds per epoch, samples/s, epochs to best,
total seconds and peak RSS. Each model trains in its own subprocess so peak RSS is its own.

    python bench/train.py [--models mf,neumf,...] [--threads 2] [--seed 0] [--device cpu] [--epochs N]

--epochs caps each model's epochs (a short timing run, e.g. on a GPU); without it the tuned defaults
train to early stopping.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.paths import ml100k_available, ml100k_dir  # noqa: E402

# The yardstick of issue 3: RecBole 1.2.1 BPR on ML-100K on a 2-core machine.
RECBOLE_BPR_EPOCH_S = 0.64
RECBOLE_BPR_FIT_S = 65.0


def train_one(name: str, threads: int, seed: int, device: str = "cpu", epochs: int | None = None) -> dict:
    import dataclasses

    import pandas as pd
    import torch

    from app.recsys.data import InteractionData
    from app.recsys.pipeline import build_model, configs_for
    from app.recsys.splits import leave_one_out
    from app.recsys.training import ranking_score

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    df = pd.read_csv(ml100k_dir() / "u.data", sep="\t", names=["user_id", "item_id", "value", "ts"])
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = InteractionData.from_frames(df)
    split = leave_one_out(data)
    snapshot_s = time.perf_counter() - t0
    from app.recsys.training import resolve_device

    # The tuned defaults, as `deeprec train` uses them; an epoch cap reaches the hybrid's members too.
    model_cfg, cfg = configs_for(name, None if epochs is None else {"epochs": epochs})
    dev = resolve_device(device)
    cfg = dataclasses.replace(cfg, seed=seed, verbose=False, device=str(dev))
    model = build_model(name, model_cfg, cfg, {})  # members (NeuMF's GMF/MLP, the hybrid's) train inside fit
    t0 = time.perf_counter()
    report = model.fit(split.train, split.valid, cfg)
    total = time.perf_counter() - t0
    epoch_s = [h["seconds"] for h in report.history if "seconds" in h]  # closed-form models have no epochs
    test = ranking_score(model, split.train.union(split.valid), split.test)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return {
        "model": name,
        "device": str(dev),
        "read_s": read_s,
        "snapshot_s": snapshot_s,
        "s_per_epoch": sum(epoch_s) / len(epoch_s) if epoch_s else None,
        "samples_per_s": report.samples_per_second,
        "epochs": report.epochs_run,
        "best_epoch": report.best_epoch,
        "total_s": total,
        "ndcg@10": test["ndcg@10"],
        "hr@10": test["hr@10"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
    }


def defaults_table() -> list[str]:
    """Each model's tuned defaults (model config, then the TrainConfig fields that differ from TrainConfig())."""
    import dataclasses

    from app.recsys.models import get_model_class, model_names
    from app.recsys.models.base import TrainConfig
    from app.recsys.pipeline import configs_for

    base = dataclasses.asdict(TrainConfig())
    lines = ["| model | objective | model config | training config |", "|---|---|---|---|"]
    for name in model_names():
        cls = get_model_class(name)
        objectives = ("implicit", "rating") if cls.supports_rating else ("implicit",)
        objectives = ("rating",) if cls.rating_only else objectives
        for objective in objectives:
            model_cfg, train_cfg = configs_for(name, {"objective": objective})
            shown = {"epochs", "batch_size", "lr"}
            train = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k in shown or v != base[k]}
            train.pop("objective", None)
            fmt = lambda d: ", ".join(f"{k}={v}" for k, v in d.items())  # noqa: E731
            lines.append(f"| {name} | {objective} | {fmt(dataclasses.asdict(model_cfg))} | {fmt(train)} |")
    return lines


def main() -> None:
    from app.recsys.models import model_names

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(model_names()))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--epochs", type=int, default=None, help="cap every model's epochs (default: tuned, early stopping)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--defaults", action="store_true", help="only print each model's tuned defaults")
    args = p.parse_args()
    if args.defaults:
        print("\n".join(defaults_table()))
        return
    if not ml100k_available():
        sys.exit(f"skipped: MovieLens 100K not found at {ml100k_dir()} (set DEEPREC_ML100K_DIR)")
    if args.one:
        print(json.dumps(train_one(args.one, args.threads, args.seed, args.device, args.epochs)))
        return
    rows, failed = [], []
    for name in args.models.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--threads", str(args.threads), "--seed", str(args.seed),
               "--device", args.device]  # fmt: skip
        if args.epochs is not None:
            cmd += ["--epochs", str(args.epochs)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            failed.append((name, (out.stderr.strip().splitlines() or ["no output"])[-1]))
            print(f"{name}: FAILED {failed[-1][1]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{name}: {rows[-1]['total_s']:.1f}s", file=sys.stderr)
    if rows:
        print(f"snapshot of ML-100K (from a read frame): {rows[0]['snapshot_s'] * 1000:.0f} ms; "
              f"device: {rows[0]['device']}\n")  # fmt: skip
    gpu = any(r["peak_gpu_mb"] is not None for r in rows)
    print("| model | s/epoch | samples/s | epochs run | best epoch | total s | peak RSS MB | NDCG@10 | HR@10 |"
          + (" peak GPU MB |" if gpu else ""))  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    for r in rows:
        per_epoch = "-" if r["s_per_epoch"] is None else f"{r['s_per_epoch']:.3f}"
        rate = f"{r['samples_per_s']:,.0f}" if r["samples_per_s"] else "-"
        print(
            f"| {r['model']} | {per_epoch} | {rate} | {r['epochs']} | {r['best_epoch']} "
            f"| {r['total_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} |"
            + (f" {r['peak_gpu_mb']:.0f} |" if gpu else "")
        )
    mf = next((r for r in rows if r["model"] == "mf" and r["s_per_epoch"]), None)
    if mf is not None and args.epochs is None and args.device == "cpu":  # the yardstick is a full CPU fit
        print(
            f"\nBPR-MF vs RecBole 1.2.1 BPR on this machine (0.64 s/epoch, ~65 s fit): "
            f"{RECBOLE_BPR_EPOCH_S / mf['s_per_epoch']:.1f}x faster per epoch, "
            f"{RECBOLE_BPR_FIT_S / mf['total_s']:.1f}x faster to fit."
        )
    for name, why in failed:
        print(f"\n- {name}: FAILED: {why}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

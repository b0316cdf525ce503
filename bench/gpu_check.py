"""The GPU path in one script: load every trained model on the device, serve one request of each kind
through the app, time top-N for batches of users per model, and check the device's scores against the
same versions on the CPU.

    python bench/gpu_check.py [--device cuda] [--batch 1,256] [--reps 20] [--workdir var/bench-serve]

Uses the database and model store that bench/serve.py prepares under --workdir (ML-100K, `default`
models; built here when missing). The app runs with its cache of ranked lists off, so every timed
request computes its answer. Runs on the CPU too (--device cpu), which is how it is tested.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

REQUESTS = [
    ("GET", "/v1/users/1/recommendations?n=10", None),
    ("POST", "/v1/predict", {"user_id": "1", "item_ids": ["1", "50", "181"]}),
    ("GET", "/v1/users/1/next-items?n=10", None),
    ("POST", "/v1/sessions/next-items", {"item_ids": ["50", "181", "172"], "n": 10}),
    ("GET", "/v1/items/50/similar?n=10", None),
    ("GET", "/v1/models", None),
]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def recent_items(model, n_items: int, batch: int, per_user: int = 20):
    """The first ``batch`` users with ``per_user`` random recent items each, as the models read history."""
    import numpy as np

    from app.recsys.data import InteractionData

    users = np.arange(min(batch, len(model.user_ids)))
    history = InteractionData(
        user_ids=model.user_ids, item_ids=model.item_ids, users=np.repeat(users, per_user),
        items=np.random.default_rng(0).integers(0, n_items, per_user * len(users)),
        ratings=np.full(per_user * len(users), np.nan, np.float32), ts=np.tile(np.arange(per_user), len(users)),
        item_features=np.zeros((n_items, 0), np.float32), feature_schema=model.feature_schema,
    )  # fmt: skip
    return history, users


def time_top_n(registry, batches: list[int], n: int = 10, reps: int = 20) -> list[dict]:
    """Median ms of one [B, I] scoring pass + top-N per model, B users at once (no database)."""
    import torch

    rows = []
    for name, lm in registry.models.items():
        for batch in batches:
            history, users = recent_items(lm.model, lm.n_items, batch)
            times = []
            with torch.inference_mode():
                for _ in range(reps + 3):
                    t0 = time.perf_counter()
                    scores = lm.model.score_history(history, users)  # [B, I]
                    torch.topk(scores, n, dim=1)
                    sync(lm.device)
                    times.append((time.perf_counter() - t0) * 1000)
            rows.append({"model": name, "device": str(lm.device), "users": len(users),
                         "ms": statistics.median(times[3:])})  # fmt: skip
    return rows


def time_requests(svc, count: int, reps: int) -> dict:
    """Median ms of one recommendation request computed in the service (the cache is off: each reads its
    history from the database, retrieves and ranks), over ``count`` different users."""
    from app.serving.pipeline import Filters

    times = []
    for _ in range(reps + 1):
        for u in range(1, count + 1):
            t0 = time.perf_counter()
            svc.recommend(str(u), filters=Filters(n=10))
            times.append((time.perf_counter() - t0) * 1000)
    return {"requests": count, "ms": statistics.median(times[count:])}


def compare_with_cpu(registry, store, batch: int = 64, n: int = 10) -> list[dict]:
    """Each loaded version scored on its device and again loaded on the CPU: largest score difference
    and the share of top-N items both agree on (float rounding differs between the two)."""
    import torch

    rows = []
    with torch.inference_mode():
        for name, lm in registry.models.items():
            cpu = store.load(name, lm.version, device="cpu")
            history, users = recent_items(lm.model, lm.n_items, batch)
            on_device = lm.model.score_history(history, users).float().cpu()
            on_cpu = cpu.score_history(history, users).float()
            finite = torch.isfinite(on_cpu) & torch.isfinite(on_device)
            same_mask = bool(torch.equal(torch.isfinite(on_cpu), torch.isfinite(on_device)))
            diff = (on_device - on_cpu).abs()[finite].max().item() if finite.any() else 0.0
            top_d = torch.topk(on_device, n, dim=1).indices
            top_c = torch.topk(on_cpu, n, dim=1).indices
            agree = (top_d.unsqueeze(2) == top_c.unsqueeze(1)).any(2).float().mean().item()
            rows.append({"model": name, "max_abs_diff": diff, "top_agree": agree, "same_mask": same_mask})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", default="1,256", help="comma list of batch sizes for the top-N timing")
    p.add_argument("--reps", type=int, default=20, help="timed repeats of each request (after one untimed)")
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench-serve")
    args = p.parse_args()
    import serve  # bench/serve.py: the same ML-100K database and model store
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app
    from app.recsys.store import ModelStore

    env = serve.prepare(args.workdir.resolve(), "default", retrain=False)
    os.environ.update(env)
    batches = [int(b) for b in args.batch.split(",")]
    settings = Settings(_env_file=None, device=args.device, recommendation_cache_size=0)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 300
        while client.get("/readyz").status_code != 200:
            if time.monotonic() > deadline:
                sys.exit(f"not ready: {client.get('/readyz').json()}")
            time.sleep(0.2)
        registry = client.app.state.registry
        print(f"device: {registry.device}; models: {', '.join(registry.models)}")
        wrong = [n for n, m in registry.models.items() if m.device.type != registry.device.type]
        if wrong:
            sys.exit(f"models not on {registry.device}: {wrong}")
        failed = []
        print(f"\n| request | status | strategy | model | first ms | median ms of {args.reps} |\n"
              "|---|---|---|---|---|---|")  # fmt: skip
        for method, url, body in REQUESTS:
            times = []
            for _ in range(args.reps + 1):
                t0 = time.perf_counter()
                r = client.request(method, url, json=body)
                times.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    failed.append(f"{method} {url}: {r.status_code} {r.text[:200]}")
                    break
            data = r.json()
            made = f"{data.get('strategy', '')} | {data.get('model', '')}"
            rest = f"{statistics.median(times[1:]):.2f}" if len(times) > 1 else "-"
            print(f"| {method} {url} | {r.status_code} | {made} | {times[0]:.1f} | {rest} |")
        print("\n| model | device | users in batch | scoring + top-10 ms (median) |\n|---|---|---|---|")
        for row in time_top_n(registry, batches, reps=args.reps):
            print(f"| {row['model']} | {row['device']} | {row['users']} | {row['ms']:.2f} |")
        row = time_requests(client.app.state.recommender, 32, args.reps)
        print(f"\nrecommendations computed: median {row['ms']:.2f} ms a request over {row['requests']} users")
        print(f"\n| model | max abs score diff, {registry.device} vs cpu | top-10 overlap | same items masked |\n"
              "|---|---|---|---|")  # fmt: skip
        for row in compare_with_cpu(registry, ModelStore(settings.models_dir)):
            print(f"| {row['model']} | {row['max_abs_diff']:.2e} | {row['top_agree']:.3f} | {row['same_mask']} |")
            if not row["same_mask"] or row["top_agree"] < 0.9:
                failed.append(f"{row['model']}: scores on {registry.device} disagree with the CPU's")
        if failed:
            sys.exit("FAILED:\n" + "\n".join(failed))


if __name__ == "__main__":
    main()

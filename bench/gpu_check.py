"""The GPU path in one script: load every trained model on the device, serve one request of each kind
through the app, and time top-N for a batch of users per model.

    python bench/gpu_check.py [--device cuda] [--batch 256] [--workdir var/bench-serve]

Uses the database and model store that bench/serve.py prepares under --workdir (ML-100K, `default`
models; built here when missing). Runs on the CPU too (--device cpu), which is how it is tested.
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


def time_top_n(registry, batch: int, n: int = 10, reps: int = 20) -> list[dict]:
    """Median ms of one [B, I] scoring pass + top-N per model, B users at once (no database)."""
    import numpy as np
    import torch

    from app.recsys.data import InteractionData

    rows = []
    for name, lm in registry.models.items():
        model = lm.model
        users = np.arange(min(batch, len(model.user_ids)))
        history = InteractionData(
            user_ids=model.user_ids, item_ids=model.item_ids, users=np.repeat(users, 20),
            items=np.random.default_rng(0).integers(0, lm.n_items, 20 * len(users)),
            ratings=np.full(20 * len(users), np.nan, np.float32), ts=np.tile(np.arange(20), len(users)),
            item_features=np.zeros((lm.n_items, 0), np.float32), feature_schema=model.feature_schema,
        )  # 20 random recent items per user  # fmt: skip
        times = []
        with torch.inference_mode():
            for _ in range(reps + 3):
                t0 = time.perf_counter()
                scores = model.score_history(history, users)  # [B, I]
                torch.topk(scores, n, dim=1)
                sync(lm.device)
                times.append((time.perf_counter() - t0) * 1000)
        rows.append({"model": name, "device": str(lm.device), "users": len(users), "ms": statistics.median(times[3:])})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench-serve")
    args = p.parse_args()
    import serve  # bench/serve.py: the same ML-100K database and model store
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app

    env = serve.prepare(args.workdir.resolve(), "default", retrain=False)
    os.environ.update(env)
    settings = Settings(_env_file=None, device=args.device)
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
        print("\n| request | status | strategy | model | ms |\n|---|---|---|---|---|")
        for method, url, body in REQUESTS:
            t0 = time.perf_counter()
            r = client.request(method, url, json=body)
            ms = (time.perf_counter() - t0) * 1000
            data = r.json()
            made = f"{data.get('strategy', '')} | {data.get('model', '')}"
            print(f"| {method} {url} | {r.status_code} | {made} | {ms:.1f} |")
        print("\n| model | device | users in batch | scoring + top-10 ms (median) |\n|---|---|---|---|")
        for row in time_top_n(registry, args.batch):
            print(f"| {row['model']} | {row['device']} | {row['users']} | {row['ms']:.2f} |")


if __name__ == "__main__":
    main()

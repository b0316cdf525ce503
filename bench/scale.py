"""DeepRec at catalogue scale: data, training, indexes, memory, recall and latency at 10k, 100k and 1M items.

    python bench/scale.py [--sizes 10k,100k,1m] [--workdir var/bench-scale] [--epochs 2] [--requests 300]

For each size it generates a demo catalogue and event log into SQLite (``deeprec demo-data``), trains the
default models one process each (wall time and peak RSS per model), then the rest of the default set in
one ``deeprec train --model default --if-missing`` (EASE where the catalogue affords it, and the hybrid
over the members just trained), reads each version's index build time and size from its manifest,
starts the API (one uvicorn worker) and measures its RSS with the models loaded, the recall@10 of the
served lists against exact ranking of the same model (``exact=true``) for recommendations, next items
and similar items, and p50/p99 through HTTP on cold caches (users never asked before), warm (the same
users again) and the exact full-scan floor, in the same run. A size's data and models are reused by
later runs (--fresh to redo).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve import start, stop, wait_ready  # noqa: E402

# name -> (items, users, events)
SIZES = {
    "10k": (10_000, 10_000, 500_000),
    "100k": (100_000, 100_000, 3_000_000),
    "1m": (1_000_000, 500_000, 10_000_000),
}
MODELS = ("popularity", "mf", "gru4rec", "content")  # then the rest of the default set, its hybrid included


def run(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """A child process to completion: its wall and CPU seconds, peak RSS (MiB) and the load it ran under.

    CPU seconds (user + system, from wait4) are what to compare across runs when the machine is shared:
    wall seconds follow the load, which is the 15-minute load average at the step's end."""
    t0 = time.perf_counter()
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({status}); see {log}")
    return {"seconds": round(time.perf_counter() - t0, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "load15": round(os.getloadavg()[2], 1)}  # fmt: skip


def deeprec(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def prepare(size: str, workdir: Path, args: argparse.Namespace) -> tuple[dict[str, str], list[dict]]:
    """The size's database and models (reused when present); the rows of what was done now."""
    items, users, events = SIZES[size]
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        "DEEPREC_DATABASE_URL": f"sqlite:///{workdir / 'deeprec.db'}",
        "DEEPREC_MODELS_DIR": str(workdir / "models"),
        "DEEPREC_LOG_LEVEL": "WARNING",
        "DEEPREC_EMBEDDED_WORKER": "false",
        "DEEPREC_ANN_MIN_ITEMS": str(args.ann_min_items),
    }
    log, rows = workdir / "prepare.log", []
    if args.fresh or not (workdir / "deeprec.db").is_file():
        for p in workdir.glob("deeprec.db*"):
            p.unlink()
        run(deeprec("db", "upgrade"), env, log)
        rows.append({"step": "demo-data", **run(deeprec("demo-data", "--users", str(users), "--items", str(items),
                                                          "--events", str(events)), env, log)})  # fmt: skip
    for name in args.models.split(","):
        if not args.fresh and (workdir / "models" / name / "ACTIVE").is_file():
            continue
        rows.append({"step": f"train {name}", **run(deeprec("train", "--model", name, "--epochs", str(args.epochs),
                                                             "--quiet"), env, log)})  # fmt: skip
    if args.fresh or not (workdir / "models" / "hybrid" / "ACTIVE").is_file():  # EASE where the catalogue
        rows.append({"step": "train default --if-missing (ease where it fits, hybrid)",  # affords it, and
                     **run(deeprec("train", "--model", "default", "--if-missing", "--epochs", str(args.epochs),
                                   "--quiet"), env, log)})  # fmt: skip  # the hybrid over the members above
    return env, rows


def indexes(workdir: Path) -> list[dict]:
    """Each active version's index files: build seconds (from its manifest) and size."""
    out = []
    for active in sorted((workdir / "models").glob("*/ACTIVE")):
        folder = active.parent / active.read_text().strip()
        manifest = json.loads((folder / "manifest.json").read_text())
        for name, took in manifest.get("index_build_seconds", {}).items():
            out.append({"model": active.parent.name, "index": name, "build_s": took,
                        "size_mb": round((folder / name).stat().st_size / 2**20, 1)})  # fmt: skip
    return out


class Client:
    """One keep-alive HTTP connection; ``get`` returns (status, body, ms)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def get(self, path: str) -> tuple[int, dict, float]:
        t0 = time.perf_counter()
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = json.loads(r.read())
        return r.status, body, (time.perf_counter() - t0) * 1000


def ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body.get("items", [])]


def recall_rows(client: Client, users: list[str], items: list[str]) -> list[dict]:
    """recall@10 of the served list against exact ranking, for each endpoint."""
    paths = {
        "recommendations": [f"/v1/users/{u}/recommendations?n=10" for u in users],
        "next-items": [f"/v1/users/{u}/next-items?n=10" for u in users],
        "similar": [f"/v1/items/{i}/similar?n=10" for i in items],
    }
    out = []
    for endpoint, urls in paths.items():
        hits, models = [], set()
        for url in urls:
            status, served, _ = client.get(url)
            _, exact, _ = client.get(url + "&exact=true")
            if status != 200 or not ids(exact):
                continue
            models.add(served["model"])
            hits.append(len(set(ids(served)) & set(ids(exact))) / len(ids(exact)))
        out.append({"endpoint": endpoint, "recall@10": round(statistics.mean(hits), 4) if hits else None,
                    "requests": len(hits), "models": ",".join(sorted(models))})  # fmt: skip
    return out


def latency(client: Client, paths: list[str]) -> dict:
    ms = []
    for path in paths:
        status, _, took = client.get(path)
        if status != 200:
            raise SystemExit(f"{path}: {status}")
        ms.append(took)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "requests": len(ms)}


def latency_rows(client: Client, users: list[str], items: list[str], exact_n: int) -> list[dict]:
    """Cold (users never asked), warm (the same again) and exact (every item ranked) per endpoint."""
    out = []
    for endpoint, make in (
        ("recommendations", lambda u: f"/v1/users/{u}/recommendations?n=10"),
        ("next-items", lambda u: f"/v1/users/{u}/next-items?n=10"),
        ("similar", lambda i: f"/v1/items/{i}/similar?n=10"),
    ):
        keys = items if endpoint == "similar" else users
        paths = [make(k) for k in keys]
        for phase, chosen in (
            ("cold", paths),
            ("warm", paths),
            ("exact", [p + "&exact=true" for p in paths[:exact_n]]),
        ):
            out.append({"endpoint": endpoint, "phase": phase, **latency(client, chosen)})
    return out


def rss_mb(pid: int) -> dict:
    """RSS of a uvicorn server's worker (its one child): anonymous and file-backed (the memory-mapped indexes)."""
    kids = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    fields = {}
    for line in Path(f"/proc/{kids[0] if kids else pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = round(int(value.split()[0]) / 1024)
    return fields


def measure(size: str, args: argparse.Namespace) -> dict:
    workdir = (args.workdir / size).resolve()
    env, steps = prepare(size, workdir, args)
    if args.prepare_only:
        return {"size": size, "items": SIZES[size][0], "users": SIZES[size][1], "events": SIZES[size][2],
                "steps": steps, "indexes": indexes(workdir)}  # fmt: skip
    server = start("app.main:create_app", args.port, 1, {**env, "DEEPREC_MIGRATE_ON_START": "false"}, factory=True)
    try:
        wait_ready(f"http://127.0.0.1:{args.port}/readyz", server, timeout_s=1800)
        memory = rss_mb(server.pid)
        client = Client(args.port)
        _, models, _ = client.get("/v1/models")
        loaded = {m["name"]: m["indexes"] for m in models["models"] if m["loaded"]}
        n_items, n_users = SIZES[size][0], SIZES[size][1]
        rng = random.Random(0)
        users = [f"u{u}" for u in rng.sample(range(1, n_users + 1), 2 * args.requests + args.recall)]
        items = [f"i{i}" for i in rng.sample(range(1, n_items + 1), 2 * args.requests + args.recall)]
        recall = recall_rows(client, users[: args.recall], items[: args.recall])
        lat = latency_rows(client, users[args.recall : args.recall + args.requests],
                           items[args.recall : args.recall + args.requests], args.exact_requests)  # fmt: skip
    finally:
        stop(server)
    return {"size": size, "items": SIZES[size][0], "users": SIZES[size][1], "events": SIZES[size][2],
            "steps": steps, "indexes": indexes(workdir), "api_rss_mb": memory, "loaded": loaded,
            "recall": recall, "latency": lat}  # fmt: skip


def report(result: dict) -> str:
    lines = [
        f"### {result['size']}: {result['items']:,} items, {result['users']:,} users, {result['events']:,} events",
        "",
    ]
    if result["steps"]:
        lines += ["| step | wall s | CPU s | peak RSS MiB | load (15 min) |", "|---|---:|---:|---:|---:|"]
        for s in result["steps"]:
            cpu, load = s.get("cpu_s", ""), s.get("load15", "")
            lines.append(f"| {s['step']} | {s['seconds']} | {cpu} | {s['peak_rss_mb']} | {load} |")
        lines.append("")
    if result["indexes"]:
        lines += ["| model | index | build s | size MiB |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['index']} | {r['build_s']} | {r['size_mb']} |" for r in result["indexes"]]
        lines.append("")
    if "latency" not in result:  # --prepare-only
        return "\n".join(lines)
    lines.append(f"API worker RSS with {', '.join(result['loaded'])} loaded: {result['api_rss_mb']} (MiB)")
    lines += ["", "| endpoint | recall@10 vs exact | requests | served by |", "|---|---|---|---|"]
    lines += [f"| {r['endpoint']} | {r['recall@10']} | {r['requests']} | {r['models']} |" for r in result["recall"]]
    lines += ["", "| endpoint | caches | p50 ms | p99 ms | requests |", "|---|---|---|---|---|"]
    lines += [f"| {r['endpoint']} | {r['phase']} | {r['p50_ms']} | {r['p99_ms']} | {r['requests']} |"
              for r in result["latency"]]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10k,100k,1m")
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench-scale")
    p.add_argument("--models", default=",".join(MODELS), help="trained one process each, in this order")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--ann-min-items", type=int, default=50_000, help="DEEPREC_ANN_MIN_ITEMS")
    p.add_argument("--requests", type=int, default=300, help="timed requests per endpoint and phase")
    p.add_argument("--exact-requests", type=int, default=50, help="timed exact (full-scan) requests per endpoint")
    p.add_argument("--recall", type=int, default=200, help="users and items whose served lists are compared")
    p.add_argument("--port", type=int, default=8790)
    p.add_argument("--fresh", action="store_true", help="generate and train again")
    p.add_argument("--prepare-only", action="store_true", help="generate and train, measure the API in a later run")
    args = p.parse_args()
    results = []
    for size in args.sizes.split(","):
        results.append(measure(size, args))
        print(report(results[-1]), flush=True)
        print(flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scale-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(results, indent=1, default=str))
    load = os.getloadavg()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; own peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()

"""Serving benchmark on MovieLens-100K: the service and a minimal floor app, both under uvicorn with the
same worker count, loaded by `wrk` from a separate process at 1, 8 and 32 connections.

Prerequisite (Debian/Ubuntu): apt-get update && apt-get install -y wrk

    python bench/serve.py [--workers 2] [--duration 5] [--rounds 3] [--connections 1,8,32] [--workdir var/bench-serve]
                          [--warmup 2] [--wrk-threads 2] [--cache-size N] [--response-cache-mb N]
                          [--ingest-rate EVENTS_PER_S]

The first run imports ML-100K into SQLite under --workdir and trains the `default` models into its
model store (a few minutes); later runs reuse both (--retrain to start over). Reports requests/s,
p50 and p99 per endpoint and concurrency, and each endpoint's ratio to the floor, with the CPU each
server used: its cores (CPU seconds per second of the run) and how that CPU split over its workers, so
a floor that did not saturate the machine (a client too slow, connections on one worker) shows. --cache-size
sets the service's cache of ranked candidates (DEEPREC_RECOMMENDATION_CACHE_SIZE; 0: off, every request
computed), --response-cache-mb its cache of whole answers (DEEPREC_RESPONSE_CACHE_MB; 0: off); the share
of look-ups that hit each cache during each run is reported with it. --ingest-rate writes that
many events a second through the service while it is measured (on a copy of the database).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.api.server import HTTP_PROTOCOL  # noqa: E402
from app.paths import ml100k_available, ml100k_dir  # noqa: E402

# name -> (method, lua body builder); every request draws a random user / item of ML-100K.
ENDPOINTS: dict[str, str] = {
    "floor": 'return wrk.format("GET", "/v1/users/" .. math.random(1, 943) .. "/recommendations")',
    "floor-async": 'return wrk.format("GET", "/async/users/" .. math.random(1, 943) .. "/recommendations")',
    "recommendations": 'return wrk.format("GET", "/v1/users/" .. math.random(1, 943) .. "/recommendations?n=10")',
    "recommendations?model=mf": 'return wrk.format("GET", "/v1/users/" .. math.random(1, 943) .. '
    '"/recommendations?n=10&model=mf")',
    "predict": 'local ids = {} for i = 1, 10 do ids[i] = "\\"" .. math.random(1, 1682) .. "\\"" end '
    'return wrk.format("POST", "/v1/predict", {["Content-Type"] = "application/json"}, '
    '"{\\"user_id\\": \\"" .. math.random(1, 943) .. "\\", \\"item_ids\\": [" .. table.concat(ids, ",") .. "]}")',
    "next-items": 'return wrk.format("GET", "/v1/users/" .. math.random(1, 943) .. "/next-items?n=10")',
    "sessions/next-items": 'local ids = {} for i = 1, 5 do ids[i] = "\\"" .. math.random(1, 1682) .. "\\"" end '
    'return wrk.format("POST", "/v1/sessions/next-items", {["Content-Type"] = "application/json"}, '
    '"{\\"n\\": 10, \\"item_ids\\": [" .. table.concat(ids, ",") .. "]}")',
    "similar": 'return wrk.format("GET", "/v1/items/" .. math.random(1, 1682) .. "/similar?n=10")',
}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def load_movielens(settings) -> None:
    """ML-100K into the database: items with genres and release year, then the 100,000 ratings."""
    import pandas as pd

    from app.db.migrations import upgrade
    from app.db.repository import ItemUpsert, add_interactions, upsert_items
    from app.db.session import make_engine, make_sessionmaker

    upgrade(settings)
    d = ml100k_dir()
    genres = pd.read_csv(d / "u.genre", sep="|", names=["name", "id"], encoding="latin-1").dropna()["name"].tolist()
    items = pd.read_csv(d / "u.item", sep="|", header=None, encoding="latin-1")
    flags = items.iloc[:, 5 : 5 + len(genres)].to_numpy(bool)
    years = pd.to_datetime(items[2], format="%d-%b-%Y", errors="coerce").dt.year
    rows = [
        ItemUpsert(str(i), t, [g for g, f in zip(genres, fl, strict=True) if f], {} if pd.isna(y) else {"year": int(y)})
        for i, t, fl, y in zip(items[0], items[1], flags, years, strict=True)
    ]
    ratings = pd.read_csv(d / "u.data", sep="\t", names=["user_id", "item_id", "value", "ts"])
    ratings = ratings.astype({"user_id": str, "item_id": str, "value": float}).assign(type="rating")
    engine = make_engine(settings)
    with make_sessionmaker(engine)() as session:
        upsert_items(session=session, items=rows)
        add_interactions(session=session, rows=ratings)
        session.commit()
    engine.dispose()


def prepare(workdir: Path, models: str, retrain: bool, params: dict | None = None) -> dict[str, str]:
    from app.commands.train import train
    from app.config import Settings
    from app.db.migrations import upgrade
    from app.recsys.pipeline import resolve_models
    from app.recsys.store import ModelStore, StoreError

    env = {
        "DEEPREC_DATABASE_URL": f"sqlite:///{workdir / 'deeprec.db'}",
        "DEEPREC_MODELS_DIR": str(workdir / "models"),
        "DEEPREC_LOG_LEVEL": "WARNING",
        "DEEPREC_EMBEDDED_WORKER": "false",
        "DEEPREC_MIGRATE_ON_START": "false",
        "DEEPREC_TORCH_THREADS": "1",
    }
    settings = Settings(_env_file=None, **{k.removeprefix("DEEPREC_").lower(): v for k, v in env.items()})
    store = ModelStore(settings.models_dir)
    if (workdir / "deeprec.db").is_file() and not retrain:
        upgrade(settings)  # a database imported by older code: the service runs with DEEPREC_MIGRATE_ON_START=false
    if retrain or not (workdir / "deeprec.db").is_file():
        for p in (workdir / "deeprec.db", workdir / "deeprec.db-wal", workdir / "deeprec.db-shm"):
            p.unlink(missing_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        load_movielens(settings)
        print(f"imported ML-100K in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    for name in resolve_models(models):  # a version saved by older code may no longer load: drop it
        version = store.active_version(name)
        try:
            if version is not None:
                store.load(name, version)
        except StoreError as e:
            print(f"dropping {name}/{version}: {e}", file=sys.stderr)
            shutil.rmtree(store.path(name, version))
    t0 = time.perf_counter()
    done = train(settings, models, params=params, verbose=True, if_missing=not retrain)
    if done:
        print(f"trained {[r['model'] for r in done]} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return env


def start(app: str, port: int, workers: int, env: dict[str, str], factory: bool) -> subprocess.Popen:
    # Both apps get the NoDelay protocol: with --workers N stock uvicorn leaves Nagle on (~40 ms a request).
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--workers",
           str(workers), "--http", HTTP_PROTOCOL, "--log-level", "warning", "--no-access-log"]  # fmt: skip
    if factory:
        cmd.append("--factory")
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} not ready after {timeout_s}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the uvicorn workers), from /proc."""
    pids, total = [pid], 0.0
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
            for task in Path(f"/proc/{p}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def worker_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each worker process of a uvicorn server (its children), from /proc."""
    try:
        kids = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        return {}
    return {k: cpu_seconds(k) for k in kids}


def run_wrk(port: int, endpoint: str, connections: int, duration: int, workdir: Path, server: int,
            threads: int) -> dict:  # fmt: skip
    """One wrk run; also the server's CPU time per request, which other load on the machine barely moves,
    the cores it used and how its CPU split over its workers."""
    script = workdir / f"{re.sub(r'[^A-Za-z0-9]+', '_', endpoint)}.lua"
    script.write_text(f"request = function()\n  {ENDPOINTS[endpoint]}\nend\n")
    cmd = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration}s", "--latency", "-s",
           str(script), f"http://127.0.0.1:{port}"]  # fmt: skip
    cpu0, workers0, t0 = cpu_seconds(server), worker_cpu(server), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu, wall = cpu_seconds(server) - cpu0, time.perf_counter() - t0
    spent = sorted((v - workers0.get(k, 0.0) for k, v in worker_cpu(server).items()), reverse=True)
    n = int(re.search(r"(\d+) requests in", out).group(1))
    pct = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "endpoint": endpoint,
        "connections": connections,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": pct["50"],
        "p99_ms": pct["99"],
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
        "cpu_ms": 1000 * cpu / max(n, 1),
        "cores": cpu / wall,
        "split": "/".join(f"{100 * x / max(sum(spent), 1e-9):.0f}" for x in spent),
        "requests": n,
    }


class Ingest(threading.Thread):
    """Writes while the service is measured: ``rate`` times a second, one event (a random ML-100K user
    viewing a random item, timestamped now) through POST /v1/interactions."""

    def __init__(self, port: int, rate: float) -> None:
        super().__init__(name="ingest", daemon=True)
        self.url, self.rate = f"http://127.0.0.1:{port}/v1/interactions", rate
        self.sent = self.failed = 0
        self.done = threading.Event()

    def run(self) -> None:
        rng, due = random.Random(0), time.perf_counter()
        while not self.done.is_set():
            event = {"user_id": str(rng.randint(1, 943)), "item_id": str(rng.randint(1, 1682)), "type": "view"}
            body = json.dumps({"interactions": [event]}).encode()
            request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    self.sent += r.status in (200, 201)
            except OSError:
                self.failed += 1
            due += 1.0 / self.rate
            self.done.wait(max(0.0, due - time.perf_counter()))


def private_database(env: dict[str, str], workdir: Path) -> dict[str, str]:
    """A fresh copy of the benchmark database for a run that writes, so the imported data stays as it was."""
    src = workdir / "deeprec.db"
    dst = workdir / "deeprec-writes.db"
    for p in (dst, dst.with_name(dst.name + "-wal"), dst.with_name(dst.name + "-shm")):
        p.unlink(missing_ok=True)
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close(), b.close()
    return {**env, "DEEPREC_DATABASE_URL": f"sqlite:///{dst}"}


_CACHES = {  # the table's column -> the service's counter of look-ups
    "cache": re.compile(r'^deeprec_recommendation_cache_total\{result="(hit|miss)"\} ([\d.e+]+)$', re.M),
    "answers": re.compile(r'^deeprec_response_cache_total\{result="(hit|miss)"\} ([\d.e+]+)$', re.M),
}
_PROCESS = re.compile(r'^deeprec_process\{pid="(\d+)"\} 1\.0$', re.M)


def cache_counts(port: int, workers: int, tries: int = 60) -> dict[str, tuple[float, float]] | None:
    """{cache: (hits, misses)} of the service's caches (ranked candidates; whole answers), summed over its
    worker processes; None when not every worker answered a scrape (each worker keeps its own counters and
    each scrape reaches one of them: they are told apart by the process id they report, ``deeprec_process``)."""
    seen: dict[str, dict[str, tuple[float, float]]] = {}
    for _ in range(tries):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            continue
        process = _PROCESS.search(text)
        seen[process.group(1) if process else "?"] = {
            name: (float(c.get("hit", 0)), float(c.get("miss", 0)))
            for name, c in ((name, dict(rx.findall(text))) for name, rx in _CACHES.items())
        }
        if len(seen) >= workers:
            return {name: (sum(v[name][0] for v in seen.values()), sum(v[name][1] for v in seen.values()))
                    for name in _CACHES}  # fmt: skip
    return None


def median_row(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key in ("rps", "p50_ms", "p99_ms", "cpu_ms", "cores"):
        out[key] = statistics.median(r[key] for r in runs)
    for name in _CACHES:
        looked_up = sum(r.get(f"{name}_lookups", 0) for r in runs)
        out[f"{name}_hit_rate"] = sum(r.get(f"{name}_hits", 0) for r in runs) / looked_up if looked_up else None
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    out["rounds"] = len(runs)
    return out


def port_of(endpoint: str, port: int) -> int:
    return port + 1 if endpoint.startswith("floor") else port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def table(rows: list[dict]) -> str:
    floor = {r["connections"]: r for r in rows if r["endpoint"] == "floor"}
    lines = ["| endpoint | clients | req/s | p50 ms | p99 ms | req/s vs floor | p99 vs floor | server CPU ms/req "
             "| cores used | CPU split over workers % | answer cache hits | ranked cache hits | non-2xx |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        f = floor.get(r["connections"])
        ratio = f"{r['rps'] / f['rps']:.2f}" if f else ""
        p99 = f"{r['p99_ms'] / f['p99_ms']:.2f}" if f else ""
        hits = " | ".join("" if r.get(f"{c}_hit_rate") is None else f"{100 * r[f'{c}_hit_rate']:.1f}%"
                          for c in ("answers", "cache"))  # fmt: skip
        lines.append(f"| {r['endpoint']} | {r['connections']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {ratio} | {p99} | {r['cpu_ms']:.2f} | {r['cores']:.2f} | {r['split']} | "
                     f"{hits} | {r['non_2xx']} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=3, help="runs of each endpoint, in turn; the median is reported")
    p.add_argument("--connections", default="1,8,32")
    p.add_argument("--endpoints", default=",".join(ENDPOINTS))
    p.add_argument("--models", default="default")
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench-serve")
    p.add_argument("--device", default="auto")
    p.add_argument("--retrain", action="store_true")
    p.add_argument(
        "--train-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training override, e.g. epochs=10 (serving cost does not depend on it)",
    )
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--warmup", type=int, default=2,
                   help="seconds of warm-up per endpoint before measuring (runs of 2 s, 32 clients)")  # fmt: skip
    p.add_argument("--ingest-rate", type=float, default=0.0,
                   help="events per second written through POST /v1/interactions while the service is measured "
                   "(on a copy of the database); 0: none")  # fmt: skip
    p.add_argument("--cache-size", type=int, default=None,
                   help="the service's DEEPREC_RECOMMENDATION_CACHE_SIZE (0: off); default: its own")  # fmt: skip
    p.add_argument("--response-cache-mb", type=int, default=None,
                   help="the service's DEEPREC_RESPONSE_CACHE_MB (0: off); default: its own")  # fmt: skip
    p.add_argument("--wrk-threads", type=int, default=2,
                   help="wrk threads (at most one per connection): one may not load a floor enough")  # fmt: skip
    args = p.parse_args()
    if not ml100k_available():
        sys.exit(f"skipped: MovieLens 100K not found at {ml100k_dir()} (set DEEPREC_ML100K_DIR)")
    if subprocess.run(["which", "wrk"], capture_output=True).returncode:
        sys.exit("wrk not found: apt-get update && apt-get install -y wrk")
    args.workdir = args.workdir.resolve()
    params = {k: json.loads(v) for k, _, v in (x.partition("=") for x in args.train_param)}
    env = {**prepare(args.workdir, args.models, args.retrain, params), "DEEPREC_DEVICE": args.device}
    if args.cache_size is not None:
        env["DEEPREC_RECOMMENDATION_CACHE_SIZE"] = str(args.cache_size)
    if args.response_cache_mb is not None:
        env["DEEPREC_RESPONSE_CACHE_MB"] = str(args.response_cache_mb)
    if args.ingest_rate > 0:
        env = private_database(env, args.workdir)
    service = start("app.main:create_app", args.port, args.workers, env, factory=True)
    floor = start("bench.floor_app:app", args.port + 1, args.workers, {}, factory=False)
    rows: list[dict] = []
    loaded: dict[str, str] = {}
    writer: Ingest | None = None
    try:
        wait_ready(f"http://127.0.0.1:{args.port}/readyz", service)
        wait_ready(f"http://127.0.0.1:{args.port + 1}/v1/users/1/recommendations", floor)
        with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/v1/models", timeout=10) as r:
            loaded = {m["name"]: m["device"] for m in json.load(r)["models"] if m["loaded"]}
        endpoints = args.endpoints.split(",")
        if args.ingest_rate > 0:
            writer = Ingest(args.port, args.ingest_rate)
            writer.start()

        def pid_of(endpoint: str) -> int:
            return floor.pid if endpoint.startswith("floor") else service.pid

        def measure(endpoint: str, connections: int, duration: int) -> dict:
            cached = not endpoint.startswith("floor")
            before = cache_counts(args.port, args.workers) if cached else None
            row = run_wrk(port_of(endpoint, args.port), endpoint, connections, duration, args.workdir,
                          pid_of(endpoint), args.wrk_threads)  # fmt: skip
            if cached:
                time.sleep(0.2)  # requests cut off at the end of the run finish first
                after = cache_counts(args.port, args.workers)
                if before is not None and after is not None:  # else this run's share is not counted
                    for name, (hit, miss) in after.items():
                        row[f"{name}_hits"] = hit - before[name][0]
                        row[f"{name}_lookups"] = hit + miss - sum(before[name])
            return row

        # Warm-up in short runs: each wrk run opens new connections, and which uvicorn worker accepts them is
        # up to the kernel; many runs reach every worker, so every worker's caches are warm.
        for endpoint in endpoints:
            for _ in range(max(1, args.warmup // 2)):
                measure(endpoint, 32, min(2, args.warmup))
        # Concurrency outermost and several short rounds of every endpoint in turn: each endpoint is measured
        # next to its floor, and the median over rounds damps other load on a shared machine.
        for c in (int(x) for x in args.connections.split(",")):
            runs: dict[str, list[dict]] = {e: [] for e in endpoints}
            for _ in range(args.rounds):
                for endpoint in endpoints:
                    runs[endpoint].append(measure(endpoint, c, args.duration))
                    print(json.dumps(runs[endpoint][-1]), file=sys.stderr)
            rows += [median_row(r) for r in runs.values()]
        rows.sort(key=lambda r: (endpoints.index(r["endpoint"]), r["connections"]))
    finally:
        if writer is not None:
            writer.done.set()
            writer.join(15)
        stop(service)
        stop(floor)
    writes = {"sent": writer.sent, "failed": writer.failed} if writer is not None else None
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serve-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
        json.dumps({"args": vars(args), "rows": rows, "ingest": writes}, default=str, indent=1)
    )
    load = os.getloadavg()
    if writes:
        print(f"writes while measured: {writes['sent']} events at {args.ingest_rate:g}/s through POST "
              f"/v1/interactions ({writes['failed']} failed)")  # fmt: skip
    print(f"models served: {', '.join(f'{n} ({d})' for n, d in loaded.items())}")
    cache = "service default" if args.cache_size is None else args.cache_size
    answers = "service default" if args.response_cache_mb is None else f"{args.response_cache_mb} MiB"
    print(
        f"{args.workers} uvicorn workers per app, wrk -t{args.wrk_threads}, median of {args.rounds} runs of "
        f"{args.duration}s after {args.warmup}s of warm-up, models: {args.models}, cache size: {cache}, "
        f"response cache: {answers}, "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()

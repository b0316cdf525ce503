"""Background training and hot swap, measured through real processes on MovieLens-100K (or demo data).

    python bench/hotswap.py [--db sqlite|postgresql] [--epochs 15] [--swaps 10] [--poll 0.5]

An API (`deeprec serve`, embedded worker off) and a worker (`deeprec worker`) run as separate
processes on one database and model store, as in docker-compose. The script measures, from a third
process: request latency of the jobs API and of recommendations while idle and while a job trains
MF in the worker; the job's timings; and swap latency (activation request -> first response served
by the new version) over repeated activations, counting failed requests throughout.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.paths import ml100k_available, ml100k_dir  # noqa: E402

PG = "postgresql+psycopg://root@127.0.0.1:5432/test"


def deeprec(env: dict[str, str], *argv: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "app.cli", *argv], env=env, cwd=ROOT, stdout=out, stderr=out)


def must(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.wait() != 0:
        raise SystemExit(log.read_text()[-3000:])


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1e3 if values else float("nan")  # ms


def sample(http: httpx.Client, urls: list[str], until: callable, stats: dict[str, list[float]]) -> int:
    """One client, requests in turn until ``until()``; latencies per URL kind; returns failures."""
    failures = 0
    while not until():
        for kind, url in urls:
            t0 = time.perf_counter()
            r = http.get(url)
            stats.setdefault(kind, []).append(time.perf_counter() - t0)
            failures += r.status_code != 200
    return failures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--swaps", type=int, default=10)
    ap.add_argument("--poll", type=float, default=0.5, help="DEEPREC_MODEL_POLL_INTERVAL_S of the API")
    ap.add_argument("--idle-s", type=float, default=8.0)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="deeprec-hotswap-"))
    log = work / "processes.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPREC_")}
    env.update(DEEPREC_MODELS_DIR=str(work / "models"), DEEPREC_LOG_LEVEL="WARNING", DEEPREC_DEVICE="cpu",
               DEEPREC_MODEL_POLL_INTERVAL_S=str(args.poll), DEEPREC_TRAIN_THREADS="1")  # fmt: skip
    schema = None
    if args.db == "sqlite":
        env["DEEPREC_DATABASE_URL"] = f"sqlite:///{work / 'deeprec.db'}"
    else:
        import psycopg

        schema = f"bench_hotswap_{secrets.token_hex(3)}"
        with psycopg.connect(PG.replace("+psycopg", ""), autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{schema}"')
        env["DEEPREC_DATABASE_URL"] = f"{PG}?options=-csearch_path%3D{schema}"

    must(deeprec(env, "db", "upgrade", log=log), log)
    if ml100k_available():
        must(deeprec(env, "import", "movielens", str(ml100k_dir()), log=log), log)
        data, users = "ML-100K", [str(u) for u in range(1, 944)]
    else:
        must(deeprec(env, "demo-data", "--users", "943", "--items", "1682", "--events", "100000", log=log), log)
        data, users = "demo data (ML-100K absent)", None
    must(deeprec(env, "train", "--model", "popularity,mf", "--epochs", "3", "--quiet", log=log), log)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = deeprec({**env, "DEEPREC_EMBEDDED_WORKER": "false"}, "serve", "--port", str(port), log=log)
    worker = deeprec(env, "worker", "--poll", "0.2", log=log)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        users = users or [str(i) for i in range(1, 100)]
        rec = ("recommendations", f"/v1/users/{users[7]}/recommendations?model=mf&n=10")
        jobs = ("GET /v1/jobs", "/v1/jobs?limit=20")

        idle: dict[str, list[float]] = {}
        t_end = time.time() + args.idle_s
        failures = sample(http, [rec, jobs], lambda: time.time() > t_end, idle)

        body = {"models": ["mf"], "params": {"epochs": args.epochs, "patience": args.epochs}, "promote": "always"}
        job_id = http.post("/v1/train", json=body).json()["job_id"]
        busy: dict[str, list[float]] = {}
        state = {"job": None}

        def finished() -> bool:
            job = http.get(f"/v1/jobs/{job_id}").json()
            state["job"] = job
            return job["status"] in ("succeeded", "failed", "cancelled")

        urls = [rec, jobs, ("GET /v1/jobs/{id}", f"/v1/jobs/{job_id}")]
        failures += sample(http, urls, finished, busy)
        job = state["job"]
        assert job["status"] == "succeeded", job
        new = job["result"]["versions"][0]["version"]

        while http.get(rec[1]).json()["version"] != new:
            pass
        finished_at = datetime.fromisoformat(job["timings"]["finished_at"].replace("Z", "+00:00")).timestamp()
        first_swap = time.time() - finished_at  # the worker activated it just before finishing the job
        versions = [v["version"] for v in http.get("/v1/models/mf/versions").json()["versions"]]
        swaps: list[float] = []
        for i in range(args.swaps):
            target = versions[i % 2]
            t0 = time.perf_counter()
            assert http.post(f"/v1/models/mf/versions/{target}/activate").status_code == 200
            while (r := http.get(rec[1])).json()["version"] != target:
                failures += r.status_code != 200
            swaps.append(time.perf_counter() - t0)
        # Activated by another process (a worker, another API replica): this API learns by polling.
        from app.config import Settings
        from app.db.session import make_engine, make_sessionmaker
        from app.jobs.versions import activate_version

        engine = make_engine(Settings(_env_file=None, database_url=env["DEEPREC_DATABASE_URL"]))
        polled: list[float] = []
        with make_sessionmaker(engine)() as session:
            for i in range(args.swaps):
                target = versions[i % 2]
                t0 = time.perf_counter()
                activate_version(session=session, name="mf", version=target)
                while (r := http.get(rec[1])).json()["version"] != target:
                    failures += r.status_code != 200
                polled.append(time.perf_counter() - t0)
        engine.dispose()
    finally:
        http.close()
        for p in (api, worker):
            p.terminate()
            p.wait(60)
        if schema:
            import psycopg

            with psycopg.connect(PG.replace("+psycopg", ""), autocommit=True) as c:
                c.execute(f'DROP SCHEMA "{schema}" CASCADE')

    print(f"data: {data}; database: {args.db}; API poll interval {args.poll}s; worker train threads 1")
    print(f"load average: {os.getloadavg()[0]:.1f}; CPUs: {os.cpu_count()}")
    print("| request | idle p50 ms | idle p99 ms | while training p50 ms | while training p99 ms | n (training) |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in [rec[0], jobs[0], "GET /v1/jobs/{id}"]:
        a, b = idle.get(kind, []), busy.get(kind, [])
        print(
            f"| {kind} | {pct(a, 0.5):.1f} | {pct(a, 0.99):.1f} | {pct(b, 0.5):.1f} | {pct(b, 0.99):.1f} | {len(b)} |"
        )
    t = job["timings"]
    print(f"job: {args.epochs} MF epochs, queued {t['queued_s']}s, ran {t['running_s']}s; "
          f"result timings {job['result']['timings']}")  # fmt: skip
    print(f"job finished (version promoted by the worker) -> first response from it: {first_swap * 1e3:.0f} ms")
    for what, xs in (("POST .../activate on this API (it swaps at once)", swaps),
                     ("activation by another process (seen by polling)", polled)):  # fmt: skip
        print(f"{what}: activation -> first response from the new version over {len(xs)} swaps: "
              f"median {statistics.median(xs) * 1e3:.0f} ms, max {max(xs) * 1e3:.0f} ms")  # fmt: skip
    print(f"failed requests throughout: {failures}")


if __name__ == "__main__":
    main()

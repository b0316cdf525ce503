"""The first start as `make run` does it, timed: from the first command to the first personalized answer.

    python bench/first_run.py [--workdir var/bench-first-run] [--port N] [--follow] [--keep]

On a fresh SQLite database and model store under --workdir (emptied first unless --keep), runs the
commands of `make run` with this Python: `deeprec db upgrade`, `deeprec demo-data --if-empty`,
`deeprec train --model default --if-missing --quick-first`, then `deeprec serve`, and asks
GET /v1/users/u1/recommendations every 0.25 s until it answers from a personalized model (any model but
popularity). Prints a timeline (each command's seconds, ready, first personalized answer) and the
machine's load. With --follow it then waits for the background job and prints when each model went
live; a second `train --quick-first` is run at the end to show it trains nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {}
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="var/bench-first-run")
    ap.add_argument("--port", type=int, default=0, help="default: a free port")
    ap.add_argument("--follow", action="store_true", help="wait for the background job and run a second start")
    ap.add_argument("--keep", action="store_true", help="do not empty --workdir first")
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    work = (ROOT / args.workdir).resolve()
    if work.exists() and not args.keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEEPREC_DATABASE_URL": f"sqlite:///{work / 'deeprec.db'}",
           "DEEPREC_MODELS_DIR": str(work / "models_store"), "DEEPREC_LOG_FORMAT": "text"}  # fmt: skip
    deeprec = [sys.executable, "-m", "app.cli"]
    if not args.port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            args.port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{args.port}"
    print("load before:", os.getloadavg(), flush=True)
    t0 = time.monotonic()
    marks: list[tuple[str, float]] = []
    for cmd in (["db", "upgrade"], ["demo-data", "--if-empty"],
                ["train", "--model", "default", "--if-missing", "--quick-first"]):  # fmt: skip
        subprocess.run([*deeprec, *cmd], env=env, cwd=ROOT, check=True)
        marks.append((" ".join(cmd), time.monotonic() - t0))
    log = open(work / "serve.log", "w")  # noqa: SIM115
    server = subprocess.Popen([*deeprec, "serve", "--port", str(args.port)], env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        ready = first = None
        model = None
        while time.monotonic() - t0 < args.timeout:
            if ready is None and get(f"{base}/readyz")[0] == 200:
                ready = time.monotonic() - t0
                marks.append(("/readyz 200", ready))
            status, body = get(f"{base}/v1/users/u1/recommendations?n=10")
            if status == 200 and body.get("model") not in (None, "popularity") and body.get("items"):
                first = time.monotonic() - t0
                model = body["model"]
                marks.append((f"first personalized answer ({model})", first))
                break
            time.sleep(0.25)
        for what, at in marks:
            print(f"{at:8.1f}s  {what}")
        print("load after:", os.getloadavg(), flush=True)
        if first is None:
            print("no personalized answer in time")
            return 1
        if args.follow:
            live: dict[str, str] = {}
            while time.monotonic() - t0 < args.timeout:
                _, models = get(f"{base}/v1/models")
                for row in models.get("models", []):
                    version = row.get("active_version")
                    if row.get("loaded") and live.get(row["name"]) != version:
                        live[row["name"]] = version
                        print(f"{time.monotonic() - t0:8.1f}s  {row['name']} live ({version})", flush=True)
                _, jobs = get(f"{base}/v1/jobs")
                job = next(iter(jobs.get("jobs", [])), None)
                if job and job["status"] not in ("queued", "running") and job.get("live"):
                    print(f"{time.monotonic() - t0:8.1f}s  job {job['job_id']} {job['status']}")
                    break
                time.sleep(1.0)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    if args.follow:
        t1 = time.monotonic()
        out = subprocess.run([*deeprec, "train", "--model", "default", "--if-missing", "--quick-first"], env=env,
                             cwd=ROOT, check=True, capture_output=True, text=True)  # fmt: skip
        print(f"second start's train step: {time.monotonic() - t1:.1f}s: {out.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

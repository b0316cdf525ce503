"""The docker-compose topology without Docker: PostgreSQL, `init`, an API process, a worker process.

Every step runs the same `deeprec` commands as docker-compose.yml, as separate processes on a fresh
PostgreSQL schema and one shared model store: init migrates, loads demo data and trains a first
version; the API (`deeprec serve`, embedded worker off) queues a job that the separate worker
trains; the new versions are then seen through the API (hot swap), and one is rolled back.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Postgres
from tests.jobs.support import ROOT, stop, wait_for

pytestmark = pytest.mark.slow
DEEPREC = [sys.executable, "-m", "app.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def topology_env(postgres: Postgres, tmp_path: Path) -> Iterator[dict[str, str]]:
    """DEEPREC_* for every process: a fresh schema, a shared store, quick polls and heartbeats."""
    schema = f"deeprec_topology_{os.getpid()}_{secrets.token_hex(3)}"
    postgres.execute(f'CREATE SCHEMA "{schema}"')
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPREC_")}
    env.update(
        PYTHONPATH=str(ROOT),
        DEEPREC_DATABASE_URL=postgres.schema_url(schema),
        DEEPREC_MODELS_DIR=str(tmp_path / "models_store"),
        DEEPREC_DEVICE="cpu",
        DEEPREC_LOG_LEVEL="WARNING",
        DEEPREC_TRAIN_THREADS="1",
        DEEPREC_MODEL_POLL_INTERVAL_S="0.2",
        DEEPREC_JOB_HEARTBEAT_S="0.5",
    )
    try:
        yield env
    finally:
        postgres.execute(f'DROP SCHEMA "{schema}" CASCADE')


def spawn(env: dict[str, str], log: Path, *argv: str, **extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*DEEPREC, *argv], env={**env, **extra}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def test_compose_topology_trains_and_swaps(topology_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "processes.log"
    # init: the compose one-shot (demo data kept small here).
    for step in (["db", "upgrade"], ["demo-data", "--users", "60", "--items", "50", "--events", "2000"],
                 ["train", "--model", "popularity", "--quiet"]):  # fmt: skip
        proc = spawn(topology_env, log, *step)
        assert proc.wait(300) == 0, log.read_text()[-3000:]

    port = free_port()
    api = spawn(topology_env, log, "serve", "--port", str(port), DEEPREC_EMBEDDED_WORKER="false")
    worker = spawn(topology_env, log, "worker", "--poll", "0.2", DEEPREC_MIGRATE_ON_START="false")
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:

        def get(url: str) -> dict:
            r = http.get(url)
            assert r.status_code == 200, f"{url}: {r.status_code} {r.text}"
            return r.json()

        def ready() -> bool:
            assert api.poll() is None, log.read_text()[-3000:]
            try:
                return http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 180, 0.2, "the API to be ready")
        first = get("/v1/models/popularity/versions")["active_version"]
        assert first is not None  # trained by init, recorded in model_version
        assert get("/v1/users/u1/recommendations?model=popularity&n=5")["version"] == first

        r = http.post("/v1/train", json={"models": ["popularity", "mf"], "params": {"epochs": 2}, "promote": "always"})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        job = wait_for(lambda: (j := get(f"/v1/jobs/{job_id}"))["status"] in ("succeeded", "failed") and j, 300, 0.2)
        assert job["status"] == "succeeded", job["error"] or log.read_text()[-3000:]
        assert job["worker"].split(":")[1] == str(worker.pid)
        new = {v["model"]: v["version"] for v in job["result"]["versions"]}
        assert new["popularity"] != first

        # Hot swap, observed through the API: every API process polls model_version.
        wait_for(lambda: get("/v1/users/u1/recommendations?model=mf&n=5")["version"] == new["mf"], 60, 0.1)
        wait_for(lambda: get("/v1/users/u1/recommendations?model=popularity&n=5")["version"] == new["popularity"])
        models = {m["name"]: m for m in get("/v1/models")["models"]}
        assert models["mf"]["active_version"] == new["mf"] and models["mf"]["loaded"]

        # Roll back popularity to init's version.
        r = http.post(f"/v1/models/popularity/versions/{first}/activate")
        assert r.status_code == 200 and r.json()["previous_version"] == new["popularity"]
        wait_for(lambda: get("/v1/users/u1/recommendations?model=popularity&n=5")["version"] == first)
    finally:
        http.close()
        codes = stop(api), stop(worker)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so the API's status may be -15.
    assert codes[0] in (0, -15) and codes[1] == 0, log.read_text()[-3000:]

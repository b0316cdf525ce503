"""Training runs in a separate worker process: the API keeps answering, cancel, crash, shutdown, embedded worker.

The jobs here train MF for far more epochs than they will run; each test stops them (cancel,
SIGKILL, SIGTERM) once they are seen running. No assertion is on wall time: waits only guard hangs.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.jobs.versions import list_versions
from app.main import create_app
from tests.jobs.support import FAST, alive, run_job, seed_database, start_worker, stop, wait_for

pytestmark = pytest.mark.slow  # starts worker and server processes

LONG = {"epochs": 100_000, "patience": 100_000, "batch_size": 128}  # stopped from outside
FAST_BEATS = {"job_heartbeat_s": 0.2, "train_threads": 1}


def job_of(client: TestClient, job_id: int) -> dict:
    r = client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def training(client: TestClient, job_id: int, epoch: int = 2) -> bool:
    job = job_of(client, job_id)
    p = job["progress"] or {}
    return job["status"] == "running" and p.get("stage") == "epoch" and (p.get("epoch") or 0) >= epoch


def test_worker_lifecycle(make_client, make_settings, settings, session, tmp_path: Path):
    """One story: the API answers while a job trains; cancel; SIGTERM hands a job back; a crash is reaped
    and leaves the serving model untouched."""
    seed_database(session)
    v1 = run_job(settings, session)["mf"]["version"]  # the version being served throughout
    policy = {**FAST_BEATS, "job_stale_after_s": 3.0, "job_max_attempts": 1}
    client = make_client(**policy)  # its background thread also reaps stale jobs
    log = tmp_path / "worker.log"
    worker = start_worker(make_settings(**policy), log)
    try:
        # 1. Requests are answered while the job trains in the worker process; then it is cancelled.
        job_id = client.post("/v1/train", json={"models": ["mf"], "params": LONG}).json()["job_id"]
        wait_for(lambda: training(client, job_id), what="the job to train")
        assert job_of(client, job_id)["worker"].split(":")[1] == str(worker.pid)  # not this (the API) process
        failures: list[str] = []
        epochs_seen: list[int] = []

        def requests(n: int) -> None:
            for _ in range(10):
                for url in ("/healthz", f"/v1/jobs/{job_id}", "/v1/jobs", f"/v1/users/u{n}/recommendations?n=5"):
                    r = client.get(url)
                    if r.status_code != 200:
                        failures.append(f"{url}: {r.status_code}")
                    elif url == f"/v1/jobs/{job_id}":
                        epochs_seen.append(r.json()["progress"]["epoch"])

        threads = [threading.Thread(target=requests, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        assert job_of(client, job_id)["status"] == "running"  # every request above completed while it trained
        wait_for(lambda: job_of(client, job_id)["progress"]["epoch"] > max(epochs_seen), what="training to go on")
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["cancel_requested"]
        job = wait_for(lambda: (j := job_of(client, job_id))["status"] == "cancelled" and j, what="the cancel")
        assert job["timings"]["finished_at"] and job["progress"]["epoch"] < LONG["epochs"]
        assert [v.version for v in list_versions(session=session, name="mf")] == [v1]  # nothing published

        # 2. SIGTERM: the worker leaves at the next epoch and hands the job back (not an attempt).
        job_id = client.post("/v1/train", json={"models": ["mf"], "params": LONG}).json()["job_id"]
        wait_for(lambda: training(client, job_id), what="the job to train")
        assert stop(worker) == 0, log.read_text()
        job = job_of(client, job_id)
        assert job["status"] == "queued" and job["attempts"] == 0 and job["worker"] is None

        # 3. The next worker takes it and dies mid-training: the job is reaped, serving is untouched.
        worker = start_worker(make_settings(**policy), log)
        wait_for(lambda: training(client, job_id), what="the job to train again")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        job = wait_for(lambda: (j := job_of(client, job_id))["status"] == "failed" and j, what="the reaper")
        assert "heartbeat" in job["error"] and "after 1 attempt" in job["error"]
    finally:
        stop(worker)
    rec = client.get("/v1/users/u1/recommendations", params={"model": "mf"})
    assert rec.status_code == 200 and rec.json()["version"] == v1
    assert [v.version for v in list_versions(session=session, name="mf")] == [v1]
    assert sorted(p.name for p in (settings.models_dir / "mf").iterdir() if p.is_dir()) == [v1]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the single-machine default; process handling only
def test_serve_starts_and_stops_one_embedded_worker(make_settings, session):
    seed_database(session)
    settings = make_settings(embedded_worker=True, **FAST_BEATS)
    with TestClient(create_app(settings)) as client:
        proc = client.app.state.worker_supervisor.proc
        assert alive(proc.pid) and proc.pid != os.getpid()
        job_id = client.post("/v1/train", json={"models": ["popularity"], "params": FAST}).json()["job_id"]
        job = wait_for(lambda: (j := job_of(client, job_id))["status"] in ("succeeded", "failed") and j, 120)
        assert job["status"] == "succeeded", job["error"]
        assert job["worker"].split(":")[1] == str(proc.pid)
        version = job["result"]["versions"][0]["version"]
        wait_for(lambda: client.get("/v1/models/popularity/versions").json()["active_version"] == version)
    assert proc.poll() is not None  # stopped with the service

"""The first start as `make run` does it, in processes on a small synthetic set.

`deeprec train --model default --if-missing --quick-first` trains popularity and a time-capped MF,
queues the rest of the default set as one first-run job and exits; the service serves and is ready
with those two; a worker process trains the job, publishing each model as it is trained (MF, then
EASE, GRU4Rec, content, the hybrid and the rating stack; popularity reused); a second start trains and
queues nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.api.jobs_app import worker_env
from app.jobs import first_run, queue
from app.jobs.versions import list_versions
from tests.jobs.support import ROOT, seed_database, start_worker, stop, wait_for

pytestmark = pytest.mark.slow  # starts CLI and worker processes

SMALL = ["--epochs", "2", "--batch-size", "128"]  # every model trains for real, briefly


def first_start(settings) -> subprocess.CompletedProcess[str]:
    env = {**worker_env(settings), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "app.cli", "train", "--model", "default", "--if-missing", "--quick-first", *SMALL]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def versions(session, name: str) -> list[str]:
    session.commit()
    return [v.version for v in list_versions(session=session, name=name)]


def test_first_start_serves_the_quick_models_and_queues_the_rest(
    make_client, make_settings, settings, session, tmp_path: Path
):
    seed_database(session)
    out = first_start(settings)
    assert "(quick)" in out.stdout and "queued" in out.stdout, out.stdout
    assert versions(session, "popularity") and versions(session, "mf")
    for name in ("ease", "gru4rec", "content", "hybrid", "hybrid-rating"):
        assert versions(session, name) == [], name  # left to the job
    jobs = queue.list_jobs(session=session)
    assert len(jobs) == 1
    job = jobs[0]
    assert (job.status, job.trigger, job.models) == ("queued", first_run.TRIGGER, ["default"])
    quick_mf = versions(session, "mf")[0]

    # The service is ready with the quick models and personalizes; /v1/models names what is still training.
    client = make_client(embedded_worker=False)
    wait_for(lambda: client.get("/readyz").status_code == 200, what="/readyz")
    r = client.get("/v1/users/u1/recommendations?n=5")
    assert r.status_code == 200 and r.json()["model"] == "mf" and r.json()["items"], r.text
    rows = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert rows["mf"]["loaded"] and rows["popularity"]["loaded"]
    training = {n for n, m in rows.items() if m["training_job"] == job.id}
    assert training == {"mf", "ease", "gru4rec", "content", "hybrid", "hybrid-rating"}

    # A worker process trains the job: each model published as it is trained, the hybrid after its members,
    # then the rating stack (the data has ratings), which serves no recommendation.
    log = tmp_path / "worker.log"
    worker = start_worker(make_settings(log_level="INFO", log_format="text"), log)
    try:
        done = wait_for(
            lambda: (j := queue.get_job(session=session, job_id=job.id)) and j.status not in queue.OPEN and j,
            timeout_s=600, every_s=0.5, what="the first-run job",
        )  # fmt: skip
        session.commit()
    finally:
        stop(worker)
    assert done.status == "succeeded", (done.error, log.read_text()[-3000:])
    published = [v["model"] for v in done.result["versions"]]
    assert published == ["mf", "ease", "gru4rec", "content", "hybrid", "hybrid-rating"]
    assert done.result["reused"] == ["popularity"]
    assert len(versions(session, "popularity")) == 1 and quick_mf in versions(session, "mf")
    text = log.read_text()
    assert "model(s) left" in text and "ETA" in text  # the worker's log says where the job is
    progress = done.progress or {}
    assert progress["model"] == "hybrid-rating" and progress["models_left"] == 0 and progress["pending"] == []
    wait_for(lambda: client.get("/v1/users/u1/recommendations?n=5").json()["model"] == "hybrid", what="hybrid live")
    assert all(m["training_job"] is None for m in client.get("/v1/models").json()["models"])

    # The second start trains nothing and queues nothing.
    names = ("popularity", "mf", "ease", "gru4rec", "content", "hybrid", "hybrid-rating")
    before = {n: versions(session, n) for n in names}
    out = first_start(settings)
    assert "nothing to train" in out.stdout, out.stdout
    assert len(queue.list_jobs(session=session)) == 1
    assert {n: versions(session, n) for n in before} == before

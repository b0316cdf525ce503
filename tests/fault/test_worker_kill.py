"""kill -9 of the embedded worker mid-training: the supervisor restarts it, the job is retried by the new
worker without the dead attempt's progress, the served version never changes and the store holds no
half-written version."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.session import make_engine, make_sessionmaker
from app.jobs.publish import open_store
from app.jobs.versions import list_versions
from tests.fault.support import Service
from tests.jobs.support import run_job, seed_database, wait_for

pytestmark = pytest.mark.slow
LONG = {"epochs": 100_000, "patience": 100_000, "batch_size": 128}  # cancelled from outside


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # process handling; the queue runs on both elsewhere
def test_a_killed_worker_is_restarted_and_its_job_retried(
    make_settings: Callable[..., Settings], session: Session, tmp_path: Path
) -> None:
    seed_database(session)
    settings = make_settings(embedded_worker=True, job_heartbeat_s=0.5, train_threads=1, job_max_attempts=2)
    served = run_job(settings, session)["mf"]["version"]
    service = Service(settings, tmp_path / "serve.log").start()
    http = service.http

    def job() -> dict[str, Any]:
        r = http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def epoch_of(j: dict[str, Any]) -> int:
        return int((j["progress"] or {}).get("epoch") or 0) if j["status"] == "running" else 0

    try:
        job_id = http.post("/v1/train", json={"models": ["mf"], "params": LONG, "promote": "always"}).json()["job_id"]
        first = wait_for(lambda: (j := job()) and epoch_of(j) >= 2 and j, 120, 0.05, "the job to train")
        pid = int(first["worker"].split(":")[1])
        os.kill(pid, signal.SIGKILL)

        # Handed back at once (the supervisor saw the exit; no 60 s heartbeat wait), without its progress.
        queued = wait_for(lambda: (j := job())["status"] == "queued" and j, 60, 0.02, "the job to be handed back")
        assert queued["progress"] is None and "exited" in queued["error"] and queued["worker"] is None
        second = wait_for(lambda: (j := job())["attempts"] == 2 and j["worker"] and j, 120, 0.05, "the retry")
        assert int(second["worker"].split(":")[1]) != pid  # a new worker process took it
        worker = wait_for(lambda: (c := http.get("/readyz").json()["checks"]["worker"])["ok"] and c, 60, 0.1)
        assert "restarted 1 time(s)" in worker["detail"]

        rec = http.get("/v1/users/u1/recommendations", params={"model": "mf"}).json()
        assert rec["version"] == served  # nothing was published meanwhile
        assert http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        wait_for(lambda: job()["status"] == "cancelled", 120, 0.1, "the cancel")
    finally:
        service.stop()

    engine = make_engine(settings)
    with make_sessionmaker(engine)() as s:
        recorded = [v.version for v in list_versions(session=s, name="mf")]
        store = open_store(settings, make_sessionmaker(engine))
        on_disk = sorted(p.name for p in (settings.models_dir / "mf").iterdir() if p.is_dir())
        assert recorded == on_disk == [served]  # no half-written folder, no row without its folder
        store.verify("mf", served)
    engine.dispose()

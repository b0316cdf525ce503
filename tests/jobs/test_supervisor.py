"""The supervised embedded worker (issue 16 item 9), played by a sleeping Python: a dead one is reaped, its
job handed back at once, a new one started after a doubling backoff, and readiness says when none is alive.
tests/fault/test_worker_kill.py kills a real one mid-training."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from app.api import jobs_app
from app.api.jobs_app import WorkerSupervisor
from app.api.routes.health import NotReady
from app.config import Settings
from app.db.session import make_engine, make_sessionmaker
from app.jobs import queue
from tests.jobs.support import wait_for

pytestmark = pytest.mark.slow  # starts processes


def sleeper(_settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return False


@pytest.fixture
def supervisor(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerSupervisor]:
    monkeypatch.setattr(jobs_app, "RESTART_MIN_S", 0.3)
    engine = make_engine(settings)
    sup = WorkerSupervisor(settings, make_sessionmaker(engine), spawn=sleeper, poll_s=0.02)
    sup.start()
    yield sup
    sup.stop()
    engine.dispose()


def test_a_killed_worker_is_reaped_and_restarted_with_backoff(supervisor: WorkerSupervisor) -> None:
    first = supervisor.proc
    assert first is not None and "embedded worker pid" in supervisor.check(None)  # type: ignore[arg-type]
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: supervisor.last_exit == -signal.SIGKILL, 30, 0.01, "the exit to be seen")
    assert not zombie(first.pid)
    with pytest.raises(NotReady, match="no embedded worker alive"):  # within the 0.3 s backoff
        supervisor.check(None)  # type: ignore[arg-type]
    second = wait_for(lambda: supervisor.proc is not first and supervisor.proc, 30, 0.01, "a new worker")
    assert second.poll() is None and supervisor.restarts == 1
    assert "restarted 1 time(s)" in supervisor.check(None)  # type: ignore[arg-type]

    os.kill(second.pid, signal.SIGKILL)  # dies again at once: the wait doubles
    wait_for(lambda: supervisor.last_exit is not None and supervisor.restart_at is not None, 30, 0.01)
    wait_for(lambda: supervisor.proc is not second and supervisor.restarts == 2, 30, 0.01, "a third worker")
    assert supervisor.proc is not None and supervisor.proc.poll() is None


def test_the_dead_workers_job_goes_back_to_the_queue_at_once(supervisor: WorkerSupervisor, session: Session) -> None:
    proc = supervisor.proc
    assert proc is not None
    job_id = queue.enqueue(session=session, models=["mf"]).job.id
    claim = queue.claim(session=session, worker=f"{socket.gethostname()}:{proc.pid}:beef")
    assert claim is not None
    queue.report_progress(session=session, claim=claim, progress={"model": "mf", "stage": "epoch", "epoch": 3})
    os.kill(proc.pid, signal.SIGKILL)

    def requeued() -> bool:
        job = queue.get_job(session=session, job_id=job_id)
        session.commit()
        return job is not None and job.status == "queued"

    wait_for(requeued, 30, 0.02, "the job to be handed back")  # not after DEEPREC_JOB_STALE_AFTER_S (60 s)
    job = queue.get_job(session=session, job_id=job_id)
    assert job is not None and not job.progress and "exited" in (job.error or "")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_reports_the_embedded_worker_in_readiness(make_client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_app, "spawn_worker", sleeper)
    monkeypatch.setattr(jobs_app, "RESTART_MIN_S", 30.0)  # stays down for the look
    client = make_client(embedded_worker=True)
    sup: WorkerSupervisor = client.app.state.worker_supervisor
    assert client.get("/readyz").json()["checks"]["worker"]["ok"]
    assert sup.proc is not None
    os.kill(sup.proc.pid, signal.SIGKILL)
    wait_for(lambda: client.get("/readyz").status_code == 503, 30, 0.02, "readiness to drop")
    assert "no embedded worker alive (last exit code -9)" in client.get("/readyz").json()["checks"]["worker"]["detail"]

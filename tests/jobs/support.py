"""Shared by the job tests: a small synthetic data set in the database, and worker helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.api.jobs_app import worker_env
from app.config import Settings
from app.db.repository import ItemUpsert, add_interactions, upsert_items
from app.jobs import queue
from app.jobs.worker import Worker
from tests.recsys.synthetic import items_frame, taste_frame

N_USERS, N_ITEMS = 40, 30
FAST = {"epochs": 2, "batch_size": 128}  # a real but short training run
ROOT = Path(__file__).resolve().parents[2]


def seed_database(session: Session, n_users: int = N_USERS, n_items: int = N_ITEMS) -> None:
    items = items_frame(n_items)
    upsert_items(
        session=session,
        items=[ItemUpsert(r.item_id, r.title, list(r.categories), dict(r.attributes)) for r in items.itertuples()],
    )
    events = taste_frame(n_users=n_users, n_items=n_items, per_user=12).assign(type="rating")
    add_interactions(session=session, rows=events)
    session.commit()


def run_job(
    settings: Settings,
    session: Session,
    models: tuple[str, ...] = ("mf",),
    promote: str = "auto",
    params: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, dict[str, Any]]:
    """Queue a job (``params``: FAST) and run it with a worker in this test process; returns its published
    versions by model."""
    status, job = run_once(settings, session, models, promote, params, **overrides)
    assert status == "succeeded" and job.result is not None
    return {v["model"]: v for v in job.result["versions"]}


def run_once(
    settings: Settings,
    session: Session,
    models: tuple[str, ...] = ("mf",),
    promote: str = "auto",
    params: dict[str, Any] | None = None,
    **overrides: Any,
) -> tuple[str, Any]:
    """Queue a job and let a worker in this test process take it: (what run_once answered, the job after)."""
    job_id = queue.enqueue(session=session, models=list(models), params=params or FAST, promote=promote).job.id
    worker = Worker(settings.model_copy(update=overrides))
    try:
        status = worker.run_once()
    finally:
        worker.engine.dispose()
    job = queue.get_job(session=session, job_id=job_id)
    session.commit()
    assert job is not None
    return status, job


def wait_for(check: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.05, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s`` (a hang guard, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what or check}")


def start_worker(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """A worker (`deeprec worker`) in its own process on the test's settings, logging to ``log``."""
    env = worker_env(settings)
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "app.jobs.worker", "--poll", "0.1", *args]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True

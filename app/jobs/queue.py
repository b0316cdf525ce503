"""The training queue in the database: enqueue (deduplicated), claim, heartbeat, progress, finish, reap.

Each function is one transaction and commits before it returns, so a claim or a heartbeat is never
held open. Claims are exclusive: PostgreSQL locks the oldest queued row with FOR UPDATE SKIP LOCKED;
SQLite takes it with a conditional UPDATE ... WHERE status = 'queued' and checks the row count.
A worker owns a job while (worker, attempts) match and the job runs; every write it makes checks that,
so a worker the reaper gave up on cannot overwrite the job's next attempt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, and_, cast, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.tables import TrainingJob

OPEN = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
PROMOTE = ("auto", "always", "never")


def now() -> datetime:
    return datetime.now(UTC)


def dedupe_key(models: Sequence[str], params: dict[str, Any] | None = None, promote: str = "auto") -> str:
    """The sorted model set, plus a digest of the parameters and promotion rule when they are not the defaults.

    Two requests share a job only when they ask for the same thing: a rating job is never answered
    with a queued implicit one for the same models.
    """
    key = ",".join(sorted(set(models)))
    if params or promote != "auto":
        spec = json.dumps({"params": params or {}, "promote": promote}, sort_keys=True, default=str)
        key += "|" + hashlib.sha256(spec.encode()).hexdigest()[:16]
    return key


@dataclass(frozen=True)
class Enqueued:
    job: TrainingJob
    created: bool  # False: an open job for the same models already existed and is returned


@dataclass(frozen=True)
class Claim:
    """What a worker holds: the job row as claimed and the (worker, attempt) pair that proves ownership."""

    job: TrainingJob
    worker: str
    attempt: int


@dataclass(frozen=True)
class Signal:
    owned: bool  # False: the job was reaped or finished elsewhere; stop working on it
    cancel: bool  # a cancel was requested


def get_job(*, session: Session, job_id: int) -> TrainingJob | None:
    return session.get(TrainingJob, job_id, populate_existing=True)


def list_jobs(*, session: Session, limit: int = 50, status: str | None = None) -> list[TrainingJob]:
    """Newest first."""
    stmt = select(TrainingJob).order_by(TrainingJob.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(TrainingJob.status == status)
    return list(session.scalars(stmt))


def open_job(
    *, session: Session, models: Sequence[str], params: dict[str, Any] | None = None, promote: str = "auto"
) -> TrainingJob | None:
    key = dedupe_key(models, params, promote)
    stmt = select(TrainingJob).where(TrainingJob.dedupe_key == key, TrainingJob.status.in_(OPEN))
    return session.scalars(stmt.execution_options(populate_existing=True)).first()


def enqueue(
    *,
    session: Session,
    models: Sequence[str],
    params: dict[str, Any] | None = None,
    promote: str = "auto",
    trigger: str = "api",
) -> Enqueued:
    """Queue a job for ``models``, or return the queued or running job for the same models, params and promote.

    A partial unique index (one open job per dedupe key) makes this safe between processes: the
    loser of a concurrent insert gets the winner's job.
    """
    if promote not in PROMOTE:
        raise ValueError(f"promote must be one of {PROMOTE}, not {promote!r}")
    existing = open_job(session=session, models=models, params=params, promote=promote)
    if existing is not None:
        return Enqueued(existing, created=False)
    job = TrainingJob(
        models=list(models), dedupe_key=dedupe_key(models, params, promote), params=dict(params or {}), promote=promote,
        trigger=trigger, status="queued", attempts=0, cancel_requested=False, created_at=now(),
    )  # fmt: skip
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = open_job(session=session, models=models, params=params, promote=promote)
        if existing is None:  # the other job finished in between: try once more
            return enqueue(session=session, models=models, params=params, promote=promote, trigger=trigger)
        return Enqueued(existing, created=False)
    return Enqueued(job, created=True)


def _take(session: Session, job_id: Any, worker: str) -> int | None:
    """queued -> running for this worker; the job id, or None when someone else took it first.

    ``job_id`` may be a scalar subquery: on SQLite the pick and the take are then one statement.
    """
    at = now()
    taken = session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == "queued")
        .values(
            status="running",
            worker=worker,
            attempts=TrainingJob.attempts + 1,
            started_at=at,
            heartbeat_at=at,
            progress=None,
        )  # fmt: skip
        .returning(TrainingJob.id)
    ).scalar()
    return None if taken is None else int(taken)


def claim(*, session: Session, worker: str) -> Claim | None:
    """Take the oldest queued job for ``worker``, or None when there is none."""
    oldest = select(TrainingJob.id).where(TrainingJob.status == "queued").order_by(TrainingJob.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        # Rows other workers are claiming are skipped, not waited for.
        picked = session.scalar(oldest.with_for_update(skip_locked=True))
        job_id = None if picked is None else _take(session, picked, worker)
    else:
        # SQLite has no row locks: one conditional UPDATE picks and takes; writers are serialised.
        job_id = _take(session, oldest.scalar_subquery(), worker)
    if job_id is None:
        session.rollback()
        return None
    session.commit()
    job = get_job(session=session, job_id=job_id)
    session.commit()
    assert job is not None
    return Claim(job, worker, job.attempts)


def _owned(claim: Claim) -> ColumnElement[bool]:
    return and_(
        TrainingJob.id == claim.job.id,
        TrainingJob.status == "running",
        TrainingJob.worker == claim.worker,
        TrainingJob.attempts == claim.attempt,
    )


def _write(session: Session, claim: Claim, **values: Any) -> Signal:
    result = session.execute(
        update(TrainingJob).where(_owned(claim)).values(**values).returning(TrainingJob.cancel_requested)
    )
    row = result.first()
    session.commit()
    return Signal(owned=row is not None, cancel=bool(row and row[0]))


def heartbeat(*, session: Session, claim: Claim) -> Signal:
    return _write(session, claim, heartbeat_at=now())


def report_progress(*, session: Session, claim: Claim, progress: dict[str, Any]) -> Signal:
    """Store the progress (model, epoch of epochs, validation metric); also counts as a heartbeat."""
    return _write(session, claim, progress=progress, heartbeat_at=now())


def set_snapshot(*, session: Session, claim: Claim, snapshot_max_id: int | None) -> Signal:
    return _write(session, claim, snapshot_max_id=snapshot_max_id, heartbeat_at=now())


def finish(*, session: Session, claim: Claim, result: dict[str, Any]) -> bool:
    at = now()
    return _write(session, claim, status="succeeded", result=result, error=None, finished_at=at, heartbeat_at=at).owned


def fail(*, session: Session, claim: Claim, error: str, result: dict[str, Any] | None = None) -> bool:
    at = now()
    return _write(session, claim, status="failed", error=error, result=result, finished_at=at, heartbeat_at=at).owned


def confirm_cancel(*, session: Session, claim: Claim, result: dict[str, Any] | None = None) -> bool:
    """The worker stopped between epochs because a cancel was requested."""
    at = now()
    return _write(session, claim, status="cancelled", result=result, finished_at=at, heartbeat_at=at).owned


def release(*, session: Session, claim: Claim) -> bool:
    """Hand a job back to the queue (the worker is shutting down): not counted as an attempt."""
    return _write(
        session, claim, status="queued", worker=None, started_at=None, heartbeat_at=None,
        attempts=TrainingJob.attempts - 1, progress=None,
    ).owned  # fmt: skip


def cancel(*, session: Session, job_id: int) -> TrainingJob | None:
    """Queued: cancelled at once. Running: flagged; its worker stops at the next epoch. Else unchanged."""
    at = now()
    session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=at)
    )
    session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == "running")
        .values(cancel_requested=True)
    )
    session.commit()
    return get_job(session=session, job_id=job_id)


@dataclass(frozen=True)
class Reaped:
    job_id: int
    status: str  # queued (re-queued), failed or cancelled


def reap_stale(
    *,
    session: Session,
    stale_after_s: float,
    max_attempts: int,
    at: datetime | None = None,
    dead_worker: str | None = None,
) -> list[Reaped]:
    """Running jobs whose worker stopped heartbeating: re-queued while attempts remain, else failed.

    With ``dead_worker`` (a worker name prefix, ``host:pid:``), the running jobs of a worker known to
    have exited are taken at once instead, whatever their heartbeat. A job with a pending cancel is
    cancelled instead. Each is one conditional UPDATE that re-checks the heartbeat, so a heartbeat
    landing meanwhile wins and nothing is read then written. A re-queued job drops the dead attempt's
    progress: it is not the next attempt's.
    """
    at = at or now()
    who = literal("worker ") + func.coalesce(TrainingJob.worker, "?")
    if dead_worker is None:
        cutoff = at - timedelta(seconds=stale_after_s)
        stale = and_(TrainingJob.status == "running", TrainingJob.heartbeat_at < cutoff)
        why = who + f" sent no heartbeat for {stale_after_s:g}s"
    else:
        stale = and_(TrainingJob.status == "running", TrainingJob.worker.startswith(dead_worker, autoescape=True))
        why = who + " exited"
    attempts = cast(TrainingJob.attempts, String)
    rules: list[tuple[str, ColumnElement[bool], dict[str, Any]]] = [
        ("cancelled", TrainingJob.cancel_requested.is_(True), {"finished_at": at, "error": why}),
        ("queued", and_(~TrainingJob.cancel_requested, TrainingJob.attempts < max_attempts),
         {"worker": None, "started_at": None, "heartbeat_at": None, "progress": None,
          "error": why + "; re-queued after attempt " + attempts + f" of {max_attempts}"}),
        ("failed", and_(~TrainingJob.cancel_requested, TrainingJob.attempts >= max_attempts),
         {"finished_at": at, "error": why + "; failed after " + attempts + " attempt(s)"}),
    ]  # fmt: skip
    out: list[Reaped] = []
    for status, rule, values in rules:
        rows = session.execute(
            update(TrainingJob).where(stale, rule).values(status=status, **values).returning(TrainingJob.id)
        ).scalars()
        out += [Reaped(int(job_id), status) for job_id in rows]
    session.commit()
    return out

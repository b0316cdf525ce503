"""Queue semantics on SQLite and PostgreSQL: dedupe, exclusive claims, ownership, cancel, reaping."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.session import make_engine, make_sessionmaker
from app.jobs import queue


def test_enqueue_dedupes_open_jobs(session: Session) -> None:
    first = queue.enqueue(session=session, models=["mf", "popularity"], params={"epochs": 2})
    again = queue.enqueue(session=session, models=["popularity", "mf"], params={"epochs": 2})
    other = queue.enqueue(session=session, models=["mf"])
    assert first.created and not again.created and other.created
    assert again.job.id == first.job.id and other.job.id != first.job.id
    assert first.job.status == "queued" and first.job.params == {"epochs": 2} and first.job.promote == "auto"
    # Same models but another request: its own job, never silently answered by the first one.
    rating = queue.enqueue(session=session, models=["mf"], params={"objective": "rating"})
    never = queue.enqueue(session=session, models=["mf"], promote="never")
    assert rating.created and never.created and len({other.job.id, rating.job.id, never.job.id}) == 3
    assert rating.job.params == {"objective": "rating"} and never.job.promote == "never"

    claim = queue.claim(session=session, worker="w1")
    assert claim is not None and claim.job.id == first.job.id  # oldest first
    running = queue.enqueue(session=session, models=["mf", "popularity"], params={"epochs": 2})
    assert running.job.id == first.job.id  # running counts
    assert queue.finish(session=session, claim=claim, result={"ok": True})
    fresh = queue.enqueue(session=session, models=["mf", "popularity"], params={"epochs": 2})
    assert fresh.created and fresh.job.id not in (first.job.id, other.job.id)


def test_concurrent_enqueues_make_one_job(settings: Settings) -> None:
    engine = make_engine(settings)
    ids: list[int] = []
    barrier = threading.Barrier(4)

    def enqueue() -> None:
        with make_sessionmaker(engine)() as s:
            barrier.wait()
            ids.append(queue.enqueue(session=s, models=["gru4rec"]).job.id)

    threads = [threading.Thread(target=enqueue) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert len(ids) == 4 and len(set(ids)) == 1


def test_claims_are_exclusive_across_workers(settings: Settings, session: Session) -> None:
    jobs = [queue.enqueue(session=session, models=[f"m{i}"]).job.id for i in range(6)]
    engines: list[Engine] = [make_engine(settings) for _ in range(3)]  # one connection pool per "process"
    claimed: list[tuple[str, int]] = []
    barrier = threading.Barrier(len(engines))

    def work(n: int) -> None:
        with make_sessionmaker(engines[n])() as s:
            barrier.wait()
            while (c := queue.claim(session=s, worker=f"w{n}")) is not None:
                claimed.append((c.worker, c.job.id))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert sorted(job_id for _, job_id in claimed) == jobs  # every job once, none twice
    for worker, job_id in claimed:
        job = queue.get_job(session=session, job_id=job_id)
        assert job is not None and job.status == "running" and job.worker == worker and job.attempts == 1
    assert queue.claim(session=session, worker="late") is None


def test_progress_heartbeat_and_finish(session: Session) -> None:
    job_id = queue.enqueue(session=session, models=["mf"]).job.id
    claim = queue.claim(session=session, worker="w")
    assert claim is not None and claim.attempt == 1
    sig = queue.report_progress(session=session, claim=claim, progress={"model": "mf", "epoch": 2, "epochs": 5})
    assert sig.owned and not sig.cancel
    assert queue.heartbeat(session=session, claim=claim).owned
    job = queue.get_job(session=session, job_id=job_id)
    assert job is not None and job.progress == {"model": "mf", "epoch": 2, "epochs": 5}
    assert job.started_at is not None and job.heartbeat_at is not None and job.heartbeat_at >= job.started_at
    assert queue.finish(session=session, claim=claim, result={"versions": []})
    job = queue.get_job(session=session, job_id=job_id)
    assert job is not None and job.status == "succeeded" and job.finished_at is not None
    assert not queue.heartbeat(session=session, claim=claim).owned  # finished: no longer anyone's


def test_failure_records_the_error(session: Session) -> None:
    job_id = queue.enqueue(session=session, models=["mf"]).job.id
    claim = queue.claim(session=session, worker="w")
    assert claim is not None
    assert queue.fail(session=session, claim=claim, error="ValueError: boom")
    job = queue.get_job(session=session, job_id=job_id)
    assert job is not None and job.status == "failed" and job.error == "ValueError: boom"


def test_cancel_queued_and_running(session: Session) -> None:
    queued = queue.enqueue(session=session, models=["a"]).job.id
    running = queue.enqueue(session=session, models=["b"]).job.id
    cancelled = queue.cancel(session=session, job_id=queued)
    assert cancelled is not None and cancelled.status == "cancelled" and cancelled.finished_at is not None
    claim = queue.claim(session=session, worker="w")
    assert claim is not None and claim.job.id == running  # the cancelled job is never claimed
    flagged = queue.cancel(session=session, job_id=running)
    assert flagged is not None and flagged.status == "running" and flagged.cancel_requested
    assert queue.heartbeat(session=session, claim=claim).cancel
    assert queue.confirm_cancel(session=session, claim=claim)
    done = queue.get_job(session=session, job_id=running)
    assert done is not None and done.status == "cancelled"
    assert queue.cancel(session=session, job_id=running).status == "cancelled"  # terminal: unchanged
    assert queue.cancel(session=session, job_id=999_999) is None


def test_reaper_requeues_then_fails(session: Session) -> None:
    job_id = queue.enqueue(session=session, models=["mf"]).job.id
    first = queue.claim(session=session, worker="dead-1")
    assert first is not None
    assert queue.reap_stale(session=session, stale_after_s=60, max_attempts=2) == []  # fresh heartbeat
    later = queue.now() + timedelta(seconds=61)
    reaped = queue.reap_stale(session=session, stale_after_s=60, max_attempts=2, at=later)
    assert [(r.job_id, r.status) for r in reaped] == [(job_id, "queued")]
    job = queue.get_job(session=session, job_id=job_id)
    assert job is not None and job.status == "queued" and job.worker is None
    assert job.error is not None and "dead-1" in job.error and "re-queued" in job.error

    second = queue.claim(session=session, worker="w-2")
    assert second is not None and second.job.id == job_id and second.attempt == 2
    # The first worker wakes up: none of its writes land on the second attempt.
    assert not queue.report_progress(session=session, claim=first, progress={"x": 1}).owned
    assert not queue.finish(session=session, claim=first, result={})
    later = queue.now() + timedelta(seconds=61)
    reaped = queue.reap_stale(session=session, stale_after_s=60, max_attempts=2, at=later)
    assert [(r.job_id, r.status) for r in reaped] == [(job_id, "failed")]
    job = queue.get_job(session=session, job_id=job_id)
    assert job is not None and job.status == "failed" and job.finished_at is not None
    assert job.error is not None and "after 2 attempt(s)" in job.error


def test_a_requeued_job_drops_the_dead_attempts_progress(session: Session) -> None:
    job_id = queue.enqueue(session=session, models=["mf"]).job.id
    claim = queue.claim(session=session, worker="dead-1")
    assert claim is not None
    queue.report_progress(session=session, claim=claim, progress={"model": "mf", "stage": "epoch", "epoch": 7})
    later = queue.now() + timedelta(seconds=61)
    assert queue.reap_stale(session=session, stale_after_s=60, max_attempts=2, at=later)[0].status == "queued"
    job = queue.get_job(session=session, job_id=job_id)
    assert job is not None and job.status == "queued" and not job.progress


def test_a_dead_workers_jobs_are_released_at_once(session: Session) -> None:
    """The supervisor saw its worker exit: its job goes back without waiting for the heartbeat to age;
    a worker whose pid merely starts with the same digits keeps its job."""
    mine = queue.enqueue(session=session, models=["mf"]).job.id
    other = queue.enqueue(session=session, models=["ease"]).job.id
    assert queue.claim(session=session, worker="host:123:ab") is not None
    assert queue.claim(session=session, worker="host:1234:cd") is not None
    reaped = queue.reap_stale(session=session, stale_after_s=60, max_attempts=2, dead_worker="host:123:")
    assert [(r.job_id, r.status) for r in reaped] == [(mine, "queued")]
    job = queue.get_job(session=session, job_id=mine)
    assert job is not None and job.error is not None and "host:123:ab exited" in job.error
    still = queue.get_job(session=session, job_id=other)
    assert still is not None and still.status == "running"


def test_reaper_cancels_a_dead_job_with_a_pending_cancel(session: Session) -> None:
    job_id = queue.enqueue(session=session, models=["mf"]).job.id
    assert queue.claim(session=session, worker="w") is not None
    queue.cancel(session=session, job_id=job_id)
    reaped = queue.reap_stale(session=session, stale_after_s=1, max_attempts=5, at=queue.now() + timedelta(seconds=5))
    assert [(r.job_id, r.status) for r in reaped] == [(job_id, "cancelled")]


def test_release_hands_the_job_back_without_spending_an_attempt(session: Session) -> None:
    job_id = queue.enqueue(session=session, models=["mf"]).job.id
    claim = queue.claim(session=session, worker="w")
    assert claim is not None and queue.release(session=session, claim=claim)
    job = queue.get_job(session=session, job_id=job_id)
    assert job is not None and job.status == "queued" and job.attempts == 0
    again = queue.claim(session=session, worker="w2")
    assert again is not None and again.attempt == 1


def test_list_jobs_newest_first(session: Session) -> None:
    ids = [queue.enqueue(session=session, models=[m]).job.id for m in ("a", "b", "c")]
    assert [j.id for j in queue.list_jobs(session=session)] == ids[::-1]
    queue.cancel(session=session, job_id=ids[0])
    assert [j.id for j in queue.list_jobs(session=session, status="cancelled")] == [ids[0]]
    assert [j.id for j in queue.list_jobs(session=session, limit=1)] == [ids[2]]

"""A job whose models would not fit in memory fails before training, with the reason as its error."""

from app.config import Settings
from app.jobs import queue
from app.jobs.worker import Worker
from app.recsys import planning
from tests.jobs.support import FAST, seed_database


def test_job_fails_with_the_model_too_large_message(settings: Settings, session, monkeypatch) -> None:
    seed_database(session)
    monkeypatch.setattr(planning, "available_memory", lambda: 1 << 20)
    job_id = queue.enqueue(session=session, models=["mf"], params=FAST, promote="auto").job.id
    worker = Worker(settings)
    try:
        assert worker.run_once() == "failed"
    finally:
        worker.engine.dispose()
    job = queue.get_job(session=session, job_id=job_id)
    session.commit()
    assert job is not None and job.status == "failed"
    assert job.error.startswith("ModelTooLarge: mf does not fit") and "GiB is available" in job.error

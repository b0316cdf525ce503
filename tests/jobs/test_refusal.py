"""A job whose models would not fit in memory fails before training, with the reason as its error."""

from app.config import Settings
from app.recsys import planning
from tests.jobs.support import run_once, seed_database


def test_job_fails_with_the_model_too_large_message(settings: Settings, session, monkeypatch) -> None:
    seed_database(session)
    monkeypatch.setattr(planning, "available_memory", lambda: 1 << 20)
    status, job = run_once(settings, session)
    assert status == "failed" and job.status == "failed"
    assert job.error.startswith("ModelTooLarge: mf does not fit") and "GiB is available" in job.error

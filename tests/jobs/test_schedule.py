"""Retrain schedule: DEEPREC_RETRAIN_INTERVAL and DEEPREC_RETRAIN_MIN_NEW_EVENTS, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from app.db.repository import add_interactions
from app.db.tables import TrainingJob
from app.jobs import queue, schedule
from tests.jobs.support import FAST, run_job, seed_database
from tests.recsys.synthetic import taste_frame


def test_nothing_is_scheduled_by_default(settings, session) -> None:
    seed_database(session)
    assert schedule.maybe_enqueue(session, settings) is None


def test_new_events_trigger_one_retrain_of_the_served_models(make_settings, settings, session) -> None:
    seed_database(session)
    cfg = make_settings(retrain_min_new_events=100)
    stored = schedule.new_events(session)
    assert stored >= 100  # never trained: every event is new
    run_job(settings, session, models=("popularity", "mf"))
    assert schedule.new_events(session) == 0  # the job's snapshot covers them all
    assert schedule.maybe_enqueue(session, cfg) is None

    later = taste_frame(n_users=10, n_items=30, per_user=12, seed=1).assign(type="view", ts=lambda d: d.ts + 10**7)
    add_interactions(session=session, rows=later)
    session.commit()
    assert schedule.new_events(session) == len(later) >= 100
    queued = schedule.maybe_enqueue(session, cfg)
    assert queued is not None and queued.created
    assert queued.job.trigger == "schedule" and sorted(queued.job.models) == ["mf", "popularity"]
    again = schedule.maybe_enqueue(session, cfg)
    assert again is not None and not again.created and again.job.id == queued.job.id  # deduplicated


def test_interval_counts_from_the_last_training(make_settings, settings, session) -> None:
    seed_database(session)
    cfg = make_settings(retrain_interval=3600)
    first = schedule.maybe_enqueue(session, cfg)  # never trained: due at once, the default models
    assert first is not None and first.created and "popularity" in first.job.models
    queue.cancel(session=session, job_id=first.job.id)
    assert schedule.maybe_enqueue(session, cfg) is None  # the scheduled job was made just now
    hours_ago = queue.now() - timedelta(hours=2)
    session.execute(update(TrainingJob).values(created_at=hours_ago))
    session.commit()
    run_job(settings, session, models=("popularity",))  # a fresh success restarts the clock
    assert schedule.maybe_enqueue(session, cfg) is None
    session.execute(update(TrainingJob).values(created_at=hours_ago, finished_at=hours_ago))
    session.commit()
    due = schedule.maybe_enqueue(session, cfg)
    assert due is not None and due.created and due.job.models == ["popularity"]  # what is served


def test_models_served_on_ratings_are_retrained_on_ratings(make_settings, settings, session) -> None:
    seed_database(session)
    cfg = make_settings(retrain_interval=3600)
    run_job(settings, session, models=("popularity",))
    run_job(settings, session, models=("mf",), params={**FAST, "objective": "rating"})  # serves mf-rating
    assert schedule.scheduled_rating_models(session) == ["mf"]
    hours_ago = queue.now() - timedelta(hours=2)
    session.execute(update(TrainingJob).values(created_at=hours_ago, finished_at=hours_ago))
    session.commit()
    ranking = schedule.maybe_enqueue(session, cfg)
    assert ranking is not None and ranking.created and ranking.job.models == ["popularity"] and not ranking.job.params
    jobs = session.query(TrainingJob).filter(TrainingJob.status == "queued").order_by(TrainingJob.id).all()
    assert [(j.models, j.params, j.trigger) for j in jobs] == [
        (["popularity"], {}, "schedule"),
        (["mf"], {"objective": "rating"}, "schedule"),
    ]


def test_the_rating_stack_is_retrained_by_the_ranking_job_only(monkeypatch) -> None:
    """hybrid-rating is served under its own name and trains on ratings in any run: one job retrains it."""
    active = {"popularity": "v", "mf": "v", "hybrid": "v", "hybrid-rating": "v", "mf-rating": "v"}
    monkeypatch.setattr(schedule, "active_versions", lambda session: active)
    assert "hybrid-rating" in schedule.scheduled_models(None)  # type: ignore[arg-type]
    assert schedule.scheduled_rating_models(None) == ["mf"]  # type: ignore[arg-type]

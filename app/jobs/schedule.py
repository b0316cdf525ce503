"""Optional retraining schedule: every DEEPREC_RETRAIN_INTERVAL seconds, and/or once
DEEPREC_RETRAIN_MIN_NEW_EVENTS interactions arrived after the snapshot of the last successful job.

Scheduled jobs go through the same deduplicated queue, so several workers checking at once
still queue one job.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.tables import Interaction, TrainingJob
from app.jobs import queue
from app.jobs.versions import active_versions
from app.recsys.models import get_model_class, model_names
from app.recsys.pipeline import resolve_models
from app.recsys.store import RATING_SUFFIX, model_of

log = logging.getLogger(__name__)


def scheduled_models(session: Session) -> list[str]:
    """The models being served (those with an active version), else the default set."""
    active = [name for name in active_versions(session=session) if name in model_names()]
    return resolve_models(active or "default")


def scheduled_rating_models(session: Session) -> list[str]:
    """The models served on ratings (an active ``<model>-rating`` version): retrained with objective rating.

    The rating stack, ``hybrid-rating``, is a model of its own, served under its name: the ranking job
    (``scheduled_models``) retrains it, so it is not trained twice."""
    served = [model_of(name) for name in active_versions(session=session) if name.endswith(RATING_SUFFIX)]
    names = [name for name in served if name in model_names() and not get_model_class(name).rating_only]
    return resolve_models(names, objective="rating") if names else []


def new_events(session: Session) -> int:
    """Interactions stored after the snapshot of the newest successful job (all of them if none)."""
    last = session.scalar(
        select(TrainingJob.snapshot_max_id)
        .where(TrainingJob.status == "succeeded", TrainingJob.snapshot_max_id.is_not(None))
        .order_by(TrainingJob.id.desc())
        .limit(1)
    )
    stmt = select(func.count()).select_from(Interaction)
    if last is not None:
        stmt = stmt.where(Interaction.id > last)
    return int(session.scalar(stmt) or 0)


def due(session: Session, settings: Settings) -> str | None:
    """Why a scheduled retrain is due now, or None."""
    if settings.retrain_interval:
        # The newest scheduled job, or the newest success of any kind (init's first train counts).
        scheduled = select(func.max(TrainingJob.created_at)).where(TrainingJob.trigger == "schedule")
        succeeded = select(func.max(TrainingJob.finished_at)).where(TrainingJob.status == "succeeded")
        times = [t for t in (session.scalar(scheduled), session.scalar(succeeded)) if t is not None]
        last = max(times) if times else None
        if last is None or queue.now() - last >= timedelta(seconds=settings.retrain_interval):
            return f"retrain interval {settings.retrain_interval:g}s elapsed"
    if settings.retrain_min_new_events:
        count = new_events(session)
        if count >= settings.retrain_min_new_events:
            return f"{count} new interactions >= {settings.retrain_min_new_events}"
    return None


def maybe_enqueue(session: Session, settings: Settings) -> queue.Enqueued | None:
    """Queue a scheduled job when one is due and none for the same models is open; returns it. Models
    served on ratings get a second job with objective rating, so their versions are retrained too."""
    reason = due(session, settings)
    session.rollback()
    if reason is None:
        return None
    models, rating = scheduled_models(session), scheduled_rating_models(session)
    session.rollback()
    queued = queue.enqueue(session=session, models=models, params={}, promote="auto", trigger="schedule")
    if rating:
        also = queue.enqueue(session=session, models=rating, params={"objective": "rating"}, promote="auto",
                             trigger="schedule")  # fmt: skip
        if also.created:
            log.info("scheduled rating retrain queued", extra={"job_id": also.job.id, "models": also.job.models})
    return queued

"""Run one claimed training job in this process: snapshot, train, then publish each version.

Nothing is published until every model of the job has trained: a crash or a cancel part-way
leaves the store and the serving models as they were. Each version is written to the store
(temporary folder, then rename), then recorded, then passed through the promotion gate.
The first start's job (trigger ``first-run``, see app.jobs.first_run) is the exception: it
publishes each model as soon as it is trained, so each goes live in turn.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.jobs import first_run, queue
from app.jobs import versions as repo
from app.jobs.publish import VersionedStore, promotion
from app.jobs.snapshot import snapshot_data
from app.recsys.data import InteractionData
from app.recsys.pipeline import Progress, default_models, mentions_default, train_models
from app.recsys.planning import ModelTooLarge
from app.recsys.store import served_name_of
from app.recsys.training import resolve_device, set_train_threads

log = logging.getLogger(__name__)


def jsonable(value: Any) -> Any:
    """numpy scalars (metrics) -> Python numbers, so the JSON columns accept them."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


PROGRESS_LOG_S = 15.0  # a log line per model start and end, and one every this many seconds between


def log_progress(job_id: int, p: dict[str, Any]) -> None:
    """One line of a job's progress: the model, where it is, how many models are left, the ETA."""
    stage = p.get("stage")
    where = {"start": "training", "done": "trained"}.get(str(stage), f"epoch {p.get('epoch')}/{p.get('epochs')}")
    eta = p.get("eta_s")
    log.info(
        "job %s: %s %s (%s of %s); %s model(s) left%s; ETA %s",
        job_id, p.get("model"), where, p.get("index"), p.get("total"), p.get("models_left"),
        f" (then {', '.join(p['pending'])})" if p.get("pending") else "",
        "n/a" if eta is None else f"{eta:.0f}s",
        extra={"job_id": job_id, "model": p.get("model"), "stage": stage, "models_left": p.get("models_left"),
               "eta_s": eta},
    )  # fmt: skip


class Stop(Exception):
    """Raised from the progress callback to leave training between epochs."""

    def __init__(self, reason: str) -> None:  # cancelled | shutdown | lost
        super().__init__(reason)
        self.reason = reason


def load_snapshot(session: Session) -> tuple[InteractionData, int | None]:
    """Every stored interaction and item, and the highest interaction id read (the schedule's watermark)."""
    data, max_id = snapshot_data(session)
    if max_id is None:
        raise ValueError("no interactions in the database: import some first (deeprec demo-data or deeprec import)")
    return data, max_id


class JobRunner:
    """Runs a claimed job; ``should_stop()`` is polled at every epoch and returns a Stop reason or None."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], store: VersionedStore) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store

    def run(self, claim: queue.Claim, should_stop: Callable[[], str | None]) -> str:
        """Train and publish; returns the job's final status (or 'released' / 'lost')."""
        job = claim.job
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        with self.sessions() as session:
            try:
                data, max_id = load_snapshot(session)
                queue.set_snapshot(session=session, claim=claim, snapshot_max_id=max_id)
                timings["snapshot_s"] = round(time.perf_counter() - t0, 3)
                set_train_threads(self.settings.train_threads)
                device = str(resolve_device(self.settings.device))
                picks = default_models(data, job.params) if mentions_default(job.models) else []
                for pick in picks:  # the default set this catalogue affords, and why
                    log.info("default set: %s", pick.describe().strip(), extra={"job_id": job.id})
                each = job.trigger == first_run.TRIGGER  # publish every model as soon as it is trained
                published: list[dict[str, Any]] = []
                reuse = self._reusable(data, job, device) if each else {}
                t1 = time.perf_counter()
                results = train_models(
                    data, job.models, params=job.params, device=device,
                    on_progress=self._progress_writer(session, claim, should_stop),
                    default=[p.name for p in picks if p.kept] if picks else None, reuse=reuse,
                    on_result=(lambda r: published.append(self._publish(r, job))) if each else None,
                )  # fmt: skip
                timings["train_s"] = round(time.perf_counter() - t1, 3)
                reason = should_stop()
                if reason is not None:
                    raise Stop(reason)
                t2 = time.perf_counter()
                if not each:
                    published = [self._publish(r, job) for r in results]
                timings["publish_s"] = round(time.perf_counter() - t2, 3)
            except Stop as stop:
                session.rollback()
                return self._stopped(session, claim, stop.reason)
            except ModelTooLarge as exc:  # refused before training: the message says why, no traceback needed
                session.rollback()
                log.warning("training job refused: %s", exc, extra={"job_id": job.id})
                queue.fail(session=session, claim=claim, error=f"{type(exc).__name__}: {exc}")
                return "failed"
            except Exception as exc:  # noqa: BLE001  (any failure fails the job, with its message)
                session.rollback()
                log.exception("training job failed", extra={"job_id": job.id})
                queue.fail(session=session, claim=claim, error=f"{type(exc).__name__}: {exc}")
                return "failed"
            timings["total_s"] = round(time.perf_counter() - t0, 3)
            result = {"versions": published, "timings": timings, "snapshot": {**data.stats(), "max_id": max_id}}
            if picks:
                result["default_models"] = [dataclasses.asdict(p) for p in picks]
            if reuse:
                result["reused"] = sorted(reuse)  # their active versions, trained on this same snapshot
            queue.finish(session=session, claim=claim, result=jsonable(result))
            return "succeeded"

    def _reusable(self, data: InteractionData, job: Any, device: str) -> dict[str, Any]:
        """The first-run job's closed-form models, from their active versions on this same snapshot."""
        from app.commands.train import reusable

        return reusable(self.store, data, set(first_run.REUSED), device=device, params=job.params)

    def _progress_writer(
        self, session: Session, claim: queue.Claim, should_stop: Callable[[], str | None]
    ) -> Callable[[Progress], None]:
        clock = first_run.JobClock()
        logged = [0.0]

        def on_progress(p: Progress) -> None:
            progress = jsonable(clock.update(dataclasses.asdict(p)))
            now = time.monotonic()
            if p.stage != "epoch" or now - logged[0] >= PROGRESS_LOG_S:
                logged[0] = now
                log_progress(claim.job.id, progress)
            signal = queue.report_progress(session=session, claim=claim, progress=progress)
            reason = "lost" if not signal.owned else "cancelled" if signal.cancel else should_stop()
            if reason is not None:
                raise Stop(reason)

        return on_progress

    def _stopped(self, session: Session, claim: queue.Claim, reason: str) -> str:
        if reason == "cancelled":
            queue.confirm_cancel(session=session, claim=claim, result={"stopped": "cancel requested"})
            return "cancelled"
        if reason == "shutdown":
            queue.release(session=session, claim=claim)
            return "released"
        log.warning("job taken from this worker (reaped); its result is dropped", extra={"job_id": claim.job.id})
        return "lost"

    def _publish(self, r: Any, job: Any) -> dict[str, Any]:
        """Store the version under its served name (files first, then its row), gate it against that
        name's active version, prune old versions."""
        name = served_name_of(r.model)  # mf or mf-rating: the rating version is active beside the ranking one
        version = self.store.save(r.model, name=name, job_id=job.id)
        metric, value = repo.gate_metric(name, r.metrics)  # NDCG@10, or RMSE for a rating version
        with self.sessions() as session:
            active = repo.active_row(session=session, name=name)
            active_version = active.version if active else None
            active_metric = active.metric_value if active and active.metric_name == metric else None
        decision = promotion(
            job.promote, new=value, active=active_metric, active_version=active_version,
            tolerance=self.settings.promotion_tolerance, metric=metric,
        )  # fmt: skip
        if decision.promote:
            self.store.activate(name, version, note=decision.reason)
        else:
            with self.sessions() as session:
                repo.set_note(session=session, name=name, version=version, note=decision.reason)
        pruned = self.store.prune(name, self.settings.keep_versions)
        log.info("version published", extra={"model": name, "version": version, "promoted": decision.promote})
        return {
            "model": name, "version": version, "promoted": decision.promote, "reason": decision.reason,
            "previous_version": active_version, repo.GATE_METRIC: r.metrics.get(repo.GATE_METRIC),
            "gate_metric": metric, "gate_value": value,
            "test_ndcg@10": r.metrics.get("test_ndcg@10"), "seconds": round(r.seconds, 3), "pruned": pruned,
        }  # fmt: skip

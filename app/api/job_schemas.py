"""Request and response bodies of the training-job and version-activation endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.db.tables import TrainingJob
from app.recsys.models import model_names

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Promote = Literal["auto", "always", "never"]


class TrainCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"models": ["popularity", "mf"], "params": {"epochs": 5}, "promote": "auto"}},
    )

    models: list[Annotated[str, Field(json_schema_extra={"enum": [*model_names(), "all", "default"]})]] = Field(
        min_length=1, max_length=32, description="Model names, or 'default' / 'all'"
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="TrainConfig or model-config overrides for every model, or {model: {...}} for one",
    )
    promote: Promote = Field(
        default="auto",
        description="auto: activate only if the validation metric is no worse than the active version's "
        "(within DEEPREC_PROMOTION_TOLERANCE); always; never (keep as a candidate)",
    )


class TrainAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"job_id": 7, "status": "queued", "deduplicated": False, "models": ["mf"]}}
    )

    job_id: int
    status: JobStatus
    deduplicated: bool = Field(description="True when a queued or running job for the same models was returned")
    models: list[str] = Field(description="The models the job trains, dependencies included, in training order")


class Progress(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str | None = None
    model_index: int | None = Field(default=None, description="1-based position of the model in the job")
    models_total: int | None = None
    stage: str | None = Field(default=None, description="start | epoch | done")
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    metric_name: str | None = None
    metric: float | None = Field(default=None, description="The current validation metric")
    pending: list[str] = Field(default_factory=list, description="The models the job trains after this one")
    models_left: int | None = Field(default=None, description="Models not trained yet, this one included")
    eta_s: float | None = Field(
        default=None, description="Estimated seconds to the end of the job (an upper estimate: early stopping)"
    )


class Timings(BaseModel):
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    queued_s: float | None = Field(description="Seconds from creation to the (last) start")
    running_s: float | None = Field(description="Seconds from start to finish, or to now while running")


class JobRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "job_id": 7, "status": "running", "models": ["mf"], "params": {"epochs": 5}, "promote": "auto",
                "trigger": "api", "attempts": 1, "worker": "host:123:ab12", "cancel_requested": False,
                "progress": {"model": "mf", "model_index": 1, "models_total": 1, "stage": "epoch", "epoch": 2,
                             "epochs": 5, "loss": 0.41, "metric_name": "ndcg@10", "metric": 0.061, "pending": [],
                             "models_left": 1, "eta_s": 12.5},
                "timings": {"created_at": "2025-01-01T12:00:00Z", "started_at": "2025-01-01T12:00:01Z",
                            "heartbeat_at": "2025-01-01T12:00:09Z", "finished_at": None, "queued_s": 1.0,
                            "running_s": 8.2},
                "error": None, "result": None, "live": None,
            }
        }
    )  # fmt: skip

    job_id: int
    status: JobStatus
    models: list[str]
    params: dict[str, Any]
    promote: Promote
    trigger: str = Field(description="api | schedule | first-run (the first start's background job)")
    attempts: int
    worker: str | None
    cancel_requested: bool
    progress: Progress | None
    timings: Timings
    error: str | None
    result: dict[str, Any] | None = Field(description="Per model: version, promoted and why; timings; snapshot")
    live: bool | None = Field(
        default=None,
        description="Succeeded jobs: true once the API process that answers serves every version the job "
        "activated (or one activated since); null before the job succeeded",
    )


class JobsRead(BaseModel):
    jobs: list[JobRead]


class ActivationRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"name": "mf", "version": "20250101T120000000000Z-1f2e3d", "status": "active",
                        "previous_version": "20241231T120000000000Z-aa11bb"}
        }
    )  # fmt: skip

    name: str
    version: str
    status: Literal["active"]
    previous_version: str | None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def job_read(job: TrainingJob, now: datetime, live: bool | None = None) -> JobRead:
    p = job.progress or None
    progress = None
    if p is not None:
        progress = Progress(
            model=p.get("model"), model_index=p.get("index"), models_total=p.get("total"), stage=p.get("stage"),
            epoch=p.get("epoch"), epochs=p.get("epochs"), loss=p.get("loss"), metric_name=p.get("metric_name"),
            metric=p.get("metric"), pending=list(p.get("pending") or []), models_left=p.get("models_left"),
            eta_s=p.get("eta_s"),
        )  # fmt: skip
    end = job.finished_at or (now if job.status == "running" else None)
    return JobRead(
        job_id=job.id, status=job.status, models=job.models, params=job.params, promote=job.promote,  # type: ignore[arg-type]
        trigger=job.trigger, attempts=job.attempts, worker=job.worker, cancel_requested=job.cancel_requested,
        progress=progress, error=job.error, result=job.result, live=live,
        timings=Timings(
            created_at=job.created_at, started_at=job.started_at, heartbeat_at=job.heartbeat_at,
            finished_at=job.finished_at, queued_s=_seconds(job.created_at, job.started_at),
            running_s=_seconds(job.started_at, end),
        ),
    )  # fmt: skip

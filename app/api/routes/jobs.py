"""Training jobs (queue, progress, cancel) and activating a model version (promote or roll back).

The API only writes rows: a worker process claims and runs each job; every API process notices a
newly active version within DEEPREC_MODEL_POLL_INTERVAL_S and swaps it in.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from sqlalchemy.orm import Session

from app.api.deps import AdminAccess, SessionDep
from app.api.errors import ERROR_RESPONSES, NOT_FOUND, WRITE_RESPONSES, FieldError, InvalidInput
from app.api.job_schemas import ActivationRead, JobRead, JobsRead, JobStatus, TrainAccepted, TrainCreate, job_read
from app.api.train_params import param_errors
from app.db.tables import TrainingJob
from app.jobs import queue
from app.jobs import versions as repo
from app.jobs.publish import VersionedStore
from app.recsys.models import model_names
from app.recsys.pipeline import resolve_models, run_objective
from app.recsys.store import CorruptVersion, StoreError, served_names

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["training"], dependencies=[AdminAccess])  # jobs show parameters, errors, hosts
MAX_JOB_ID = 2**63 - 1  # the largest id either database stores; above it is no job, not a server error
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "The job already ended / the version is corrupt"}}


def resolve(body: TrainCreate) -> list[str]:
    valid = model_names()
    listed = ", ".join([*valid, "all", "default"])
    bad = [
        FieldError(field=f"models[{i}]", index=i, message=f"unknown model {m!r}; valid: {listed}")
        for i, m in enumerate(body.models)
        if m not in valid and m not in ("all", "default")
    ]
    if bad:
        raise InvalidInput(bad)
    names = resolve_models(body.models, objective=run_objective(body.params))  # rating: hybrid-rating for hybrid
    errors = param_errors(names, body.params)
    if errors:
        raise InvalidInput(errors)
    return names


@router.post("/train", status_code=202, response_model=TrainAccepted, responses=WRITE_RESPONSES)
def create_job(body: TrainCreate, session: SessionDep, response: Response) -> TrainAccepted:
    """Queue a training job; a queued or running job for the same models is returned instead."""
    names = resolve(body)
    out = queue.enqueue(session=session, models=names, params=body.params, promote=body.promote)
    response.headers["Location"] = f"/v1/jobs/{out.job.id}"
    return TrainAccepted(job_id=out.job.id, status=out.job.status, deduplicated=not out.created, models=out.job.models)  # type: ignore[arg-type]


class Liveness:
    """Whether this process serves what each succeeded job activated: the loaded version of each model the
    job promoted is the one model_version says is active now (the job's, or one activated after it)."""

    def __init__(self, request: Request, session: Session) -> None:
        self.request, self.session = request, session
        self._active: dict[str, str] | None = None

    def __call__(self, job: TrainingJob) -> bool | None:
        registry = getattr(self.request.app.state, "registry", None)
        if job.status != "succeeded" or registry is None:
            return None
        promoted = {v["model"] for v in (job.result or {}).get("versions", []) if v.get("promoted")}
        if self._active is None and promoted:
            self._active = repo.active_versions(session=self.session)
        serving = registry.models.versions()
        live = all(serving.get(name) == (self._active or {}).get(name) for name in promoted)
        ticker = getattr(self.request.app.state, "hot_swap", None)
        if not live and ticker is not None:
            ticker.nudge()  # look at model_version now rather than at the next poll
        return live


@router.get("/jobs", response_model=JobsRead, responses=ERROR_RESPONSES)
def list_jobs(
    request: Request,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Annotated[JobStatus | None, Query()] = None,
) -> JobsRead:
    """Recent jobs, newest first."""
    jobs = queue.list_jobs(session=session, limit=limit, status=status)
    now, live = queue.now(), Liveness(request, session)
    return JobsRead(jobs=[job_read(j, now, live(j)) for j in jobs])


def _job_or_404(session: SessionDep, job_id: int) -> Any:
    job = queue.get_job(session=session, job_id=job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


JobId = Annotated[int, Path(ge=1, le=MAX_JOB_ID, description="A job id (a 64-bit row id)")]


@router.get("/jobs/{job_id}", response_model=JobRead, responses={**ERROR_RESPONSES, **NOT_FOUND})
def get_job(request: Request, session: SessionDep, job_id: JobId) -> JobRead:
    """Status, progress (model, epoch of epochs, validation metric), timings, error, and whether this
    process already serves the versions the job activated (``live``)."""
    job = _job_or_404(session, job_id)
    return job_read(job, queue.now(), Liveness(request, session)(job))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobRead,
    responses={**WRITE_RESPONSES, **NOT_FOUND, **CONFLICT},
)
def cancel_job(session: SessionDep, job_id: JobId) -> JobRead:
    """Cancel a job: a queued one at once, a running one at its next epoch (it publishes nothing)."""
    job = _job_or_404(session, job_id)
    if job.status in queue.TERMINAL:
        raise HTTPException(409, f"job {job_id} already {job.status}")
    return job_read(queue.cancel(session=session, job_id=job_id) or job, queue.now())


@router.post(
    "/models/{name}/versions/{version}/activate",
    response_model=ActivationRead,
    responses={**WRITE_RESPONSES, **NOT_FOUND, **CONFLICT},
    tags=["models"],
)
def activate_version(
    request: Request,
    session: SessionDep,
    name: Annotated[str, Path(examples=["mf"], json_schema_extra={"enum": served_names()})],
    version: Annotated[str, Path(examples=["20250101T120000000000Z-1f2e3d"])],
) -> ActivationRead:
    """Make a stored version the active one (promote a candidate or roll back); every API process swaps it in."""
    if name not in served_names():
        why = f"unknown model {name!r}; valid: {', '.join(served_names())}"
        raise InvalidInput([FieldError(field="name", message=why)])
    store: VersionedStore = request.app.state.registry.store
    row = repo.get_version(session=session, name=name, version=version)
    session.rollback()
    try:
        if row is None:
            store.path(name, version)  # a folder the table does not know yet is recorded by activate
        store.verify(name, version)
    except CorruptVersion as e:
        log.error("activation refused", extra={"model": name, "version": version, "error": str(e)})
        raise HTTPException(409, f"version refused: {e}") from e
    except StoreError as e:
        raise HTTPException(404, str(e)) from e
    previous = store.active_version(name)
    store.activate(name, version, note="activated through the API")
    ticker = getattr(request.app.state, "hot_swap", None)
    if ticker is not None:
        ticker.nudge()  # this process swaps at once; the others at their next poll
    return ActivationRead(name=name, version=version, status="active", previous_version=previous)

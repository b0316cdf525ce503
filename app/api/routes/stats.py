"""Figures the console shows that the rest of the API lacks: data counts and events per day, and this
process's request rate, latency and workers.

The data figures are counted by the database (see app.db.stats) and each API process reuses them for ten
times what they took to count, and at least REUSE_MIN_S: consoles polling the overview keep the database
busy a tenth of the time at most, however large the tables grow.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.api import request_stats
from app.api.access import ReadAccess
from app.api.deps import SessionDep, SettingsDep
from app.api.errors import ERROR_RESPONSES
from app.api.stats_schemas import (
    BusyWorker,
    DataStatsRead,
    DayCount,
    EmbeddedWorker,
    ProcessRead,
    RequestStats,
    RouteStats,
    ServiceStatsRead,
    WorkersRead,
)
from app.db.stats import data_stats
from app.jobs import queue

router = APIRouter(prefix="/v1/stats", tags=["stats"], dependencies=[ReadAccess])
REUSE_MIN_S = 5.0
REUSE_FACTOR = 10.0
REUSE_KEPT = 8
_lock = threading.Lock()


def _reused(request: Request) -> dict[int, tuple[float, float, DataStatsRead]]:
    """This app's figures by ``days``: (monotonic time they were counted at, seconds it took, figures)."""
    state: Any = request.app.state
    with _lock:
        if not hasattr(state, "data_stats"):
            state.data_stats = {}
        return state.data_stats


@router.get("", response_model=DataStatsRead, responses=ERROR_RESPONSES, summary="Data statistics")
def get_stats(
    request: Request,
    session: SessionDep,
    days: Annotated[int, Query(ge=1, le=3650, description="Days of events per day, up to the newest event")] = 90,
) -> DataStatsRead:
    """Counts of users, items and events, and events per day, counted with SQL aggregates; an API process
    reuses them for ten times what they took to count (at least 5 s): computed_at says when."""
    reused = _reused(request)
    hit = reused.get(days)
    if hit is not None and time.monotonic() < hit[0] + hit[1] + max(REUSE_MIN_S, REUSE_FACTOR * hit[1]):
        return hit[2]
    t0 = time.monotonic()
    s = data_stats(session=session, days=days)
    out = DataStatsRead(
        users=s.users,
        items=s.items,
        active_items=s.active_items,
        interactions=s.interactions,
        first_event_at=s.first_event_at,
        last_event_at=s.last_event_at,
        events_per_day=[DayCount(day=d, events=n) for d, n in zip(s.days, s.events, strict=True)],
        computed_at=datetime.now(UTC),
    )
    took = time.monotonic() - t0
    with _lock:
        if len(reused) >= REUSE_KEPT:  # a few windows are in use at once; any ``days`` may be asked
            reused.clear()
        reused[days] = (t0, took, out)
    return out


def _workers(request: Request, session: SessionDep, stale_after_s: float) -> WorkersRead:
    supervisor = getattr(request.app.state, "worker_supervisor", None)
    proc = supervisor.proc if supervisor is not None else None  # the embedded worker of the moment
    embedded = None
    if proc is not None:
        code = proc.poll()
        embedded = EmbeddedWorker(pid=proc.pid, alive=code is None, exit_code=code)
    now = queue.now()
    busy = [
        BusyWorker(
            worker=job.worker or "",
            job_id=job.id,
            heartbeat_at=job.heartbeat_at,
            alive=job.heartbeat_at is not None and now - job.heartbeat_at < timedelta(seconds=stale_after_s),
        )
        for job in queue.list_jobs(session=session, limit=100, status="running")
    ]
    return WorkersRead(embedded=embedded, busy=busy)


@router.get("/service", response_model=ServiceStatsRead, summary="Service statistics")
def get_service_stats(request: Request, session: SessionDep, settings: SettingsDep) -> ServiceStatsRead:
    """This API process: request rate and latency percentiles from its own metrics, and the workers alive."""
    now, routes = request_stats.read()
    base = request_stats.WINDOW.observe(now)
    started = request_stats.process_start()
    if base is not None and now.t > base.t:
        window, count, hist = now.t - base.t, now.requests - base.requests, now.buckets - base.buckets
    else:  # the first reading of this process: everything since it started
        window, count, hist = max(now.t - started, 1e-3), now.requests, now.buckets
    return ServiceStatsRead(
        process=ProcessRead(
            pid=os.getpid(),
            started_at=datetime.fromtimestamp(started, UTC),
            uptime_s=round(time.time() - started, 3),
        ),
        requests=RequestStats(
            window_s=round(window, 3),
            requests=int(count),
            rate_per_s=round(count / window, 3),
            p50_ms=request_stats.ms(request_stats.quantile(0.5, hist)),
            p99_ms=request_stats.ms(request_stats.quantile(0.99, hist)),
            routes=[RouteStats(**vars(r)) for r in routes],
        ),
        workers=_workers(request, session, settings.job_stale_after_s),
    )

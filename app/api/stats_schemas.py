"""Response bodies of GET /v1/stats (the data) and GET /v1/stats/service (this process and the workers)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


class DayCount(BaseModel):
    day: date = Field(description="A UTC day")
    events: int


class DataStatsRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "users": 2000, "items": 1500, "active_items": 1500, "interactions": 100000,
                    "first_event_at": "2023-01-02T08:00:00Z", "last_event_at": "2025-01-01T11:00:00Z",
                    "events_per_day": [{"day": "2024-12-31", "events": 131}, {"day": "2025-01-01", "events": 97}],
                    "computed_at": "2025-01-01T12:00:00Z",
                }
            ]
        }
    )  # fmt: skip

    users: int
    items: int
    active_items: int
    interactions: int
    first_event_at: datetime | None = Field(description="The oldest event; null without events")
    last_event_at: datetime | None = Field(description="The newest event; null without events")
    events_per_day: list[DayCount] = Field(
        description="Events on each of the last `days` UTC days up to the newest event's day, oldest first, "
        "days without events included"
    )
    computed_at: datetime = Field(
        description="When these figures were counted: they are reused for ten times what they took, at least 5 s"
    )


class RouteStats(BaseModel):
    route: str = Field(description="The route template, e.g. /v1/users/{user_id}/recommendations")
    method: str
    requests: int
    errors: int = Field(description="Answers with a 5xx status")
    p50_ms: float | None
    p99_ms: float | None


class RequestStats(BaseModel):
    window_s: float = Field(
        description="The span the rate and percentiles cover: about the last minute, or since the process started "
        "on its first reading"
    )
    requests: int = Field(description="API requests in the window (pages, docs, health checks and /metrics left out)")
    rate_per_s: float
    p50_ms: float | None = Field(description="Estimated from the latency histogram's buckets, as Prometheus does")
    p99_ms: float | None
    routes: list[RouteStats] = Field(description="Every API route since this process started, busiest first")


class ProcessRead(BaseModel):
    pid: int
    started_at: datetime
    uptime_s: float


class EmbeddedWorker(BaseModel):
    pid: int
    alive: bool
    exit_code: int | None


class BusyWorker(BaseModel):
    worker: str = Field(description="host:pid:tag of the worker process")
    job_id: int
    heartbeat_at: datetime | None
    alive: bool = Field(description="Its last heartbeat is more recent than DEEPREC_JOB_STALE_AFTER_S")


class WorkersRead(BaseModel):
    embedded: EmbeddedWorker | None = Field(description="The worker this API process started; null when it has none")
    busy: list[BusyWorker] = Field(description="Workers running a job (idle separate workers are not listed)")


class ServiceStatsRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "process": {"pid": 4242, "started_at": "2025-01-01T12:00:00Z", "uptime_s": 3600.0},
                    "requests": {
                        "window_s": 60.2, "requests": 1204, "rate_per_s": 20.0, "p50_ms": 3.1, "p99_ms": 21.5,
                        "routes": [{"route": "/v1/users/{user_id}/recommendations", "method": "GET",
                                    "requests": 51234, "errors": 0, "p50_ms": 3.0, "p99_ms": 20.1}],
                    },
                    "workers": {
                        "embedded": {"pid": 4250, "alive": True, "exit_code": None},
                        "busy": [{"worker": "host:4250:ab12", "job_id": 7, "heartbeat_at": "2025-01-01T12:59:58Z",
                                  "alive": True}],
                    },
                }
            ]
        }
    )  # fmt: skip

    process: ProcessRead
    requests: RequestStats = Field(description="This process's own request metrics (those of /metrics)")
    workers: WorkersRead

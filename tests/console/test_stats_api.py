"""GET /v1/stats (counts, events per day) on SQLite and PostgreSQL, and GET /v1/stats/service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.api.request_stats import BOUNDS, Reading, Window, quantile
from app.api.routes import stats as stats_routes
from app.jobs import queue

DAY = datetime(2024, 5, 10, tzinfo=UTC)


def event(user: str, item: str, at: datetime) -> dict:
    return {"user_id": user, "item_id": item, "type": "view", "timestamp": at.isoformat()}


def test_counts_and_events_per_day(client: TestClient) -> None:
    events = [
        event("u1", "i1", DAY + timedelta(hours=23, minutes=59)),  # the newest day: 3 events
        event("u1", "i2", DAY),
        event("u2", "i1", DAY + timedelta(hours=1)),
        event("u2", "i3", DAY - timedelta(days=2, hours=-5)),  # two days before: 2 events
        event("u3", "i3", DAY - timedelta(days=2)),
        event("u3", "i2", DAY - timedelta(days=2, seconds=1)),  # the day before that: outside days=3
        event("u4", "i4", DAY - timedelta(days=400)),
    ]
    assert client.post("/v1/interactions", json={"interactions": events}).json()["inserted"] == 7
    client.put("/v1/users/u9", json={})
    client.put("/v1/items/i4", json={"active": False})

    body = client.get("/v1/stats?days=3").json()
    assert (body["users"], body["items"], body["active_items"], body["interactions"]) == (5, 4, 3, 7)
    assert body["first_event_at"].startswith("2023-04-06") and body["last_event_at"].startswith("2024-05-10T23:59")
    assert body["events_per_day"] == [
        {"day": "2024-05-08", "events": 2},
        {"day": "2024-05-09", "events": 0},
        {"day": "2024-05-10", "events": 3},
    ]
    default = client.get("/v1/stats").json()["events_per_day"]
    assert len(default) == 90 and sum(d["events"] for d in default) == 6 and default[-1]["day"] == "2024-05-10"


def test_figures_are_reused_for_ten_times_their_cost(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_routes, "REUSE_MIN_S", 3600.0)
    first = client.get("/v1/stats?days=7").json()
    client.post("/v1/interactions", json={"interactions": [event("u1", "i1", DAY)]})
    assert client.get("/v1/stats?days=7").json() == first  # reused
    assert client.get("/v1/stats?days=8").json()["interactions"] == 1  # other days: counted now
    monkeypatch.setattr(stats_routes, "REUSE_MIN_S", 0.0)
    monkeypatch.setattr(stats_routes, "REUSE_FACTOR", 0.0)
    assert client.get("/v1/stats?days=7").json()["interactions"] == 1


def test_stats_of_an_empty_database(client: TestClient) -> None:
    body = client.get("/v1/stats").json()
    assert body["interactions"] == 0 and body["users"] == 0 and body["events_per_day"] == []
    assert body["first_event_at"] is None and body["last_event_at"] is None
    for bad in ("days=0", "days=3651", "days=x"):
        r = client.get(f"/v1/stats?{bad}")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "days"


def test_quantile_interpolates_within_the_bucket() -> None:
    counts = np.zeros(len(BOUNDS))
    counts[1] = 50  # 50 requests in (0.5 ms, 1 ms]
    counts[2] = 50  # 50 in (1 ms, 2.5 ms]
    cumulative = np.cumsum(counts)
    assert quantile(0.5, cumulative) == 0.001  # rank 50: the top of the second bucket
    assert abs(quantile(0.99, cumulative) - (0.001 + 0.0015 * 49 / 50)) < 1e-12
    assert quantile(0.99, np.zeros(len(BOUNDS))) is None
    slow = np.zeros(len(BOUNDS))
    slow[-1] = 3  # beyond the last finite bound: Prometheus answers that bound
    assert quantile(0.99, slow) == 5.0


def test_window_measures_against_a_reading_a_minute_old() -> None:
    window = Window()
    empty = np.zeros(len(BOUNDS))

    def at(t: float, n: float) -> Reading:
        return Reading(t, n, empty)

    assert window.observe(at(1000, 10)) is None
    assert window.observe(at(1002, 12)).t == 1000  # too young to keep; the oldest is the baseline
    assert window.observe(at(1010, 20)).t == 1000
    assert window.observe(at(1070, 80)).t == 1010  # the newest at least 60 s old
    assert window.observe(at(2000, 90)).t == 1070  # older than the horizon: dropped but the last


def test_service_stats_count_requests_and_list_busy_workers(client: TestClient, session: Session) -> None:
    for _ in range(3):
        assert client.get("/v1/items?limit=1").status_code == 200
    body = client.get("/v1/stats/service").json()
    items = [r for r in body["requests"]["routes"] if r["route"].endswith("/items") and r["method"] == "GET"]
    assert items[0]["requests"] >= 3 and items[0]["errors"] == 0 and items[0]["p99_ms"] > 0
    assert body["requests"]["requests"] >= 3 and body["process"]["uptime_s"] >= 0
    assert body["workers"] == {"embedded": None, "busy": []}  # the tests' settings start no worker

    job = queue.enqueue(session=session, models=["mf"]).job
    claim = queue.claim(session=session, worker="host:1:ab")
    assert claim is not None and claim.job.id == job.id
    busy = client.get("/v1/stats/service").json()["workers"]["busy"]
    assert [(w["worker"], w["job_id"], w["alive"]) for w in busy] == [("host:1:ab", job.id, True)]

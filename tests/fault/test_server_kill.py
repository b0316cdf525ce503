"""kill -9 of the API while a client streams ingest batches: every acknowledged batch is stored exactly
once, and sending everything again adds nothing twice (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.tables import Interaction
from tests.fault.support import Service
from tests.jobs.support import wait_for

pytestmark = pytest.mark.slow
BATCH, MAX_BATCHES = 50, 400  # a bounded client: it stops at the kill or after MAX_BATCHES


def batch(b: int) -> dict[str, Any]:
    return {
        "interactions": [
            {"user_id": f"u{(b * BATCH + i) % 97}", "item_id": f"i{i % 31}", "type": "view",
             "timestamp": 1_700_000_000 + b * BATCH + i, "event_id": f"b{b}-e{i}"}
            for i in range(BATCH)
        ]
    }  # fmt: skip


def test_acknowledged_batches_survive_a_kill_exactly_once(
    make_settings: Callable[..., Settings], session: Session, tmp_path: Path
) -> None:
    settings = make_settings()
    service = Service(settings, tmp_path / "serve.log").start()
    acked: list[int] = []
    sent: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{service.port}", timeout=30) as client:
            for b in range(MAX_BATCHES):
                if stop.is_set():
                    return
                sent.append(b)
                try:
                    r = client.post("/v1/interactions", json=batch(b))
                except httpx.TransportError:
                    return  # the server died under this batch: it is not acknowledged
                if r.status_code == 200:
                    acked.append(b)

    try:
        client = threading.Thread(target=stream)
        client.start()
        wait_for(lambda: len(acked) >= 20, 120, 0.01, "twenty acknowledged batches")
        service.kill()
        client.join(60)
        stop.set()
        assert acked and acked == sent[: len(acked)]

        counts = dict(
            session.execute(
                select(Interaction.event_id, func.count()).group_by(Interaction.event_id)  # type: ignore[arg-type]
            ).all()
        )
        session.commit()
        assert max(counts.values()) == 1  # nothing stored twice
        for b in acked:
            assert all(counts.get(f"b{b}-e{i}") == 1 for i in range(BATCH)), f"acknowledged batch {b} lost"

        service.start()  # the same database, a new process
        for b in sent:
            r = service.http.post("/v1/interactions", json=batch(b))
            assert r.status_code == 200, r.text
            if b in acked:
                assert r.json() == {"inserted": 0, "duplicates": BATCH}
        total = session.scalar(select(func.count()).select_from(Interaction))
        distinct = session.scalar(select(func.count(func.distinct(Interaction.event_id))))
        assert total == distinct == len(sent) * BATCH
    finally:
        stop.set()
        service.stop()

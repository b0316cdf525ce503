"""The database taken away under a running API (a TCP proxy in front of PostgreSQL, stopped and started):
every path that needs it answers 503 with Retry-After, none a 500, and all recover with no restart."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.migrations import upgrade
from app.db.session import make_engine, make_sessionmaker
from tests.conftest import Postgres, _hermetic
from tests.fault.support import Service, TcpProxy
from tests.jobs.support import run_job, seed_database, wait_for

pytestmark = pytest.mark.slow
EVENT = {"interactions": [{"user_id": "u1", "item_id": "i2", "type": "click", "event_id": "away-1"}]}
# Every route, as a client would call it: (method, url, body)
CALLS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/users/u1/recommendations?n=5&model=mf", None),
    ("GET", "/v1/users/u1/recommendations?n=5", None),
    ("POST", "/v1/predict", {"user_id": "u1", "item_ids": ["i1", "i2"], "model": "mf"}),
    ("GET", "/v1/users/u1/next-items?n=5", None),
    ("POST", "/v1/sessions/next-items", {"item_ids": ["i1", "i2"], "n": 5}),
    ("GET", "/v1/items/i1/similar?n=5&model=mf", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/mf/versions", None),
    ("GET", "/v1/users/u1/interactions", None),
    ("GET", "/v1/items/i1", None),
    ("GET", "/v1/users/u1", None),
    ("POST", "/v1/interactions", EVENT),
    ("POST", "/v1/items", {"items": [{"item_id": "i1", "title": "Renamed"}]}),
    ("PUT", "/v1/items/i1", {"active": True}),
    ("PUT", "/v1/users/u2", {"attributes": {"age": 30}}),
    ("DELETE", "/v1/users/nobody", None),
    ("POST", "/v1/train", {"models": ["popularity"]}),
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/jobs/1", None),
    ("POST", "/v1/jobs/999/cancel", None),
    ("GET", "/readyz", None),
]
# Answered from what the process holds (models, the catalogue kept for 10 s), so they may keep answering.
FROM_MEMORY = {"/v1/models", "/v1/sessions/next-items", "/v1/items/i1/similar"}


@pytest.fixture
def through_proxy(postgres: Postgres, tmp_path: Path) -> Iterator[tuple[Settings, TcpProxy]]:
    """A fresh schema with data and trained models, and settings that reach it only through a proxy."""
    schema = f"deeprec_away_{os.getpid()}_{secrets.token_hex(3)}"
    postgres.execute(f'CREATE SCHEMA "{schema}"')
    direct = _hermetic(postgres.schema_url(schema), tmp_path)
    url = make_url(direct.database_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    try:
        upgrade(direct)
        engine = make_engine(direct)
        with make_sessionmaker(engine)() as session:
            seed_database(session)
            run_job(direct, session, models=("popularity", "mf"))
        engine.dispose()
        via = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        yield direct.model_copy(update={"database_url": via, "model_poll_interval_s": 0.5}), proxy
    finally:
        proxy.stop()
        postgres.execute(f'DROP SCHEMA "{schema}" CASCADE')


def answers(service: Service) -> dict[str, tuple[int, str | None]]:
    out = {}
    for method, url, body in CALLS:
        r = service.http.request(method, url, json=body)
        out[f"{method} {url}"] = (r.status_code, r.headers.get("retry-after"))
    return out


def test_every_path_is_a_503_while_the_database_is_away_then_recovers(
    through_proxy: tuple[Settings, TcpProxy], tmp_path: Path
) -> None:
    settings, proxy = through_proxy
    with Service(settings, tmp_path / "serve.log").start() as service:
        up = answers(service)
        assert all(status < 500 for status, _ in up.values()), up

        proxy.stop()
        away = answers(service)
        for call, (status, retry_after) in away.items():
            if call.split(" ", 1)[1].split("?")[0] in FROM_MEMORY and status == up[call][0]:
                continue
            assert status == 503 and retry_after is not None and int(retry_after) > 0, (call, status, service.tail())
        assert service.http.get("/healthz").status_code == 200  # alive, only not ready

        proxy.start()
        wait_for(lambda: answers(service) == up | {"POST /v1/interactions": (200, None)}, 60, 0.5,
                 "every path to answer as before")  # fmt: skip
        assert service.proc is not None and service.proc.poll() is None  # the same process: no restart

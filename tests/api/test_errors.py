"""Error paths over a real uvicorn server: an unexpected error is a JSON 500 that keeps the keep-alive
connection (issue 16 item 13), and a database that went away is a 503 with Retry-After, whichever
layer's error type says so (item 4)."""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import exc as sa

from app.config import Settings
from app.main import create_app
from tests.jobs.support import wait_for

RAISES: dict[str, Callable[[], BaseException]] = {
    "/boom": lambda: RuntimeError("a bug"),
    "/pg-gone": lambda: psycopg.OperationalError("consuming input failed: server closed the connection"),
    "/pg-closed": lambda: psycopg.InterfaceError("the connection is closed"),
    "/sqlite-locked": lambda: sqlite3.OperationalError("database is locked"),
    "/sa-gone": lambda: sa.OperationalError("SELECT 1", {}, psycopg.OperationalError("gone")),
}


def _raiser(make: Callable[[], BaseException]) -> Callable[[], None]:
    def route() -> None:  # no parameters: the route is documented like any other
        raise make()

    return route


def _app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    for path, make in RAISES.items():
        app.add_api_route(path, _raiser(make), methods=["GET"])

    def wrapped() -> None:  # a driver error another layer wrapped, as a thread hand-off may
        try:
            raise psycopg.OperationalError("connection refused")
        except psycopg.OperationalError as e:
            raise RuntimeError("history read failed") from e

    app.add_api_route("/wrapped-gone", wrapped, methods=["GET"])
    return app


@pytest.fixture
def server(make_settings: Callable[..., Settings]) -> Iterator[int]:
    """The app under uvicorn on a free port, in a thread of this process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(_app(make_settings()), host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 60, what="uvicorn to start")
    yield port
    server.should_exit = True
    thread.join(30)


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, str], Any]:
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_500_keeps_the_connection_for_the_next_request(server: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    try:
        status, headers, body = _get(conn, "/healthz")
        sock = conn.sock
        for _ in range(3):
            status, headers, body = _get(conn, "/boom")
            assert (status, body) == (500, {"detail": "internal server error"})
            assert headers.get("connection") != "close" and "x-request-id" in headers
            status, _, body = _get(conn, "/healthz")  # the same connection answers: no reset
            assert (status, body) == (200, {"status": "ok"})
        assert conn.sock is sock  # never reconnected
    finally:
        conn.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_database_errors_of_every_layer_are_a_503_with_retry_after(server: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    try:
        for path in [p for p in RAISES if p != "/boom"] + ["/wrapped-gone"]:
            status, headers, body = _get(conn, path)
            assert status == 503, (path, body)
            assert body == {"detail": "database unavailable, retry later"}
            assert int(headers["retry-after"]) > 0
        assert _get(conn, "/healthz")[0] == 200
    finally:
        conn.close()

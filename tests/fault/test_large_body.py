"""80 MB bodies against a running server: the key is checked and the size refused (413) before the body is
read, by Content-Length and by counting a chunked body, and the server's RSS grows by less than 50 MB."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from app.config import Settings
from tests.fault.support import Service, rss_mb

pytestmark = pytest.mark.slow
HUGE = 80 * 2**20
CHUNK = b"x" * 65536


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        part = sock.recv(4096)
        if not part:
            break
        data += part
    return int(data.split(b" ", 2)[1])


def by_length(port: int, key: str | None) -> int:
    """Headers announcing HUGE bytes, and not one byte of body: the answer must come without it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        auth = f"X-API-Key: {key}\r\n" if key else ""
        sock.sendall(
            f"POST /v1/interactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {HUGE}\r\n\r\n".encode()
        )
        return _status(sock)


def chunked(port: int, key: str | None) -> tuple[int, int]:
    """A chunked body of up to HUGE bytes, sent until the server answers; (status, bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        auth = f"X-API-Key: {key}\r\n" if key else ""
        sock.sendall(
            f"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            while sent < HUGE and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n")
                sent += len(CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _status(sock), sent


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # no database work happens
def test_large_bodies_are_refused_before_they_are_read(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(api_key="k")
    limit = settings.body_limit
    with Service(settings, tmp_path / "serve.log").start() as service:
        for _ in range(20):  # warm: first requests allocate what every later one reuses
            service.http.post("/v1/interactions", json={"interactions": []}, headers={"X-API-Key": "k"})
        before = rss_mb(service.pid)

        assert by_length(service.port, None) == 401  # no key: answered before the body
        assert by_length(service.port, "k") == 413  # with the key: too large by its Content-Length
        status, sent = chunked(service.port, "k")
        assert status == 413 and sent < 4 * limit  # counted: stopped soon after the limit, not at 80 MB
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(chunked(service.port, None)[0])) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert statuses == [401, 401, 401]

        grown = rss_mb(service.pid) - before
        assert grown < 50, f"RSS grew by {grown:.0f} MB"
        assert service.http.get("/healthz").status_code == 200

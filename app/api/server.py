"""uvicorn's HTTP protocol with TCP_NODELAY on every connection.

With ``--workers N`` uvicorn binds the listening socket itself with ``proto=0``; accepted sockets
inherit it and asyncio then skips TCP_NODELAY, so on Linux every keep-alive response waits ~40 ms
for the client's delayed ACK (Nagle). Setting the option per connection removes that wait in
every launch mode. Use it as ``uvicorn --http app.api.server:NoDelayH11Protocol``.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

HTTP_PROTOCOL = "app.api.server:NoDelayH11Protocol"


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)

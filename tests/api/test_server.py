"""The uvicorn protocol used by `deeprec serve` and the benchmark turns Nagle off on every connection."""

import socket

from app.api.server import set_nodelay


class _Transport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str):
        return self.sock if name == "socket" else None


def test_accepted_socket_of_a_proto_0_listener_gets_tcp_nodelay():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as uvicorn --workers binds it
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        set_nodelay(_Transport(accepted))
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        for s in (client, accepted, listener):
            s.close()


def test_non_tcp_transports_are_left_alone():
    a, b = socket.socketpair()
    try:
        set_nodelay(_Transport(a))  # AF_UNIX: no TCP options, no error
        set_nodelay(_Transport(None))
        a.sendall(b"ok")  # and the connection still carries data
        assert b.recv(2) == b"ok"
    finally:
        a.close()
        b.close()

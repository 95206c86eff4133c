"""How webhook requests travel: kept-alive connections per endpoint, a receiver that closes them
in between, no redirects followed, an unreachable receiver an error at once. Each test runs a real
HTTP server on loopback."""

from __future__ import annotations

import socket
import threading

import pytest

from service.events.webhooks import _Connections


class RawReceiver:
    """An HTTP/1.1 server on a socket of its own, answering `status` to every request; with
    `one_per_connection` it closes each connection after its first answer without saying so."""

    def __init__(
        self, status: str = "204 No Content", one_per_connection: bool = False, extra_headers: str = ""
    ):
        self.status, self.one_per_connection, self.extra_headers = status, one_per_connection, extra_headers
        self.requests, self.connections = 0, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hooks?program=home"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = next(
                    (
                        int(h.split(b":")[1])
                        for h in head.split(b"\r\n")
                        if h.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                reader.read(length)
                assert head.startswith(b"POST /hooks?program=home HTTP/1.1")
                self.requests += 1
                conn.sendall(
                    f"HTTP/1.1 {self.status}\r\nContent-Length: 0\r\n{self.extra_headers}\r\n".encode()
                )
                if self.one_per_connection:
                    return

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def connections():
    return _Connections()


@pytest.fixture
def receiver_for():
    """Starts a RawReceiver with the given settings; every one is stopped after the test."""
    started = []

    def start(**settings) -> RawReceiver:
        started.append(RawReceiver(**settings))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


def test_a_kept_alive_connection_carries_every_request_to_one_endpoint(connections, receiver_for):
    receiver = receiver_for()
    assert [connections.post(receiver.url, b"{}", {}) for _ in range(5)] == [204] * 5
    assert (receiver.requests, receiver.connections) == (5, 1)


def test_a_receiver_that_closes_kept_alive_connections_still_gets_every_request_once(
    connections, receiver_for
):
    receiver = receiver_for(status="200 OK", one_per_connection=True)
    assert [connections.post(receiver.url, b"{}", {}) for _ in range(4)] == [200] * 4
    assert (receiver.requests, receiver.connections) == (4, 4)


def test_a_redirect_is_answered_as_it_is_and_not_followed(connections, receiver_for):
    receiver = receiver_for(status="302 Found", extra_headers="Location: http://127.0.0.1:9/elsewhere\r\n")
    assert connections.post(receiver.url, b"{}", {}) == 302
    assert receiver.requests == 1


def test_an_unreachable_receiver_is_an_error_at_once(connections):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        connections.post(f"http://127.0.0.1:{closed_port}/hooks", b"{}", {})


def test_a_url_that_is_not_http_is_refused(connections):
    with pytest.raises(ValueError, match="not an http"):
        connections.post("ftp://127.0.0.1/hooks", b"{}", {})

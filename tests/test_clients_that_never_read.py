"""A client that sends requests and never reads the answers cannot silence the server.

Found in review: waitress stops a worker thread once a connection has 16 MB of
unsent answers, until the client reads, and chargebox's deadlines and eviction
skipped connections with answers unsent. One client that pipelined ~200
`GET /openapi.json` (131 KB each) in one packet per connection, on `threads` + a
few connections, pinned every worker thread: /health stopped answering, for good.
Now a connection may have at most 8 requests waiting (more is closed at once),
and answers left unread for CHARGEBOX_REQUEST_TIMEOUT close the connection.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time

import requests

from chargebox.connections import MAX_PIPELINED
from tests.support import ServerProcess

REQUEST = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
DEADLINE = 20  # seconds: a liveness bound; before the fix these never came


@contextlib.contextmanager
def running(tmp_path, threads: int = 16, **env: str):
    server = ServerProcess(tmp_path / "cb.db", threads=threads, env=env).start()
    try:
        yield server
    finally:
        assert server.stop() == 0


@contextlib.contextmanager
def never_reading(url: str, connections: int, pipelined: int):
    """`connections` sockets, each sending `pipelined` requests at once and reading nothing."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    try:
        for _ in range(connections):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.connect((host, int(port)))
            sock.sendall(REQUEST * pipelined)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed it (what it had sent is read and dropped to see)."""
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(1 << 20):
                return True
    except ConnectionResetError:
        return True
    return False


def until(condition, what: str) -> float:
    """Poll `condition` until it holds (bounded by DEADLINE); how long it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < DEADLINE, f"{what} not within {DEADLINE}s"
        time.sleep(0.05)  # polling for the server's close, bounded above
    return time.monotonic() - started


def health_answers(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_clients_pipelining_many_requests_are_closed_and_health_answers(tmp_path):
    with (
        running(tmp_path, threads=16, CHARGEBOX_REQUEST_TIMEOUT="3") as server,
        never_reading(server.url, connections=20, pipelined=200) as sockets,
    ):
        took = until(lambda: all(closed_by_server(sock) for sock in sockets), "the close")
        until(lambda: health_answers(server.url), "/health")
    print(f"\n20 clients pipelining 200 requests each: all closed within {took:.1f}s")


def test_answers_left_unread_leave_the_threads_free_and_the_connection_is_closed(tmp_path):
    """Within the pipelining limit (8 answers, ~1 MB): no worker thread waits for these
    clients, and their connections close: at the request deadline while answers wait
    in chargebox, or at the idle timeout once the kernel has taken them all."""
    with (
        running(
            tmp_path, threads=16, CHARGEBOX_REQUEST_TIMEOUT="2", CHARGEBOX_IDLE_TIMEOUT="2"
        ) as server,
        never_reading(server.url, connections=20, pipelined=MAX_PIPELINED) as sockets,
    ):
        assert health_answers(server.url)  # no thread waits for these clients to read
        took = until(lambda: all(closed_by_server(sock) for sock in sockets), "the close")
    print(f"\nunread answers: 20 connections closed within {took:.1f}s")


def test_connections_whose_answers_are_never_read_do_not_hold_the_budget(tmp_path):
    with (
        running(tmp_path, CHARGEBOX_MAX_CONNECTIONS="16", CHARGEBOX_REQUEST_TIMEOUT="2") as server,
        never_reading(server.url, connections=16, pipelined=MAX_PIPELINED),
    ):
        until(lambda: health_answers(server.url), "/health with the budget spent")

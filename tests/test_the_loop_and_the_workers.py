"""The server's loop and its worker threads share each connection's answers.

A worker thread sends what it writes itself (waitress's `send_bytes` is 1), holding
the connection's `outbuf_lock`; the loop sends what a worker left unsent. While a
worker was in the middle of a send, the loop saw the connection writable, found the
lock taken, and polled again at once: about seven turns of the loop a sale under
`wrk`, each taking the interpreter lock (docs/performance.md). Now a connection is
not writable to the loop while its worker holds that lock; what a worker leaves
unsent still reaches a client that reads slowly.
"""

from __future__ import annotations

import socket
import threading
import time

from waitress.adjustments import Adjustments

from chargebox.connections import _Channel
from tests.support import ServerProcess, socket_queues, wait_until

DEADLINE = 20  # seconds: a liveness bound


class _Server:
    """What a channel asks of its server while it is made and polled."""

    def __init__(self) -> None:
        self.active_channels: dict = {}  # each stub its own, not one shared by every test

    def pull_trigger(self) -> None:
        pass


def test_a_connection_is_not_writable_to_the_loop_while_its_worker_writes():
    mine, theirs = socket.socketpair()
    try:
        channel = _Channel(_Server(), mine, ("127.0.0.1", 1), Adjustments(), map={})
        assert not channel.writable()  # nothing to send
        channel.requests.append(object())  # a worker answers it...
        channel.total_outbufs_len = 10  # ...and has written, not yet sent, 10 bytes
        assert channel.writable()  # left unsent, the lock let go: the loop sends it
        holding, done = threading.Event(), threading.Event()

        def worker() -> None:
            with channel.outbuf_lock:  # as waitress's write_soon holds it
                holding.set()
                assert done.wait(DEADLINE)

        thread = threading.Thread(target=worker)
        thread.start()
        try:
            assert holding.wait(DEADLINE)
            assert not channel.writable()  # the worker is sending: the loop leaves it be
        finally:
            done.set()
            thread.join(DEADLINE)
        assert channel.writable()
        channel.requests.clear()  # no worker: waitress's own answer
        assert channel.writable()
    finally:
        mine.close()
        theirs.close()


def test_a_client_that_reads_slowly_gets_every_answer_whole(tmp_path):
    """Two answers of 131 KB pipelined to a client with a 2 KB receive buffer that reads
    nothing for a while: the worker's sends stop short; the loop sends the rest."""
    server = ServerProcess(tmp_path / "cb.db", threads=4).start()
    try:
        host, port = server.url.removeprefix("http://").split(":")
        expected = len(server.admin().get("/openapi.json").content)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.connect((host, int(port)))
            sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            # not reading yet: the server's sends fill the buffers and stop short
            wait_until(lambda: any(server and send_q for server, _, send_q
                                   in socket_queues(int(port))),
                       "the server's sends waiting for the client", DEADLINE)  # fmt: skip
            sock.settimeout(DEADLINE)
            received = b""
            deadline = time.monotonic() + DEADLINE
            while received.count(b"HTTP/1.1 200") < 2 or len(received) < 2 * expected:
                assert time.monotonic() < deadline, f"{len(received)} bytes only"
                chunk = sock.recv(1 << 16)
                assert chunk, f"closed after {len(received)} bytes"
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        assert server.stop() == 0


class _Finishing(list):
    """A channel's requests whose worker finishes the request while the loop looks: true
    the first time it is tested, empty after."""

    def __init__(self) -> None:
        super().__init__([object()])
        self.tested = 0

    def __bool__(self) -> bool:
        self.tested += 1
        return self.tested == 1


def test_the_loop_never_keeps_the_lock_of_a_request_that_ends_as_it_looks():
    mine, theirs = socket.socketpair()
    try:
        channel = _Channel(_Server(), mine, ("127.0.0.1", 1), Adjustments(), map={})
        channel.requests = _Finishing()
        channel.writable()
        taken: list[bool] = []
        other = threading.Thread(target=lambda: taken.append(channel.outbuf_lock.acquire(False)))
        other.start()
        other.join(DEADLINE)
        assert taken == [True], "the loop kept the connection's outbuf_lock"
    finally:
        mine.close()
        theirs.close()

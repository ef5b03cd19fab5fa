"""A statement is made as fast as its client reads it, its turn lent while it waits.

waitress buffers a connection's answers up to its high watermark (64 MB, on disk past
1 MB) before a worker waits: a statement read slowly was made whole into those buffers
(forty slow downloads held 265 MB of temporary files), and one past 64 MB then held its
turn for as long as its client took, so two slow sellers kept every other seller's
statements waiting, then 503. Now a statement whose client has UNSENT bytes still to take
waits for it, its turn lent to the others meanwhile (helper-93's, s34's notes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading

import pytest
from waitress import wasyncore

from chargebox import statement_turns, statements
from chargebox.connections import build_server, listen
from chargebox.errors import Unavailable
from chargebox.web import create_app
from tests.support import credited_seller, wait_until
from tests.test_statements import write_entries

DEADLINE = 60  # seconds: a liveness bound
PERIOD = "from=2000-01-01&to=2100-01-01"


@contextlib.contextmanager
def serving(service):
    """chargebox's app served as chargebox serves it, its loop in a thread of this
    process: its connections can be looked at."""
    config = dataclasses.replace(service.config, port=0, threads=4)
    server = build_server(create_app(config, service), config, listen(config))
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(DEADLINE)
        server.task_dispatcher.shutdown()
        server.close()


def asked(server, token: str, seller_id: int, receive_buffer: int | None = None
          ) -> socket.socket:  # fmt: skip
    """A connection that asked for the admin's statement of `seller_id` (to be closed after)."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(DEADLINE)
    sock.connect(server.socket.getsockname())
    asking = f"GET /api/statements?seller_id={seller_id}&{PERIOD} HTTP/1.1\r\nHost: x\r\n"
    sock.sendall(f"{asking}Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
    return sock


def body_of(sock: socket.socket) -> bytes:
    """The rest of a chunked answer on `sock`, read to the end, its head checked."""
    received = b""
    while chunk := sock.recv(1 << 16):
        received += chunk
    head, _, chunked = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in head, head
    body = b""
    while True:
        size, _, chunked = chunked.partition(b"\r\n")
        if int(size, 16) == 0:
            return body
        body, chunked = body + chunked[: int(size, 16)], chunked[int(size, 16) + 2 :]


@pytest.mark.sqlite_only  # the mend is in the server's connections, the same on either backend
def test_a_statement_read_slowly_is_made_as_it_is_read_and_lends_its_turn(service):
    """40,000 entries (~8 MB of JSON) to a client that reads nothing: the server holds no
    more than UNSENT and a piece of it unsent (it held all that the kernel did not take),
    another seller's statement is made meanwhile with one turn in all, and the slow one,
    read at last, is the statement whole."""
    service.statement_turns = statement_turns.Turns(at_once=1, waiting=2, wait=3)
    slow = credited_seller(service, 0, "slow")["id"]
    write_entries(service, slow, [(n % 86_400, 1) for n in range(40_000)])
    other = credited_seller(service, 500, "other")["id"]
    whole = b"".join(service.statement(slow, {"from": "2000-01-01", "to": "2100-01-01"}))
    assert len(whole) > 6_000_000
    with serving(service) as server:
        sock = asked(server, service.config.admin_token, slow, receive_buffer=4096)
        try:

            def unsent() -> int:
                return max((c.unsent() for c in list(server.active_channels.values())), default=0)

            wait_until(lambda: unsent() > 0, "the slow client's answer piles up unsent")
            quick = asked(server, service.config.admin_token, other)
            with quick:  # its turn: once the slow one lends it (or is made whole)
                got = json.loads(body_of(quick))
            assert got["seller_id"] == other and got["closing_balance"] == 500
            assert unsent() < statements.UNSENT + 500_000  # (a piece: 1,000 entries)
            assert service.statement_turns.lent() == 1  # the slow one waits still
            assert body_of(sock) == whole
        finally:
            sock.close()
    service.statement(slow, {"day": "2026-12-01"}).close()  # its turn was given back


def test_a_lent_turn_is_taken_back_first_and_few_may_be_lent():
    """A statement waiting for its client holds a request thread: `lending` of them at most
    (past that, one is written ahead into waitress's buffers, as before), LENT_EACH a
    seller (one more of that seller is refused), while the seller's other statements are
    made (helper-97). A lent turn is taken back before any asked since, and one taking its
    turn back is not counted among the `waiting` (helper-98)."""
    turns = statement_turns.Turns(at_once=1, waiting=1, wait=30, lending=2)
    first = turns.take(1)
    assert first.lend()
    again = turns.take(1)  # its first lent, the seller's next is made
    assert again.lend() and turns.lent() == statement_turns.LENT_EACH == 2
    with pytest.raises(Unavailable, match="two statements of this seller"):
        turns.take(1)  # two of its statements wait for their clients
    other = turns.take(2)
    assert not other.lend()  # two lent already: it keeps its turn (written ahead)
    given = {}

    def ask(name: str, how) -> threading.Thread:
        queued = turns.queued()
        thread = threading.Thread(target=lambda: given.setdefault(name, how()))
        thread.start()
        wait_until(lambda: turns.queued() == queued + 1, f"{name} waits its turn")
        return thread

    back = ask("seller 1, back", first.take_back)
    with pytest.raises(Unavailable, match="two statements of this seller"):
        turns.take(1)  # one lent, one taking its turn back
    third = ask("seller 3", lambda: turns.take(3))  # may wait: one waits, the other returns
    with pytest.raises(Unavailable, match="too many"):
        turns.take(4)
    other()  # made: the turn goes to the one taking its own back, not to seller 3
    back.join(DEADLINE)
    assert list(given) == ["seller 1, back"] and turns.lent() == 1
    first()
    third.join(DEADLINE)
    assert list(given) == ["seller 1, back", "seller 3"]
    given["seller 3"]()
    again()
    assert turns.lent() == turns.queued() == 0
    assert not first.lend()  # given back: nothing to lend
    turns.take(1)()  # nothing of seller 1's is held any more


def test_statements_never_hold_a_servers_last_request_thread():
    """With --threads 4, two made, one waiting its turn and one waiting for its client held
    every thread: /health waited 1.7 s (helper-98). Long waits (for a client) are a
    quarter of the threads at most, and all of a statement's waits leave one thread."""
    for threads in range(1, 130):
        turns = statement_turns.for_threads(threads)
        assert turns.lending <= threads // 4 and turns.waiting <= threads // 4
        if threads >= 2:
            assert turns.at_once + turns.waiting + turns.lending <= threads - 1, threads
    assert [statement_turns.for_threads(n).lending for n in (2, 4, 8, 16, 64)] == [0, 0, 2, 4, 16]
    assert [statement_turns.for_threads(n).at_once for n in (1, 2, 3, 4, 64)] == [1, 1, 1, 2, 2]

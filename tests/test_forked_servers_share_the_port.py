"""`serve --processes K`: each forked server listens on a socket of its own on the one
port (SO_REUSEPORT), and the kernel spreads new connections among them.

Before, the K servers shared one listening socket, and whichever woke first accepted
every connection waiting: 64 keep-alive connections opened at once (what `wrk` does)
split 32/32 in one run and 2/62 in another, and two processes then sold no more than
one. The port is still refused when anything holds it, even another server's
reuse-port sockets, which would otherwise share it silently.
"""

from __future__ import annotations

import collections
import http.client
import os

import pytest

from chargebox import connections
from tests.support import ServerProcess
from tests.test_startup_mistakes import assert_refused, chargebox

CONNECTIONS = 64
# Each connection lands on one of two sockets by a hash of its addresses: at least 16 of
# 64 on each fails about once in 40,000 runs (the binomial's two tails).
AT_LEAST = 16

pytestmark = pytest.mark.skipif(
    not connections.SPREAD, reason="Linux spreads a port's connections over its sockets"
)


def test_connections_opened_at_once_are_spread_over_the_servers(tmp_path):
    """64 connections opened together, then each asks once: the answers' request ids
    (each process has a prefix of its own) show both servers holding a fair share."""
    server = ServerProcess(tmp_path / "cb.db", env={"CHARGEBOX_PROCESSES": "2"}).start()
    try:
        host, port = server.url.split("//", 1)[1].rsplit(":", 1)
        connections = [http.client.HTTPConnection(host, int(port), timeout=30)
                       for _ in range(CONNECTIONS)]  # fmt: skip
        for connection in connections:
            connection.connect()
        held = collections.Counter()
        for connection in connections:
            connection.request("GET", "/health")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            held[answer.getheader("X-Request-Id").split("-")[0]] += 1
        for connection in connections:
            connection.close()
    finally:
        assert server.stop() == 0, server.log_path.read_text()[-3000:]
    print(f"\n{CONNECTIONS} connections opened at once, per server: {sorted(held.values())}")
    assert len(held) == 2 and min(held.values()) >= AT_LEAST, held


def test_a_port_held_by_forked_servers_is_refused_to_more_of_them(tmp_path):
    """A second `serve --processes 2` on the port of a running one is refused in one line,
    rather than joining it through SO_REUSEPORT."""
    server = ServerProcess(tmp_path / "cb.db", env={"CHARGEBOX_PROCESSES": "2"}).start()
    try:
        port = server.url.rsplit(":", 1)[1]
        other = tmp_path / "other"
        other.mkdir()
        result = chargebox(
            "serve", "--port", port, "--db", str(other / "cb.db"),
            CHARGEBOX_PROCESSES="2", HOME=os.environ.get("HOME", "/root"),
        )  # fmt: skip
        assert_refused(result, "cannot listen", port)
    finally:
        assert server.stop() == 0, server.log_path.read_text()[-3000:]

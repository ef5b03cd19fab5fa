"""waitress, hardened for clients that are many, slow or hostile; no business rules here.

The listening socket, and waitress's server and channel, specialised so that
idle or half-sent connections cannot starve everyone else (a deadline per
request, a connection budget that evicts before it refuses); what a request may
look like, and waitress's own refusals as JSON, are framing.py's.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import socket
import sys
import time

from waitress.adjustments import Adjustments
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from chargebox import access_log
from chargebox.config import Config
from chargebox.errors import NoTraces, closed_after_an_error
from chargebox.framing import JsonErrorTask, Parser, Task

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX: the limit stays what it is
    resource = None

log = logging.getLogger("chargebox.server")


_NO_TRACES = NoTraces()


# File descriptors kept for everything that is not a client: SQLite files (3 per
# thread's connection), the lock files, waitress's trigger pipe, logs.
FD_RESERVE_PER_THREAD = 4
FD_RESERVE = 64
EVICTION_BATCH = 32  # connections closed at once when the budget is spent
# Requests one connection may have waiting for their answers at once. More is a client
# that pipelines without reading (or a broken one): it is closed, not queued.
MAX_PIPELINED = 8
ACCEPT_BATCH = 256  # connections accepted in one turn of the loop, at most
WAKE = 1.0  # seconds: a worker waiting for its client looks again (a notice missed)


class _Channel(HTTPChannel):
    """A connection that remembers when its current, unfinished request began. Its times,
    waitress's `last_activity` too, are monotonic: a wall clock set back held deadlines off."""

    error_task_class = JsonErrorTask
    parser_class = Parser
    task_class = Task
    request_started = 0.0
    handle_error = closed_after_an_error
    _active_at = 0.0
    _waiting_for_client = False  # a worker is in wait_unsent_below

    @property
    def last_activity(self) -> float:
        return self._active_at

    @last_activity.setter
    def last_activity(self, _wall_clock: float) -> None:
        self._active_at = time.monotonic()

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.monotonic()
        taken = super().received(data)
        if len(self.requests) > MAX_PIPELINED:
            self.will_close = True  # its answers would only pile up unread
        return taken

    def writable(self) -> bool:
        """waitress's answer, but not while a worker thread is in the middle of writing
        this connection's answer: it sends what it writes itself (`send_bytes` 1), holding
        `outbuf_lock`, and the loop could only find the lock taken and poll again at once.
        Under load that spin was most of the loop's work (about seven polls a sale, the
        interpreter lock taken each time: docs/performance.md). waitress wakes the loop
        while the worker still holds the lock, so output a worker leaves unsent is sent
        at the loop's next turn (LOOP_TIMEOUT at most) or when its task ends (a wake-up
        after the lock is let go); one that waits for the loop to drain it waits
        unlocked; one waiting for its client (`wait_unsent_below`) is writable as waitress
        has it: else the loop, woken while that worker still holds the lock, could sleep a
        turn (LOOP_TIMEOUT; a precaution: not seen, and the worker looks again each WAKE)."""
        if self.requests and not self._waiting_for_client:  # (tested once: it may finish)
            if not self.outbuf_lock.acquire(blocking=False):
                return False
            self.outbuf_lock.release()
        return super().writable()

    def unsent(self) -> int:
        """Bytes of answers written here and not yet sent (statements.CLIENT)."""
        return self.total_outbufs_len

    def wait_unsent_below(self, most: int) -> None:
        """Wait, in a worker thread, until fewer than `most` bytes are unsent, as waitress
        waits past its high watermark (each send of the loop's notifies); ClientDisconnected
        if the connection closes first (a client gone, or a download that made no progress
        for `request_timeout`: Server.maintenance)."""
        with self.outbuf_lock:
            self._waiting_for_client = True  # writable() to the loop, the lock held or not
            try:
                while self.connected and self.total_outbufs_len >= most:
                    self.server.pull_trigger()
                    self.outbuf_lock.wait(WAKE)
            finally:
                self._waiting_for_client = False
        if not self.connected:
            raise ClientDisconnected

    def stalled_since(self) -> float | None:
        """Since when answers wait here unsent because the client reads nothing (None:
        nothing unsent). A send that makes progress moves `last_activity`."""
        return self.last_activity if self.total_outbufs_len else None

    def idle_since(self) -> float | None:
        """Since when nobody has been served here (None: a request is being answered)."""
        if self.requests or self.total_outbufs_len or self.will_close:
            return None
        return self.request_started if self.request is not None else self.last_activity


def _shut_down(channel: HTTPChannel) -> None:
    """waitress acts on `will_close` only when the socket turns readable or writable; one
    whose client reads nothing does neither, and a worker waiting for its buffers to drain
    (a long statement, its turn held) waited for good. Shut down, the socket polls
    writable: the send fails, waitress closes it, and the worker's write raises
    ClientDisconnected, which closes what it was sending."""
    with contextlib.suppress(OSError):  # shut down already, or the client is gone
        channel.socket.shutdown(socket.SHUT_RDWR)


class Server(TcpWSGIServer):
    """waitress's server, with a deadline per request and a connection budget.

    waitress closes a connection only after `channel_timeout` without activity,
    so a client that sends one header byte now and then holds it forever, and
    past `connection_limit` it stops accepting for everyone. Here a request must
    arrive whole within `request_timeout`, answers a client does not read are
    dropped after as long, and when the budget is spent the server closes the
    connections that wait longest, from the address holding the most, instead of
    refusing new ones.
    """

    channel_class = _Channel
    handle_error = closed_after_an_error
    request_timeout = 20.0
    log = access_log.LogFile(access_log.OFF)  # where refused requests are logged too
    observe: access_log.Observer | None = None  # and counted (metrics)
    evicted = 0  # connections closed to make room, since start
    _next_eviction_log = 0.0

    def maintenance(self, now: float) -> None:
        idle_cutoff = now - self.adj.channel_timeout
        request_cutoff = now - self.request_timeout
        for channel in list(self.active_channels.values()):
            stalled = channel.stalled_since()
            if stalled is not None:
                # Answers the client does not read: closing wakes a worker thread that
                # waits for them to drain, so it serves others again.
                if stalled < request_cutoff:
                    channel.will_close = True
                    _shut_down(channel)
                continue
            since = channel.idle_since()
            if since is None:
                continue
            cutoff = request_cutoff if channel.request is not None else idle_cutoff
            if since < cutoff:
                channel.will_close = True

    def readable(self) -> bool:
        now = time.monotonic()  # the channels' times (_Channel)
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        if len(self.active_channels) < self.adj.connection_limit:
            return True
        # Over budget: room is coming if some connections are already closing.
        closing = sum(1 for channel in self.active_channels.values() if channel.will_close)
        if len(self.active_channels) - closing < self.adj.connection_limit:
            return True
        return self._evict() > 0

    def handle_accept(self) -> None:
        """Accept every connection waiting, not one per turn of the loop: with thousands
        open, each turn polls them all, and a backlog would take seconds to drain."""
        for _ in range(ACCEPT_BATCH):
            before = len(self.active_channels)
            super().handle_accept()
            if len(self.active_channels) == before:  # none was waiting (or accept failed)
                return
            if len(self.active_channels) >= self.adj.connection_limit:
                return  # readable() makes room first

    def refused(self, channel: HTTPChannel, request, status: int, ident: str) -> None:
        """A request waitress refused itself, in the access log and the metrics like any."""
        method = getattr(request, "command", "") or "-"
        seconds = max(0.0, time.monotonic() - getattr(channel, "request_started", 0.0))
        self.log.write(
            access_log.line(ident=ident, method=method, path=getattr(request, "path", "") or "-",
                            status=status, seconds=seconds, client=_address(channel))
        )  # fmt: skip
        if self.observe is not None:
            self.observe({}, method, status, seconds)

    def _evict(self) -> int:
        """Close the longest-waiting idle connections, most-connected address first."""
        waiting = [
            (since, channel)
            for channel in self.active_channels.values()
            if (since := channel.idle_since()) is not None
        ]
        per_address = collections.Counter(_address(channel) for _, channel in waiting)
        chosen = heapq.nsmallest(
            EVICTION_BATCH,
            waiting,
            key=lambda pair: (-per_address[_address(pair[1])], pair[0]),
        )
        for _, channel in chosen:
            channel.will_close = True
        self.evicted += len(chosen)
        now = time.monotonic()
        if chosen and now >= self._next_eviction_log:  # one line per 10 s, not per batch
            self._next_eviction_log = now + 10
            log.warning(
                "connection budget of %d spent: %d waiting connection(s) closed so far, "
                "now most from %s",
                self.adj.connection_limit,
                self.evicted,
                _address(chosen[0][1]),
            )
        return len(chosen)


def _address(channel: HTTPChannel) -> str:
    return channel.addr[0] if isinstance(channel.addr, tuple) else str(channel.addr)


def listen(config: Config) -> socket.socket:
    """The listening socket of `--host`/`--port`; ValueError (one line) when it cannot be had.

    With `--processes K` (K > 1) on Linux it is the first of K listening sockets on the
    port (SO_REUSEPORT; the others: `listen_beside`), one per forked server, and the
    kernel spreads new connections evenly among them. On one shared socket, whichever
    server woke first took every connection waiting (a burst of 64 keep-alive
    connections split 32/32 or 2/62 by chance). A plain socket is had first, so that a
    port held by anything else, even another server's reuse-port sockets, is refused
    here as always.
    """
    where = f"{config.host}:{config.port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        plain = socket.create_server(address, family=family, backlog=BACKLOG)
        if config.processes == 1 or not SPREAD:
            return plain
        address = plain.getsockname()  # the port the system chose, if --port 0
        plain.close()
        return _reusing_port(family, address)
    except OSError as exc:
        # create_server() appends "(while attempting to bind on address ...)": said above.
        reason = (exc.strerror or str(exc)).split(" (while attempting")[0]
        raise ValueError(f"cannot listen on {where} (--host/--port): {reason}") from None


BACKLOG = 1024
# Linux spreads a port's connections over its SO_REUSEPORT sockets; macOS and older
# FreeBSD have the option but give every connection to one socket: there, one is shared.
SPREAD = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def listen_beside(first: socket.socket) -> socket.socket:
    """Another listening socket on the port of `first` (from `listen`), for one more
    forked server; without SPREAD, `first` itself, shared."""
    if not SPREAD:
        return first
    return _reusing_port(first.family, first.getsockname())


def _reusing_port(family: int, address: tuple) -> socket.socket:
    """A socket listening on `address` with SO_REUSEPORT: one of the port's sockets,
    among which the kernel spreads its new connections."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:  # as create_server() makes it: IPv6 only
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards `wanted`; return the limit now in force."""
    if resource is None:  # pragma: no cover
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = ceiling
    return wanted if soft == resource.RLIM_INFINITY else min(soft, wanted)


def connection_budget(config: Config) -> int:
    """How many client connections one server process holds: the setting, within the fd limit."""
    reserve = FD_RESERVE + FD_RESERVE_PER_THREAD * config.threads
    available = raise_fd_limit(config.max_connections + reserve) - reserve
    if available < config.max_connections:
        log.warning(
            "the open-file limit allows %d connections, not the %d configured (raise ulimit -n)",
            max(available, 16),
            config.max_connections,
        )
    return max(available, 16)


def build_server(
    app, config: Config, listener: socket.socket, log: access_log.LogFile | None = None
) -> Server:
    """A hardened waitress server for `app` on an already bound `listener`; `log`: where
    the requests it refuses itself are logged (the app's own are logged by the app)."""
    adj = Adjustments(
        sockets=[listener],
        threads=config.threads,
        ident="chargebox",
        connection_limit=connection_budget(config),
        channel_timeout=config.idle_timeout,
        # A worker thread waits while a connection holds this much unsent: with at most
        # MAX_PIPELINED answers per connection (each well under 1 MB), it never does.
        outbuf_high_watermark=64 << 20,
        cleanup_interval=1,  # the deadlines above are checked every second
        # Our own JSON 413 fires above max_body_bytes; waitress's plain one far above it.
        max_request_body_size=max(16 * config.max_body_bytes, 1 << 20),
        # Forwarding headers are dropped here, or by proxy.py after it read the trusted ones.
        clear_untrusted_proxy_headers=config.trusted_proxy is None,
        expose_tracebacks=False,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    server = Server(
        app,
        map={},
        _sock=listener,
        dispatcher=dispatcher,
        adj=adj,
        bind_socket=False,
        sockinfo=(listener.family, listener.type, listener.proto, listener.getsockname()),
    )
    server.request_timeout = config.request_timeout
    # what an answer's body raised once its head was sent (a statement whose next chunk the
    # database refused: the client sees the download cut short), a failed accept()
    logging.getLogger("waitress").addFilter(_NO_TRACES)  # once: a filter is added once
    if log is not None:
        server.log = log
    server.observe = getattr(app, "observe", None)
    return server

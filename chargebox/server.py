"""Running the app on waitress, and stopping it cleanly on SIGTERM or Ctrl-C.

waitress's own `serve()` dies on SIGTERM and, on Ctrl-C, stops its loop before
the responses of requests in flight are flushed. Here the loop runs until a
signal; then the listening socket closes, requests in flight finish and are
sent, idle keep-alive connections close, and only then do the threads stop.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from chargebox import db
from chargebox.config import Config
from chargebox.web import create_app
from chargebox.web.errors import json_body

GRACE_SECONDS = 8.0  # API.md promises exit within 10 s
LOOP_TIMEOUT = 0.2


class _Stop:
    requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True


# Errors waitress answers itself, before the app sees the request.
_WAITRESS_CODES = {400: "bad_request", 413: "payload_too_large", 431: "headers_too_large"}


class _JsonErrorTask(ErrorTask):
    """waitress's own errors (a body over its limit, a broken request) in our JSON shape."""

    def execute(self) -> None:
        error = self.request.error
        code = _WAITRESS_CODES.get(error.code, "internal_error")
        body = json_body({"error": {"code": code, "message": error.reason.lower()}})
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json; charset=utf-8"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _JsonChannel(HTTPChannel):
    error_task_class = _JsonErrorTask


def build_server(config: Config, listener: socket.socket | None = None):
    app = create_app(config)
    where = {"sockets": [listener]} if listener else {"host": config.host, "port": config.port}
    server = waitress.create_server(
        app,
        **where,
        threads=config.threads,
        ident="chargebox",
        # More connections than threads is fine: waitress queues requests, not sockets.
        connection_limit=max(100, 8 * config.threads),
        # Our own JSON 413 fires above max_body_bytes; waitress's plain one far above it.
        max_request_body_size=max(16 * config.max_body_bytes, 1 << 20),
        clear_untrusted_proxy_headers=True,
        expose_tracebacks=False,
    )
    server.channel_class = _JsonChannel
    return server


def _announcement(config: Config, host: str, port: int) -> str:
    workers = f"{config.processes} processes x " if config.processes > 1 else ""
    return (
        f"chargebox serving on http://{host}:{port} (db {config.db_path}, "
        f"{workers}{config.threads} threads, synchronous={config.synchronous})"
    )


def serve(config: Config, announce=print) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status (0 after a clean stop)."""
    if config.processes > 1:
        return _serve_processes(config, announce)
    server = build_server(config)
    announce(_announcement(config, server.effective_host, server.effective_port))
    return _serve_one(server, announce)


def _serve_one(server, announce, parent: int | None = None) -> int:
    """Serve until a signal, or (a forked child) until its supervising parent is gone."""
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.requested and (parent is None or os.getppid() == parent):
            wasyncore.loop(timeout=LOOP_TIMEOUT, map=server._map, use_poll=True, count=1)
        announce("chargebox stopping: finishing requests in flight")
        _drain(server)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        db.close_database()
    announce("chargebox stopped")
    return 0


def _serve_processes(config: Config, announce) -> int:
    """K forked copies of the server on one listening socket: the kernel spreads connections.

    Each child has its own interpreter lock, database connections and group
    writer; the database lock (and the write gate's flock) still serialise
    their writes. The parent only supervises: it forwards SIGTERM and waits.
    """
    listener = socket.create_server((config.host, config.port), backlog=1024)
    host, port = listener.getsockname()[:2]
    db.close_database()  # no connection may cross a fork
    children = []
    for _ in range(config.processes):
        pid = os.fork()
        if pid == 0:  # the child serves until told to stop, and never returns here
            code = 1
            try:
                code = _serve_one(build_server(config, listener), lambda line: None, os.getppid())
            finally:
                os._exit(code)
        children.append(pid)
    listener.close()
    announce(_announcement(config, host, port))
    return _supervise(children, announce)


def _supervise(children: list[int], announce) -> int:
    stop = _Stop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    status = {}
    while not stop.requested and len(status) < len(children):
        time.sleep(LOOP_TIMEOUT)  # polling for a signal or a dead child, not for an outcome
        status.update(_reaped(children))
    if len(status) < len(children):
        announce("chargebox stopping: finishing requests in flight")
    for pid in children:
        if pid not in status:
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS + 1
    while len(status) < len(children) and time.monotonic() < deadline:
        time.sleep(0.05)
        status.update(_reaped(children))
    for pid in set(children) - set(status):
        os.kill(pid, signal.SIGKILL)
        status[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    announce("chargebox stopped")
    return 0 if stop.requested and not any(status.values()) else 1


def _reaped(children: list[int]) -> dict[int, int]:
    done = {}
    for pid in children:
        try:
            waited, code = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if waited:
            done[pid] = os.waitstatus_to_exitcode(code)
    return done


def _drain(server) -> None:
    wasyncore.dispatcher.close(server)  # stop accepting; keep the trigger for the workers
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        busy = False
        for channel in list(server.active_channels.values()):
            if channel.requests or channel.total_outbufs_len:
                busy = True
            else:
                channel.will_close = True  # idle keep-alive: close it
        if not busy:
            break
        wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
    wasyncore.close_all(server._map)

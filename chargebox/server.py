"""Running the app on waitress, and stopping it cleanly on SIGTERM or Ctrl-C.

waitress's own `serve()` dies on SIGTERM and, on Ctrl-C, stops its loop before
the responses of requests in flight are flushed. Here the loop runs until a
signal; then the listening socket closes, requests in flight finish and are
sent, idle keep-alive connections close, and only then do the threads stop.
"""

from __future__ import annotations

import signal
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


def build_server(config: Config):
    app = create_app(config)
    server = waitress.create_server(
        app,
        host=config.host,
        port=config.port,
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


def serve(config: Config, announce=print) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status (0 after a clean stop)."""
    server = build_server(config)
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    announce(
        f"chargebox serving on http://{server.effective_host}:{server.effective_port} "
        f"(db {config.db_path}, {config.threads} threads, synchronous={config.synchronous})"
    )
    try:
        while not stop.requested:
            wasyncore.loop(timeout=LOOP_TIMEOUT, map=server._map, use_poll=True, count=1)
        announce("chargebox stopping: finishing requests in flight")
        _drain(server)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        db.close_database()
    announce("chargebox stopped")
    return 0


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

"""Running the app on waitress, and stopping it cleanly on SIGTERM, Ctrl-C or SIGHUP.

waitress's own `serve()` dies on SIGTERM and, on Ctrl-C, stops its loop before
the responses of requests in flight are flushed. Here the loop runs until a
signal; then the listening socket closes, requests in flight finish and are
sent, idle keep-alive connections close, and only then do the threads stop.
With `--processes K` a parent supervises K forked servers and replaces the dead.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator

from waitress import wasyncore

from chargebox import cpus, metric_files, metrics
from chargebox.access_log import AccessLog, LogFile, keep_out
from chargebox.config import Config
from chargebox.connections import build_server, listen, listen_beside
from chargebox.errors import raised_at
from chargebox.keeper import Keeper
from chargebox.postgresql import described
from chargebox.proxy import TrustedProxy
from chargebox.wal import checkpointing
from chargebox.web import create_app

log = logging.getLogger("chargebox.server")

GRACE_SECONDS = 8.0  # docs/api.md promises exit within 10 s
LOOP_TIMEOUT = 0.2
# A child that dies sooner than this after its start is crash-looping: its
# replacement waits, twice as long each time, up to RESTART_DELAY_MAX.
STABLE_SECONDS = 10.0
RESTART_DELAY_MIN = 0.5
RESTART_DELAY_MAX = 30.0


# A clean stop: SIGTERM, Ctrl-C (SIGINT), or the terminal closed (SIGHUP: its default, a
# death, would skip the requests in flight; there is nothing to reload, and the access log
# is followed without a signal). One ignored as the server starts (nohup's SIGHUP) stays so.
STOPS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class _Stop:
    requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True


def _announcement(config: Config, host: str, port: int) -> str:
    workers = f"{config.processes} processes x " if config.processes > 1 else ""
    where = described(config.db_url) if config.db_url else config.db_path
    # SQLite's pragma; PostgreSQL commits as its synchronous_commit says (off: warned)
    durability = "" if config.db_url else f", synchronous={config.synchronous}"
    pinned = cpus.described(config.cpus, config.processes, writer_apart(config))
    return (
        f"chargebox serving on http://{host}:{port} (db {where}, "
        f"{workers}{config.threads} threads{durability}{pinned})"
    )


def serve(
    config: Config,
    announce=print,
    listener: socket.socket | None = None,
    log: LogFile | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status (0 after a clean stop).

    `listener` is the bound socket (cli binds it before it touches the database);
    without one, a host or port that cannot be had is a one-line ValueError here.
    `config.cpus` is resolved (`cpus.resolved`: cli does it before any file is made).
    """
    listener = listener or listen(config)
    log = log or LogFile(config.access_log)  # a file that cannot be opened is refused
    if config.processes > 1:
        # The children's metrics meet in files here, summed by whichever child is scraped.
        shared, alive = metric_files.shared_directory()
        metrics.start(shared)
        try:
            return _serve_processes(config, listener, announce, log)
        finally:
            shutil.rmtree(shared, ignore_errors=True)
            os.close(alive)
    cpus.pin(config.cpus, 1, 0, writer_apart(config))  # before the threads: they inherit it
    metrics.start()
    server = build_server(application(config, log), config, listener, log)
    with _stopped_by_signal() as stop:  # a SIGTERM right after the line is a clean stop too
        announce(_announcement(config, server.effective_host, server.effective_port))
        with beside_serving(config):
            return _serve_one(server, announce, stop)


@contextlib.contextmanager
def beside_serving(config: Config) -> Iterator[None]:
    """The threads a server process runs beside waitress's while it serves: its anchoring
    (keeper.py) and, on SQLite, the WAL's checkpoints (wal.py); each makes a last round as
    the process stops serving."""
    with Keeper(config).running(), checkpointing(config):
        yield


def writer_apart(config: Config) -> bool:
    """Whether a pinned process's writer gets a CPU of its own when one is spare: on SQLite,
    whose work it does outside the interpreter lock; not on PostgreSQL (round trips, each a
    hand-over: not measured apart), nor without group commit (no writer thread)."""
    return config.group_commit and not config.db_url


def application(config: Config, log: LogFile) -> AccessLog:
    """The WSGI application one server process runs: the app, inside its access log (which
    reads the client's address once the app has run, so it logs the one a trusted proxy
    forwarded)."""
    app = create_app(config)
    if config.admin_token:
        keep_out(config.admin_token)  # never logged, even pasted into a path
    if config.trusted_proxy is not None:
        app = TrustedProxy(app, config.trusted_proxy)
    return AccessLog(app, log, metrics.observe)


def _serve_one(server, announce, stop: _Stop, parent: int | None = None) -> int:
    """Serve until a signal sets `stop`, or (a forked child) until its supervising parent,
    `parent`, is gone."""
    settle()
    while not stop.requested and (parent is None or os.getppid() == parent):
        wasyncore.loop(timeout=LOOP_TIMEOUT, map=server._map, use_poll=True, count=1)
    announce("chargebox stopping: finishing requests in flight")
    _drain(server)
    announce("chargebox stopped")
    return 0


@contextlib.contextmanager
def _stopped_by_signal() -> Iterator[_Stop]:
    """A signal of STOPS sets the flag yielded, until the block ends: installed before a
    process says it serves, so that a signal sent as soon as the line is read stops it
    cleanly (exit 0) rather than killing it."""
    stop = _Stop()  # (a signal ignored as it starts, as `nohup` ignores SIGHUP, stays so)
    previous = {sig: signal.signal(sig, stop) for sig in STOPS
                if signal.getsignal(sig) is not signal.SIG_IGN}  # fmt: skip
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def settle() -> None:
    """Keep what the process made to start (modules, the app, its routes and templates:
    ~48,000 objects) out of the garbage collector's full passes from now on. Each such pass
    walked them all holding the interpreter lock: 22-28 ms, every ~20 s under load in each
    server process (stress backends, PostgreSQL), which stalled every request of the
    process and, on PostgreSQL, a batch holding its sellers' rows. Objects made later are
    collected as before; a frozen one that is dropped is freed by its reference count."""
    gc.collect()
    gc.freeze()


def _serve_processes(config: Config, listener, announce, log: LogFile) -> int:
    """K forked copies of the server on one port, each on a listening socket of its own
    (`listener` and K - 1 more, connections.listen_beside): the kernel spreads new
    connections evenly among them.

    Each child has its own interpreter lock, database connections and group
    writer; the database lock (and the write gate's flock) still serialise
    their writes. The parent only supervises: it replaces a child that dies,
    forwards SIGTERM and waits. It keeps every socket open, listening: the
    connections a dead child's socket receives wait there for its replacement.
    """
    host, port = listener.getsockname()[:2]
    sockets = [listener, *(listen_beside(listener) for _ in range(config.processes - 1))]
    # No database is open here (cli.prepare closed its own): each child opens its own.
    supervisor = _Supervisor(config, sockets, log)
    try:
        with _stopped_by_signal() as stop:  # before the line, as in serve()
            for slot in range(config.processes):
                supervisor.start_child(slot)
            announce(_announcement(config, host, port))
            return supervisor.run(announce, stop)
    finally:
        for sock in sockets:
            sock.close()


class _Supervisor:
    """The parent of K server processes: each death is logged and replaced, with back-off."""

    def __init__(self, config: Config, sockets: list, log: LogFile | None = None) -> None:
        self.config = config
        self.sockets = sockets  # one per child; a replacement takes its predecessor's
        # Opened once, here: each child appends whole lines to the one file.
        self.log = log or LogFile(config.access_log)
        self.started: dict[int, tuple[float, int]] = {}  # live child pid -> (since, socket)
        self.delay = 0.0  # before the next replacement; grows while children crash-loop
        self.due: list[tuple[float, int]] = []  # when each pending replacement starts, where
        self.replaced = 0

    def start_child(self, slot: int) -> None:
        parent = os.getpid()  # before the fork: a parent dead before the child asks is seen
        # Held back across the fork: one that came before the child's SIG_DFL would set the
        # parent's flag, copied there, that nobody reads, and the child would serve on.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
            raise
        if pid == 0:  # the child serves until told to stop, and never returns here
            # Until it serves, a SIGTERM ends the child at once (one that came meanwhile
            # too, as it is let through): nothing is in flight yet.
            for sig in STOPS:
                if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
                    signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
            code = 1
            own = self.sockets[slot]
            for other in self.sockets:
                if other is not own:
                    other.close()  # this process's copy: the parent's stays open
            try:
                cpus.pin(self.config.cpus, self.config.processes, slot, writer_apart(self.config))
                app = application(self.config, self.log)
                server = build_server(app, self.config, own, self.log)
                with _stopped_by_signal() as stop, beside_serving(self.config):
                    code = _serve_one(server, lambda line: None, stop, parent)
            except Exception as exc:  # said in one line (no trace), then replaced
                log.error("server process %d failed: %s: %s (at %s)",
                          os.getpid(), type(exc).__name__, exc, raised_at(exc))  # fmt: skip
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)  # the parent's flag, if one came
        self.started[pid] = (time.monotonic(), slot)

    def run(self, announce, stop: _Stop) -> int:
        while not stop.requested:
            time.sleep(LOOP_TIMEOUT)  # polling for a signal or a dead child, not for an outcome
            if stop.requested:  # a Ctrl-C reaches the children too: no death to mourn now
                break
            self.log.follow()  # a rotated access log is let go here too
            for pid, code in _reaped(list(self.started)).items():
                self._mourn(pid, code)
            now = time.monotonic()
            while self.due and self.due[0][0] <= now and not stop.requested:
                _, slot = self.due.pop(0)
                self.start_child(slot)
                self.replaced += 1
        announce("chargebox stopping: finishing requests in flight")
        status = self._stop_children()
        announce("chargebox stopped")
        # A child still starting when the SIGTERM (or a terminal's Ctrl-C) came ends by it
        # (SIG_DFL, above): nothing was in flight there, so that too is a clean stop.
        return 0 if all(code == 0 or -code in STOPS for code in status.values()) else 1

    def _mourn(self, pid: int, code: int) -> None:
        since, slot = self.started.pop(pid)
        lived = time.monotonic() - since
        metrics.process_ended(pid)
        if lived < STABLE_SECONDS:
            self.delay = min(max(2 * self.delay, RESTART_DELAY_MIN), RESTART_DELAY_MAX)
        else:
            self.delay = 0.0
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
        log.warning(
            "server process %d %s after %.1f s; starting a replacement in %.1f s",
            pid,
            how,
            lived,
            self.delay,
        )
        self.due.append((time.monotonic() + self.delay, slot))
        self.due.sort()

    def _stop_children(self) -> dict[int, int]:
        children = list(self.started)
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        status: dict[int, int] = {}
        deadline = time.monotonic() + GRACE_SECONDS + 1
        while len(status) < len(children) and time.monotonic() < deadline:
            time.sleep(0.05)
            status.update(_reaped(children))
        for pid in set(children) - set(status):
            log.warning("server process %d did not stop in time: killed", pid)
            os.kill(pid, signal.SIGKILL)
            status[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        return status


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
    """Stop accepting; answer the requests read already (GRACE_SECONDS at most), saying
    how many there are; close the connections as they fall idle."""
    wasyncore.dispatcher.close(server)  # stop accepting; keep the trigger for the workers
    read = sum(len(channel.requests) for channel in list(server.active_channels.values()))
    log.info("server process %d stopping: answering the %d requests in flight (%g s at most)",
             os.getpid(), read, GRACE_SECONDS)  # fmt: skip
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

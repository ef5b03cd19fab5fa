"""A COMMIT whose answer was lost: what became of its transaction, read before anyone is answered.

A write is answered 503 only when nothing was changed (docs/api.md). When the
connection to PostgreSQL breaks after COMMIT was sent (a network cut, a pooler
restarting, the server stopped), the transaction may have committed or not, and the
broken connection cannot say which. So each write transaction learns its own id
and backend as it begins (`txid_current()`, `pg_backend_pid()`: sent with BEGIN, no
round trip more), and, if its COMMIT's answer is lost, `outcome` asks a new
connection (`txid_status`): committed, and every write of it is answered as done;
aborted, and 503 is true. While the backend is still finishing it (in progress),
the question is asked again until the writes' deadline; then that backend is
stopped (`pg_terminate_backend`, if it still runs that transaction; at once if it
waits, idle, for a COMMIT that never came) and asked again. A server that cannot be
reached by then leaves the outcome unknown: 503, as before, and the transaction's id
is logged for the operator to look up. Each is
counted (`chargebox_lost_commits_total{outcome}`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from chargebox import metrics
from chargebox.pg_driver import connect

_log = logging.getLogger("chargebox.postgresql")
IDENTITY = "txid_current(), pg_backend_pid()"  # read as BEGIN is sent (Write.bound)
POLL = 0.02  # seconds between two questions
GRACE = 5.0  # seconds more, past the deadline, for a stopped backend to end
_STATUS = "SELECT txid_status(%s)"
# Stop the backend if it still runs the transaction (a pid may be reused once it has gone):
# at once if it waits, idle, for a COMMIT that is not coming; otherwise at the deadline.
_STOP = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s"
    " AND backend_xid::text = %s"
)
_STOP_IDLE = _STOP + " AND state = 'idle in transaction'"


def outcome(url: str, xid: int, pid: int, deadline: float) -> bool:
    """Whether transaction `xid` (run by backend `pid`), whose COMMIT's answer was lost,
    committed. Asked from a thread of its own, so that the group writer waits no longer
    than the deadline and GRACE (a pooler may queue the question; a network may drop it)."""
    found: list[str] = []
    asking = threading.Thread(target=lambda: found.append(_asked_until(url, xid, pid, deadline)),
                              name="chargebox-lost-commit", daemon=True)  # fmt: skip
    asking.start()
    asking.join(max(0.0, deadline - time.monotonic()) + GRACE + 1)
    status = found[0] if found else "not known"
    if status in ("committed", "aborted"):
        _log.warning("a COMMIT's answer was lost; transaction %d %s", xid, status)
        metrics.commit_lost(status)
        return status == "committed"
    _log.error("a COMMIT's answer was lost and transaction %d is %s: look it up with"
               " SELECT txid_status(%d)", xid, status, xid)  # fmt: skip
    metrics.commit_lost("unknown")
    return False


def _asked_until(url: str, xid: int, pid: int, deadline: float) -> str:
    """The transaction's status once final ('committed', 'aborted'), or the last one
    read when time ran out; its backend stopped if it still runs it (see _STOP)."""
    conn, status, stopped, last = None, None, False, deadline + GRACE
    try:
        while time.monotonic() < last:
            conn, status = _asked(conn, url, xid, last)
            if status in ("committed", "aborted"):
                return status
            if conn is not None and status == "in progress" and not stopped:
                stop = _STOP if time.monotonic() >= deadline else _STOP_IDLE
                with contextlib.suppress(Exception):  # unanswered: asked again
                    stopped = bool(conn.execute(stop, (pid, str(xid % 2**32))).fetchall())
            time.sleep(POLL)
    finally:
        if conn is not None:
            conn.close()
    return status or "not known"


def _asked(conn, url: str, xid: int, last: float) -> tuple[object, str | None]:
    """A connection (the one given, or a new one) and the transaction's status, 'committed',
    'aborted' or 'in progress'; (None, None) if the server cannot be asked now."""
    try:
        if conn is None:  # libpq waits at least 2 s for a connection; a silent peer, as long
            left = max(2, int(last - time.monotonic() + 1))  # (not the default 10 s)
            conn = connect(url, autocommit=True, timeout=left, lost_after=left)
        return conn, conn.execute(_STATUS, (xid,)).fetchone()[0]
    except Exception:  # down or restarting: asked again, on a new connection, until the end
        if conn is not None:
            conn.close()
        return None, None

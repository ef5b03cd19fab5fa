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
stopped (`pg_terminate_backend`, if it still runs that transaction) and asked once
more. A server that cannot be reached by then leaves the outcome unknown: 503, as
before, and the transaction's id is logged for the operator to look up. Each is
counted (`chargebox_lost_commits_total{outcome}`).
"""

from __future__ import annotations

import contextlib
import logging
import time

from chargebox import metrics
from chargebox.errors import Unavailable
from chargebox.pg_driver import connect

_log = logging.getLogger("chargebox.postgresql")
IDENTITY = "SELECT txid_current(), pg_backend_pid()"
POLL = 0.02  # seconds between two questions
GRACE = 0.5  # seconds more, once the backend was told to stop
_STATUS = "SELECT txid_status(%s)"
_STOP = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s"
    " AND backend_xid::text = %s"
)


def outcome(url: str, xid: int, pid: int, deadline: float) -> bool:
    """Whether transaction `xid` (run by backend `pid`), whose COMMIT's answer was lost,
    committed (True) or not (False); Unavailable if that cannot be known in time."""
    conn, status, stopped = None, None, False
    try:
        while True:
            conn, status = _asked(conn, url, xid, deadline)
            if status in ("committed", "aborted"):
                _log.warning("a COMMIT's answer was lost; transaction %d %s", xid, status)
                metrics.commit_lost(status)
                return status == "committed"
            if time.monotonic() >= deadline:
                if stopped or conn is None or status != "in progress":
                    break
                with contextlib.suppress(Exception):  # it still runs it: stop it
                    conn.execute(_STOP, (pid, str(xid % 2**32)))
                stopped, deadline = True, time.monotonic() + GRACE
            time.sleep(POLL)
    finally:
        if conn is not None:
            conn.close()
    _log.error("a COMMIT's answer was lost and transaction %d is %s: look it up with"
               " SELECT txid_status(%d)", xid, status or "not known", xid)  # fmt: skip
    metrics.commit_lost("unknown")
    raise Unavailable("the database is busy or unavailable; retry shortly")


def _asked(conn, url: str, xid: int, deadline: float) -> tuple[object, str | None]:
    """A connection (the one given, or a new one) and the transaction's status, 'committed',
    'aborted' or 'in progress'; (None, None) if the server cannot be asked now."""
    try:
        if conn is None:  # libpq waits at least 2 s for a connection
            conn = connect(url, True, timeout=max(2, int(deadline - time.monotonic() + 1)))
        return conn, conn.execute(_STATUS, (xid,)).fetchone()[0]
    except Exception:  # down or restarting: asked again, on a new connection, until the deadline
        if conn is not None:
            conn.close()
        return None, None

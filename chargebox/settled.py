"""PostgreSQL: the ids a page may show, so that a cursor never passes a row still to come.

A list is paged by `after_id`: a client passes the last id it was shown and gets the
rows above it (docs/api.md, Lists). On SQLite that is exact: one write at a time takes
its ids and commits, so the rows commit in id order. On PostgreSQL, writes of other
sellers on other servers run side by side: one transaction takes id 100, another
takes 101 and commits first. A page read between them shows 101 and not 100, and the
client, passing 101 next, never sees 100: a sale missing from a reconciliation that
walked every page.

So a page on PostgreSQL shows only settled ids (`top`):

1. read the last id the table's sequence has handed out, `last`;
2. then, in a later statement, list the transactions in progress that may write
   the table (`pg_stat_activity`: sessions on this database whose role may insert
   into it), and wait until each has ended (polled: a write lasts a batch,
   milliseconds), no longer than the busy timeout, then 503 like a lock not had
   (LockTimeout: the client retries). Another database's transactions, and a
   reporting role's, are not waited for; an operator's write transaction left
   open as the owner or a superuser is, and holds pages back until it ends;
3. the page, read after that, shows ids up to `last` only (the rest are on the next).

Why that holds: every write transaction takes its transaction id as it begins
(`lost_commit.IDENTITY`, sent with BEGIN), before it takes any id, and a sequence
hands out one id at a time (no CACHE: none is kept by a session to use later). An id
up to `last` was taken before step 2 looked, so its transaction had ended by
then, or was waited for: it committed, and the page reads it, or rolled back, and
the id is never used. A sequence not used yet (a new database, or one `chargebox
copy` filled, with the next id set but not taken) has handed out none: the table's
largest id stands in, every row then having been written with its id given.

A page costs one round trip more (the two statements go down one pipeline), and,
while writes are in flight, the wait for them: about one batch. A page of one
seller's sales, entries or credit requests needs none of it (queries.UNDER_SELLER_LOCK:
they are written under the seller's row lock, so they commit in id order).
"""

from __future__ import annotations

import time

from chargebox.errors import LockTimeout
from chargebox.pg_driver import pipelined

_LAST = (
    "SELECT COALESCE(pg_sequence_last_value(CAST(pg_get_serial_sequence(%s, 'id')"
    " AS regclass)), (SELECT max(id) FROM {table}), 0)"
)
# The transactions in progress (each as its backend and transaction id) that may write
# `table`: of sessions on this database whose role may insert into it (the service's, its
# owner's, a superuser's); then, of those, the ones still running.
_IN_FLIGHT = (
    "SELECT ARRAY(SELECT pid || ':' || backend_xid FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_xid IS NOT NULL"
    " AND pid <> pg_backend_pid() AND has_table_privilege(usesysid, %s, 'INSERT'))"
)
_STILL = (
    "SELECT ARRAY(SELECT pid || ':' || backend_xid FROM pg_stat_activity"
    " WHERE pid || ':' || backend_xid = ANY(CAST(%s AS text[])))"
)
FIRST_PAUSE, LONGEST_PAUSE = 0.001, 0.02  # seconds between two polls: doubling, up to


def top(conn, table: str, deadline: float) -> int:
    """The largest id of `table` a page may show now: every row up to it is committed or
    never will be (see the top). LockTimeout if a transaction in progress has not ended
    by `deadline` (time.monotonic())."""
    with pipelined(conn):
        last = conn.execute(_LAST.format(table=table), (table,))
        in_flight = conn.execute(_IN_FLIGHT, (table,))
    (last,), ((waiting,),) = last.fetchone(), in_flight.fetchall()
    pause = FIRST_PAUSE
    while waiting:
        if time.monotonic() >= deadline:
            raise LockTimeout("the database is busy; retry shortly")
        time.sleep(pause)
        pause = min(2 * pause, LONGEST_PAUSE)
        (waiting,) = conn.execute(_STILL, (waiting,)).fetchone()
    return last

"""PostgreSQL: the ids a page may show, so that a cursor never passes a row still to come.

A list is paged by `after_id`: a client passes the last id it was shown and gets the
rows above it (docs/api.md, Lists). On SQLite that is exact: one write at a time takes
its ids and commits, so the rows commit in id order. On PostgreSQL, writes of other
sellers on other servers run side by side: one transaction takes id 100, another
takes 101 and commits first. A page read between them shows 101 and not 100, and the
client, passing 101 next, never sees 100: a sale missing from a reconciliation that
walked every page.

So a page on PostgreSQL shows only settled ids, those up to a `top`:

1. read the last id the table's sequence has handed out, `last`;
2. then, in a later statement, list the transactions that hold a lock on that
   sequence (`pg_locks`: `nextval` takes one, kept until the transaction ends,
   whoever runs it, under whatever role, prepared transactions too), and wait until
   each has ended (polled: a write lasts a batch, milliseconds);
3. `last` is then settled: every id up to it was handed out before step 2 looked, so
   its transaction had ended by then, or was waited for: it committed, and a page
   reads it, or rolled back, and the id is never used. A sequence not used yet (a new
   database, or one `chargebox copy` filled, with the next id set but not taken) has
   handed out none: the table's largest id stands in, every row then having been
   written with its id given.

A settled id stays settled, so each process keeps the top last found per table
(`Tops`): a page is read up to it first, and only a page that comes back short (it
reached the top) settles anew and is read again. A write in flight that does not end
within WAIT (a host lost mid-batch leaves its transaction open) leaves the top where
it was: the page is short, never wrong (a page whose cursor it keeps from being settled
is a 503: `below_top`); for WAIT after that, pages do not wait for it again (for it
alone: other writes in flight are waited for as ever, so the top moves on once it
ends). A settle that finds the sequence behind
the known top (the database went back: a restore, a failover) takes its value, and
says so in the log.

A sequence must hand out one id at a time, each above the last (no CACHE, a positive
INCREMENT, no CYCLE): a session's cached ids would be handed out after a page had
passed them. Start-up refuses one that does not (`unordered`). Only nextval's lock
(RowExclusiveLock) is waited for: a `pg_dump` or a reader of the sequence takes a
weaker one and holds no page back.

A list read newest first (`below_top`) goes down from a top: its first page is read
below one settled then, and each later page below its last id, all settled already (on
the server that settled them: a cursor above this process's top settles here, and one
that a write stuck in flight keeps from covering answers 503, to retry).

A page that reaches the top costs two round trips more, and then the wait for the
writes in flight: about one batch. A page of one seller's sales, entries or credit
requests needs none of it (UNDER_SELLER_LOCK: they are written under the
seller's row lock, so they commit in id order).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from chargebox.errors import HeldBack, phrase

WAIT = 1.0  # seconds a page waits for the writes in flight, at most (and the busy timeout)
FIRST_PAUSE, LONGEST_PAUSE = 0.001, 0.02  # seconds between two polls: doubling, up to
# The tables a page lists (each with a serial id).
PAGED = ("seller", "seller_key", "credit_request", "sale", "ledger_entry", "phone")
# Tables whose rows of one seller are written under its row lock, taken before their ids
# (ledger.py's `hold`, sale_batches, a credit request's lock_seller): one seller's rows
# commit in id order, and a page of them holds none back.
UNDER_SELLER_LOCK = ("sale", "ledger_entry", "credit_request")

_SEQUENCE = "CAST(pg_get_serial_sequence(%s, 'id') AS regclass)"
_LAST = f"SELECT COALESCE(pg_sequence_last_value({_SEQUENCE}), (SELECT max(id) FROM {{table}}), 0)"
# The transactions (virtual ids) holding nextval's lock on the table's sequence, but this
# session; then, of those given, the ones that still do.
_HOLDERS = (  # RowExclusiveLock: what nextval takes (a pg_dump's or a reader's is weaker)
    "SELECT ARRAY(SELECT virtualtransaction FROM pg_locks WHERE locktype = 'relation'"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    f" AND relation = {_SEQUENCE} AND mode = 'RowExclusiveLock' AND granted {{}})"
)
_IN_FLIGHT = _HOLDERS.format("AND pid IS DISTINCT FROM pg_backend_pid()")
_STILL = _HOLDERS.format("AND virtualtransaction = ANY(CAST(%s AS text[]))")
_UNORDERED = (  # through Database.rows: SQLite's `?`
    "SELECT t.name, s.seqcache, s.seqincrement, s.seqcycle,"
    " CAST(s.seqrelid AS regclass)::text FROM unnest(CAST(? AS text[]))"
    " AS t(name) JOIN pg_sequence AS s"
    " ON s.seqrelid = CAST(pg_get_serial_sequence(t.name, 'id') AS regclass)"
    " WHERE s.seqcache > 1 OR s.seqincrement < 1 OR s.seqcycle ORDER BY t.name"
)
_log = logging.getLogger("chargebox.settled")
HELD_BACK = phrase("a write still in flight holds back the rows this page must show; retry shortly")


class Tops:
    """One process's settled tops, each table's the highest found so far."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._known: dict[str, int] = {}
        # the writes in flight a table's settle last gave up on, and until when settles
        # do not wait for them again (those alone: others are waited for as ever)
        self._stuck: dict[str, tuple[frozenset[str], float]] = {}
        self._lock = threading.Lock()

    def known(self, table: str) -> int:
        with self._lock:
            return self._known.get(table, 0)

    def _held(self, table: str, at_least: int | None) -> int:
        """The top known, when writes in flight keep a settle from going past it."""
        top = self.known(table)
        if at_least is not None and top < at_least:
            raise HeldBack(HELD_BACK)
        return top

    def settle(self, conn, table: str, at_least: int | None = None) -> int:
        """Settle `table`'s ids anew on `conn` (idle, autocommit), waiting at most `wait`
        for the writes in flight; the highest top known if one did not end by then (and,
        for `wait` after that, settles do not wait for it again, only for the others: a
        stuck transaction would otherwise hold a thread for each page that reaches the
        top), unless that top is below `at_least` (a cursor's ids: HeldBack, below_top
        says why)."""
        if conn.info.transaction_status.name != "IDLE":  # a snapshot would not see them
            raise AssertionError("ids are settled outside a transaction, before a page")
        before = self.known(table)  # settled before `last` is read: `last` is not below it
        # apart: pg_sequence_last_value takes nextval's lock, to its transaction's end
        ((last,),) = conn.execute(_LAST.format(table=table), (table,)).fetchall()
        ((waiting,),) = conn.execute(_IN_FLIGHT, (table,)).fetchall()
        deadline = time.monotonic() + self.wait
        stuck, until = self._stuck.get(table, (frozenset(), 0.0))
        pause = FIRST_PAUSE
        while waiting:
            if until > time.monotonic() and stuck.issuperset(waiting):  # those alone left
                return self._held(table, at_least)
            if time.monotonic() >= deadline:
                self._stuck[table] = frozenset(waiting), time.monotonic() + self.wait
                return self._held(table, at_least)
            time.sleep(pause)
            pause = min(2 * pause, LONGEST_PAUSE)
            (waiting,) = conn.execute(_STILL, (table, waiting)).fetchone()
        with self._lock:
            if last < before:  # the database went back (a restore, a failover, a RESTART)
                _log.warning("%s's ids went back from %d to %d", table, before, last)
                self._known[table] = top = last
            else:  # (another thread's settle may have found a higher one meanwhile)
                self._known[table] = top = max(last, self._known.get(table, 0))
        return top


def kept(settled: Callable[..., int | None], table: str, limit: int,
         read: Callable[[list], list[dict]],
         before_id: int | None = None) -> list[dict]:  # fmt: skip
    """`read(conditions)`, a page of at most `limit` rows (ids below `before_id`, if
    given), kept to `table`'s settled ids (`settled`: a Database's): up to the top known,
    then, if that page is short and its ids may reach past that top, up to one settled
    anew. SQLite has no id to hold back (`settled` is None)."""
    if (known := settled(table, wait=False)) is None:
        return read([])
    found = read([("id <= ?", (known,))])
    short = len(found) < limit and (before_id is None or before_id > known + 1)
    below = None if before_id is None else before_id - 1  # a bounded page: its ids, whole
    if short and (top := settled(table, at_least=below)) > known:
        found = read([("id <= ?", (top,))])
    return found


def below_top(settled: Callable[..., int | None], table: str, before_id: int | None,
              read: Callable[[list], list[dict]]) -> list[dict]:  # fmt: skip
    """`read(conditions)`, a page newest first (ids below `before_id`, if given), kept to
    `table`'s settled ids: every id below a settled top is settled too, so a page below
    the top known needs no settle; the first page is read below a top settled now, and
    each page after it below its last id. A cursor above this process's top (another
    server's page gave it) settles: if a write in flight does not end in time, that
    top may not cover it, and a page below it would skip the committed rows between, its
    client taking a short page for the end: HeldBack (a 503, to retry) instead."""
    if (known := settled(table, wait=False)) is None:
        return read([])
    if before_id is None:
        known = settled(table)
    elif before_id > known + 1:
        known = settled(table, at_least=before_id - 1)
    return read([("id <= ?", (known,))])


def unordered(rows) -> list[str]:
    """The paged tables whose sequence may hand out an id below one handed out before
    (a CACHE above 1, an INCREMENT below 1, CYCLE): for start-up to refuse (see the top)."""
    return _named(rows(_UNORDERED, (list(PAGED),)))


def _named(found: list[tuple]) -> list[str]:
    """`_UNORDERED`'s rows as start-up and migrate name them."""
    return [f"{table}'s ids (CACHE {cache}, INCREMENT {step}{', CYCLE' if cycle else ''})"
            for table, cache, step, cycle, _ in found]  # fmt: skip


def put_in_order(rows, execute) -> list[str]:
    """migrate, as the schema's owner: each of `unordered`'s sequences made to hand out its
    ids one at a time again, from above every id its table holds (one that ran down, or
    wrapped, would hand them out again); what `unordered` said of them."""
    found = rows(_UNORDERED, (list(PAGED),))
    for table, _, _, _, sequence in found:  # `sequence`: regclass's text, quoted where needed
        execute(f"ALTER SEQUENCE {sequence} CACHE 1 INCREMENT 1 NO CYCLE")
        execute(f"SELECT setval(%s::regclass, greatest(s.last_value, (SELECT coalesce(max(id),"
                f" 1) FROM {table}))) FROM {sequence} AS s", (sequence,))  # fmt: skip
    return _named(found)

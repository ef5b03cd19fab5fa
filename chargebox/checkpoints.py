"""Audit checkpoints: what a clean audit verified, sealed so that the next one starts there.

A checkpoint says "every ledger entry up to here was verified at T": per seller, its
newest verified entry with that entry's seal, its count and balance, and its newest
verified sale. It is sealed with the ledger key (seals.checkpoint_mac), each seller's
row bound to the checkpoint's seal, and the tables are append-only in the database;
so without the key a checkpoint cannot be forged. Its seal binds neither its id nor its
place: a copy of an older one is refused by the schema (version 9) and, made behind that
guard, named by `newest` (its seal borne by another row). Deleting a checkpoint costs
the next audit time, never its truth, but for a mark (below).
Reading and writing them lives here; audit.py decides when to trust one and when to
write one.

A full audit that finds a problem records a checkpoint that verified nothing (`distrust`:
no entries, no sellers' rows): from then on the quick audit trusts nothing, re-reads
every row and names the problem again, until an audit is clean and records a checkpoint
of its own. Without it, the quick audit would go on trusting an older checkpoint, and
say nothing of a forgery the full audit found before it. An audit whose snapshot began
before such a mark was recorded records no checkpoint (what it found clean may have
been changed since). Each mark is anchored outside the database too, as the sellers'
heads are (anchors.py, a line of kind `mark`): one deleted by someone who can get past
the guards (the owner, or whoever holds the SQLite file) would leave the quick audits
trusting the checkpoint before it again; its absence is an audit problem instead, and
the quick audits trust no checkpoint until `anchors accept-restore`. Marks and
checkpoints are stamped as they are recorded, one at a time, so their sealed stamps
keep the order they were recorded in, which their ids need not (no seal binds an id):
the quick audits trust no checkpoint stamped no later than a mark, which is the one
before it, moved to an id above it. So that the stamps keep that order whatever the
clocks do (one set back, or another host's behind on PostgreSQL), a row is stamped
after the newest sealed one, a microsecond later, when the clock is not past it: a mark
stamped before the checkpoint it follows would not have told. A row that looks like a
mark but was written without the key is passed over (the service's role may insert
one, with any stamp).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from chargebox import anchors, clock, seals

if TYPE_CHECKING:
    from chargebox.db import Database

TABLES = ("audit_checkpoint", "seller_checkpoint")
# PostgreSQL's advisory lock for recording a checkpoint: an audit about to record one sees
# every `distrust` recorded since its snapshot began, none still uncommitted (SQLite: the
# write holds the file).
CHECKPOINT_LOCK = 7355609


def kept_in(db: Database) -> bool:
    """Whether the database (or a snapshot of it) has the checkpoint tables: one made
    before them may not."""
    return set(TABLES) <= db.table_names()


class State(NamedTuple):
    """One seller's verified chain, as a checkpoint keeps it."""

    entry_id: int
    entries: int
    entry_mac: str
    balance: int
    sale_id: int
    sales: int


class Trusted(NamedTuple):
    """The newest checkpoint whose seals verify, and every seller's newest state."""

    id: int
    entry_id: int
    entries: int
    request_id: int
    full_at: str
    created_at: str
    states: dict[int, State]


_NEWEST = (
    "SELECT id, entry_id, entries, request_id, full_at, created_at, mac"
    " FROM audit_checkpoint ORDER BY id DESC LIMIT 1"
)
# Each seller's newest row, with the checkpoint it belongs to (whose seal binds it):
# found per seller by one seek of the (seller, checkpoint) index, so that years of
# checkpoints cost nothing (a GROUP BY over them all read every row: 0.4-0.6 s at
# 3.3M rows on either backend, against 0.01 s). MATERIALIZED keeps SQLite from
# flattening it into a scan of every row with a seek per row.
_STATES = (
    "WITH n AS MATERIALIZED (SELECT id, (SELECT max(checkpoint_id) FROM seller_checkpoint"
    " WHERE seller_id = seller.id) AS newest FROM seller)"
    " SELECT c.seller_id, c.entry_id, c.entries, c.entry_mac, c.balance, c.sale_id, c.sales,"
    " c.mac, a.entry_id, a.entries, a.request_id, a.full_at, a.created_at, a.mac"
    " FROM n JOIN seller_checkpoint c ON c.seller_id = n.id AND c.checkpoint_id = n.newest"
    " JOIN audit_checkpoint a ON a.id = c.checkpoint_id"
)
_NEW = (
    "INSERT INTO audit_checkpoint (entry_id, entries, request_id, full_at, created_at, mac)"
    " VALUES (?, ?, ?, ?, ?, ?) RETURNING id"
)
_COPIES = "SELECT id FROM audit_checkpoint WHERE mac = ? AND id != ? ORDER BY id LIMIT 1"
# The marks stamped no earlier than the newest row (itself, if it is one), newest first.
_LATER_MARKS = ("SELECT id, created_at, mac FROM audit_checkpoint WHERE entries = 0 AND"
                " created_at >= (SELECT created_at FROM audit_checkpoint ORDER BY id DESC"
                " LIMIT 1) ORDER BY created_at DESC, id DESC")  # fmt: skip
# The rows below an id, newest first, for the stamp a new one must follow (the newest
# whose seal verifies: rows written without the key, any number of them, are passed over).
_BELOW = (
    "SELECT id, entry_id, entries, request_id, full_at, created_at, mac FROM audit_checkpoint"
    " WHERE id < ? ORDER BY id DESC LIMIT 100"
)
_DISTRUSTED_SINCE = "SELECT id FROM audit_checkpoint WHERE id > ? AND entries = 0 LIMIT 1"
_STATE_COLUMNS = {"seller_id": "bigint", "entry_id": "bigint", "entries": "bigint",
                  "entry_mac": "text", "balance": "bigint", "sale_id": "bigint",
                  "sales": "bigint", "mac": "text"}  # fmt: skip
_NAMES = ", ".join(_STATE_COLUMNS)
_NEW_STATES = (f"INSERT INTO seller_checkpoint (checkpoint_id, {_NAMES})"
               f" SELECT ?, {_NAMES} FROM {{source}}")  # fmt: skip
_AT_ONCE = 10_000  # sellers' rows a statement


def _head(db: seals.Reader, key: bytes) -> tuple[tuple | None, list[seals.Problem]]:
    """The newest checkpoint's row if its seal verifies and no other row bears that seal;
    else None, with a problem when one does not (someone without the key wrote there)."""
    found = db.rows(_NEWEST)
    if not found:
        return None, []
    ident, mac = found[0][0], found[0][6]
    if not anchors.matches(mac, seals.checkpoint_mac(key, *found[0][1:6])):
        return None, [_forged(f"audit checkpoint {ident}")]
    # Its seal binds neither its id nor its place: a copy of an older checkpoint, inserted
    # as the newest, would verify, and undo a mark recorded since (see above).
    if copied := db.rows(_COPIES, (mac, ident)):
        return None, [_forged(f"audit checkpoint {ident}, a copy of checkpoint {copied[0][0]},")]
    # Nor its id: the checkpoint before a mark, moved to an id above it, is the newest;
    # the mark's stamp, sealed and later than its own, tells (see above).
    if found[0][2] != 0 and later_mark(db, key):
        return None, []
    return found[0], []


def later_mark(db: seals.Reader, key: bytes) -> Mark | None:
    """The newest mark stamped no earlier than the newest checkpoint (that one itself, if it
    is a mark), its seal verified. A row that looks like a mark but was written without
    the key (the service's role may insert one, with any stamp) is passed over: counted,
    one stamped after every stamp to come would leave the quick audits nothing to trust."""
    for ident, created_at, mac in db.rows(_LATER_MARKS):
        if anchors.matches(mac, mark_mac(key, created_at)):
            return Mark(ident, created_at)
    return None


def starts_a_quick_audit(db: seals.Reader, key: bytes) -> bool:
    """Whether the newest checkpoint is one a quick audit would start from (`newest`'s
    checks but its sellers' rows): sealed with the key, no copy, no mark, none later."""
    head, _ = _head(db, key)
    return head is not None and head[2] != 0


def newest(db: seals.Reader, key: bytes) -> tuple[Trusted | None, list[seals.Problem]]:
    """The newest checkpoint and the sellers' states, if every seal read verifies and no
    mark is stamped later; else None, with a problem when a seal does not (someone without
    the key wrote there)."""
    head, problems = _head(db, key)
    if head is None or head[2] == 0:  # a mark verified nothing (`distrust`): trust nothing
        return None, problems
    ident, entry_id, entries, request_id, full_at, created_at, _ = head
    states: dict[int, State] = {}
    macs: dict[str, bool] = {}
    for seller_id, *state, seal, c_entry, c_entries, c_request, c_full, c_at, c_mac in db.rows(
        _STATES
    ):
        if c_mac not in macs:
            macs[c_mac] = anchors.matches(
                c_mac, seals.checkpoint_mac(key, c_entry, c_entries, c_request, c_full, c_at)
            )
        expected = seals.seller_checkpoint_mac(key, c_mac, seller_id, *state)
        if not (macs[c_mac] and anchors.matches(seal, expected)):
            return None, [_forged(f"audit checkpoint row of seller {seller_id}")]
        states[seller_id] = State(*state)
    return Trusted(ident, entry_id, entries, request_id, full_at, created_at, states), []


class Mark(NamedTuple):
    """A full audit's finding (`distrust`): the checkpoint that verified nothing."""

    id: int
    created_at: str


def save(write, key: bytes, seen: tuple[int, int, int, str | None], states: dict[int, State],
         before: Trusted | None, newest: int) -> int | None:  # fmt: skip
    """Record a checkpoint: `seen` is (entry_id, entries, request_id, full_at; None for a
    full audit's own), stamped now, as it is recorded (after every mark recorded before
    it: see above); a row for each seller whose state is not that of `before` (the
    checkpoint this audit continued, if any). Returns its id; None if a `distrust` was
    recorded after the checkpoint `newest` (the newest when the audit's snapshot began:
    `newest_id`), by an audit that saw what this one's snapshot did not."""
    _one_at_a_time(write)
    if write.rows(_DISTRUSTED_SINCE, (newest,)):
        return None
    stamp = _stamp(write, key)
    *verified, full_at = seen
    return _record(write, key, (*verified, full_at or stamp, stamp), states,
                   before.states if before else {})  # fmt: skip


def newest_id(db: seals.Reader) -> int:
    """The newest checkpoint's id, 0 if none."""
    return db.rows("SELECT COALESCE(max(id), 0) FROM audit_checkpoint")[0][0]


def distrust(write, key: bytes, at: str | None = None) -> Mark:
    """Record that a full audit found a problem: a checkpoint that verified nothing, so that
    later quick audits trust no earlier one (see above), stamped now (or `at`), as it is
    recorded. Returns its id and stamp."""
    _one_at_a_time(write)
    at = at or _stamp(write, key)
    return Mark(_record(write, key, _marked_at(at), {}, {}), at)


def _stamp(write, key: bytes) -> str:
    """Now, or a microsecond after the newest sealed row's stamp if the clock is not past
    it (a clock set back, another host's behind): see above. The caller holds the lock."""
    at, below = clock.now(), 2**63 - 1
    while rows := write.rows(_BELOW, (below,)):
        for *sealed, mac in (row[1:] for row in rows):
            if anchors.matches(mac, seals.checkpoint_mac(key, *sealed)):
                return clock.after(sealed[-1])
        below = rows[-1][0]
    return at


def mark_mac(key: bytes, at: str) -> str:
    """The seal of the mark `distrust` records at `at` (what the anchors file keeps)."""
    return seals.checkpoint_mac(key, *_marked_at(at))


def _marked_at(at: str) -> tuple:
    return (0, 0, 0, at, at)  # verified nothing: entry_id, entries, request_id, full_at, at


def _one_at_a_time(write) -> None:
    if write.dialect == "postgresql":
        write.rows("SELECT pg_advisory_xact_lock(?)", (CHECKPOINT_LOCK,))


def _record(write, key: bytes, seen: tuple, states: dict[int, State],
            before: dict[int, State]) -> int:  # fmt: skip
    mac = seals.checkpoint_mac(key, *seen)
    ident = write.rows(_NEW, (*seen, mac))[0][0]
    changed = [
        (seller_id, *state, seals.seller_checkpoint_mac(key, mac, seller_id, *state))
        for seller_id, state in sorted(states.items())
        if before.get(seller_id) != state
    ]
    for at in range(0, len(changed), _AT_ONCE):  # not a round trip each: a write has a bound
        rows = changed[at : at + _AT_ONCE]
        columns = [list(each) for each in zip(*rows, strict=True)]
        source, params = write.table("s", _STATE_COLUMNS, columns)
        write.send(_NEW_STATES.format(source=source), (ident, *params))
    return ident


def _forged(what: str) -> seals.Problem:
    return seals.Problem(
        "seal",
        None,
        None,
        f"the {what} does not match its seal: written without the ledger key; "
        "every entry was verified instead",
    )

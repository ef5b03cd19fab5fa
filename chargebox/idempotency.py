"""Idempotency-Key outcomes: the first outcome of a key is final, and every copy gets it.

Keyed sales (`idempotency_record`) and credit requests (`credit_request_record`),
scoped to the seller, and keyed adjustments and refunds (`adjustment_record`,
scoped to the adjusted seller, a refund's to its sale's) share this.
A key's record is written in the same write as what it records, so a crash
keeps both or neither; a final refusal (FINAL: `409 insufficient_credit`,
`balance_limit_exceeded`) is recorded too, and replayed. `once()`
is the replay itself: every keyed use case of `services` goes through it.
A sale queued for the group writer does not look for its key before it queues:
its batch looks for the keys of all its sales in one read (`_Together`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator

from chargebox import auth, sale_batches
from chargebox.clock import now
from chargebox.db import Database, Write
from chargebox.errors import (
    NOT_COVERED,
    OVER_CEILING,
    BalanceLimitExceeded,
    ChargeboxError,
    IdempotencyKeyReused,
    InsufficientCredit,
    IntegrityViolation,
    NotGranted,
    Unavailable,
    ValidationError,
)
from chargebox.queries import CREDIT_REQUEST, LEDGER_ENTRY, SALE_READ, Queries, Shape
from chargebox.writer import Separately

MAX_KEY_LENGTH = 255
# Refusals that are final outcomes of a key (nothing was written when they were raised).
FINAL = (InsufficientCredit, BalanceLimitExceeded)
# Each one's class and the template its stored message was made of (a replay reads it back).
REFUSALS = {
    InsufficientCredit.code: (InsufficientCredit, NOT_COVERED),
    BalanceLimitExceeded.code: (BalanceLimitExceeded, OVER_CEILING),
}


@dataclasses.dataclass(frozen=True)
class Keyed:
    """Where the outcomes of one kind of keyed request are kept, and what they made."""

    table: str
    column: str  # the id of what the first request made
    made: Shape  # read again by that id for every copy


# A replayed sale is read as it stands: refunded since, it says so (queries.SALE_READ).
SALES = Keyed("idempotency_record", "sale_id", SALE_READ)
# The admin's keys on a seller's money: adjustments and refunds of its sales share them.
ADJUSTMENTS = Keyed("adjustment_record", "entry_id", LEDGER_ENTRY)
CREDIT_REQUESTS = Keyed("credit_request_record", "request_id", CREDIT_REQUEST)


def check_key(key: str | None, field: str = "Idempotency-Key") -> str | None:
    """The key, or None; spaces (and tabs) around it are not part of it: HTTP drops them from a
    header's value, so a search's, a form's and the CLI's key is read the same way (the
    search for `k1 ` found nothing while the header `k1 ` had made the key `k1`)."""
    if key is None:
        return None
    key = key.strip(" \t")  # HTTP's optional whitespace
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key):
        raise ValidationError("{field} must be 1 to 255 printable ASCII characters", field)
    return key


def fingerprint(*parts: object) -> str:
    """What identifies a request's body, after normalisation."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a write made (a sale, an entry, a request), and whether it is a key's copy."""

    record: dict
    replayed: bool


def once(
    database: Database,
    kind: Keyed,
    seller_id: int,
    key: str | None,
    request_hash: str,
    act: Callable[[Write, str], dict],
    sale: Sale | None = None,
) -> Outcome:
    """Do `act(write, now)` in a write, once per key: every later copy gets the first
    outcome, read again by the id it made (a refusal is raised again). A `sale` may be
    sold in a batch with the other sales that wait beside it, its seller's and
    others' (`_Together`); its outcome is the same as alone."""

    def alone(write: Write) -> object:
        if key is None:
            return act(write, now())
        return _first(write, kind, seller_id, key, request_hash, act)

    def replayed(made: int) -> Outcome:
        if sale is not None and sale.key is not None:  # a copy is not the key's to see
            auth.refuse_unless_held(database, sale.key, in_write=False)
        return Outcome(Queries(database).one(kind.made, made), True)

    work: Callable[[Write], object] = alone
    if sale is not None:
        work = _Together(alone, kind, seller_id, sale, key, request_hash)
    if key is None:
        return Outcome(database.write(work, seller_id), False)
    batched = work is not alone and database.writer is not None
    if not batched:  # a batch looks for its keys itself, in its one read (_Together)
        made = earlier(database, kind, seller_id, key, request_hash)  # no write lock
        if made is not None:
            return replayed(made)
    try:
        outcome = database.write(work, seller_id)
    except _KeyRaced:  # another server's copy recorded the key first: its outcome stands
        return replayed(earlier(database, kind, seller_id, key, request_hash))
    except Unavailable:  # a copy of a recorded key is answered from a read all the same
        made = earlier(database, kind, seller_id, key, request_hash) if batched else None
        if made is None:
            raise
        return replayed(made)
    if isinstance(outcome, ChargeboxError):
        raise outcome
    return outcome


def _first(
    write: Write,
    kind: Keyed,
    seller_id: int,
    key: str,
    request_hash: str,
    act: Callable[[Write, str], dict],
) -> Outcome | ChargeboxError:
    """Inside the write: what a copy that won the race made, or act now and record it.

    A refusal is returned, not raised, so that its record commits with the rest.
    On PostgreSQL the key's UNIQUE decides, after acting (a look before would be one
    more round trip while the seller's row is held): a copy that finds the key taken
    is undone (`_KeyRaced`) and replays what the first one made, once that commits.
    """
    if not write.balance_first:
        made = earlier(write, kind, seller_id, key, request_hash)
        if made is not None:
            return Outcome(Queries(write).one(kind.made, made), True)
    created = now()
    try:
        outcome: Outcome | ChargeboxError = Outcome(act(write, created), False)
    except FINAL as refusal:  # nothing was written; the refusal is final
        outcome = refusal
    except (Unavailable, IntegrityViolation, NotGranted):
        raise  # the database failed this write: it is undone, and nothing can be read now
    except ChargeboxError:  # refused: no outcome of the key, unless a copy recorded one
        if write.balance_first and earlier(write, kind, seller_id, key, request_hash) is not None:
            raise _KeyRaced from None
        raise
    made_id = outcome if isinstance(outcome, ChargeboxError) else outcome.record["id"]
    if not record(write, kind, seller_id, key, request_hash, made_id, created):
        raise _KeyRaced  # undoes what this copy did: its write (or savepoint) rolls back
    return outcome


@dataclasses.dataclass(frozen=True)
class Sale:
    """A sale as a batch of queued sales takes it (sale_batches.sell_together)."""

    number: str
    amount: int
    shown: Callable[[dict], dict]  # the sale made, as `act` would have returned it
    # The caller's seller key (auth.Principal.key): its write checks that it still holds,
    # first, and a copy is replayed only after a read of it.
    key: auth.SellerKey | None = None


# Which (seller, key) pairs (a table `wanted`, Write.table) are recorded: one look-up in
# UNIQUE (seller_id, key) per key. PostgreSQL: LATERAL ... LIMIT 1, whatever the statistics
# say. `seller_id = ? AND key = ANY(?)`, or a join, let its planner, told by stale
# statistics that the seller had few keys, read all of them and filter: linear in its
# history (378 ms at a million keys).
RECORDED_KEYS = {
    "postgresql": "SELECT wanted.seller, wanted.key FROM {wanted}, LATERAL (SELECT 1 FROM"
    " {table} AS r WHERE r.seller_id = wanted.seller AND r.key = wanted.key LIMIT 1) AS found",
    "sqlite": "SELECT wanted.seller, wanted.key FROM {wanted} WHERE EXISTS (SELECT 1 FROM"
    " {table} AS r WHERE r.seller_id = wanted.seller AND r.key = wanted.key)",
}


# What a sale of a batch gets: what `alone` would have returned, or what it would have raised.
Answer = tuple[object, Exception | None]

_RECORD_COLUMNS = {"seller": "bigint", "key": "text", "hash": "text", "made": "bigint",
                   "code": "text", "message": "text"}  # fmt: skip


class _Together:
    """A sale's write as the group writer sees it (writer.py): alone, `self(write)`; with
    the other sales of its seller queued beside it (and the runs of other sellers),
    `together(write, runs)`, one statement for them all, each answered as if it had gone
    alone."""

    __slots__ = ("alone", "kind", "seller_id", "sale", "key", "request_hash")

    def __init__(self, alone: Callable[[Write], object], kind: Keyed, seller_id: int,
                 sale: Sale, key: str | None, request_hash: str) -> None:  # fmt: skip
        self.alone, self.kind, self.seller_id, self.sale = alone, kind, seller_id, sale
        self.key, self.request_hash = key, request_hash

    def __call__(self, write: Write) -> object:
        if self.sale.key is not None:
            auth.refuse_unless_held(write, self.sale.key, in_write=True)
        return self.alone(write)

    @staticmethod
    def together(write: Write, runs: list[list[_Together]]) -> list[list[Answer]]:
        """Sell `runs` (each one seller's works, in order) in one statement, keys recorded
        in it; for each, what `alone` would have returned or raised. A key already
        recorded (looked for once the sellers are held, with their heads), and a later
        copy of a key in the batch, sell nothing: `_KeyRaced`, and `once` replays the
        first outcome. Should a copy record a key anyway, its UNIQUE fails the statement:
        the runs go alone."""
        created, kind = now(), runs[0][0].kind
        works = [work for run in runs for work in run]
        keys = [work.sale.key for work in works if work.sale.key is not None]
        if keys and not auth.keys_hold(write, keys):
            raise Separately  # each alone, where its own check refuses it
        keyed = [work for work in works if work.key is not None]
        recorded = None
        if keyed:  # read with the sellers' heads: keys a copy recorded are replayed (once)
            pairs = [[w.seller_id for w in keyed], [w.key for w in keyed]]
            wanted, params = write.table("wanted", {"seller": "bigint", "key": "text"}, pairs)
            sql = RECORDED_KEYS[write.dialect].format(wanted=wanted, table=kind.table)
            recorded = (sql, params, ("seller", "key"))

        def left_out(found: list[tuple]) -> set[tuple[int, int]]:
            taken = set(map(tuple, found))
            skipped = set()
            for place, work in _places(runs):
                if (work.seller_id, work.key) in taken:
                    skipped.add(place)
                elif work.key is not None:
                    taken.add((work.seller_id, work.key))  # its later copies replay this one
            return skipped

        def records(outcomes: list[list]) -> list[tuple[str, tuple]]:
            columns: list[list] = [[] for _ in range(6)]  # seller, key, hash, made, code, message
            for (run, n), work in _places(runs):
                outcome = outcomes[run][n]
                if work.key is not None and outcome is not None:
                    no = isinstance(outcome, ChargeboxError)
                    row = (work.seller_id, work.key, work.request_hash,
                           None if no else outcome["id"], outcome.code if no else None,
                           outcome.message if no else None)  # fmt: skip
                    for column, value in zip(columns, row, strict=True):
                        column.append(value)
            if not columns[0]:
                return []
            rows, params = write.table("r", _RECORD_COLUMNS, columns)
            return [(
                f"INSERT INTO {kind.table} (seller_id, key, request_hash, {kind.column},"
                " error_code, error_message, created_at) SELECT r.seller, r.key, r.hash,"
                f" r.made, r.code, r.message, ? FROM {rows}",
                (created, *params),
            )]  # fmt: skip

        sales = [(run[0].seller_id, [(w.sale.number, w.sale.amount) for w in run]) for run in runs]
        outcomes = sale_batches.sell_together(write, sales, created, records, left_out, recorded)
        return [[_answer(work, outcome) for work, outcome in zip(run, made, strict=True)]
                for run, made in zip(runs, outcomes, strict=True)]  # fmt: skip


def _places(runs: list[list[_Together]]) -> Iterator[tuple[tuple[int, int], _Together]]:
    """Each work of `runs`, in order, with its place: (its run, its index in the run)."""
    for run, works in enumerate(runs):
        for n, work in enumerate(works):
            yield (run, n), work


def _answer(work: _Together, outcome: object) -> Answer:
    """What a sale of a batch gets for its outcome, as it would have alone."""
    if outcome is None:  # its key's first outcome stands: `once` replays it
        return None, _KeyRaced()
    if isinstance(outcome, ChargeboxError):  # a final refusal: a key records it
        return (outcome, None) if work.key else (None, outcome)
    shown = work.sale.shown(outcome)
    return (Outcome(shown, False), None) if work.key else (shown, None)


class _KeyRaced(Exception):
    """A copy in another transaction recorded this key while this one acted."""


def earlier(
    reader: Write | Database, kind: Keyed, seller_id: int, key: str, request_hash: str
) -> int | None:
    """The id made by this key's first request; its refusal, raised again; or None."""
    rows = reader.rows(
        f"SELECT request_hash, {kind.column}, error_code, error_message FROM {kind.table} "
        "WHERE seller_id = ? AND key = ?",
        (seller_id, key),
    )
    if not rows:
        return None
    stored_hash, made_id, error_code, error_message = rows[0]
    if stored_hash != request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request", "Idempotency-Key"
        )
    if made_id is None:
        refusal, template = REFUSALS[error_code]
        raise refusal.replay(template, error_message)
    return made_id


def record(
    write: Write,
    kind: Keyed,
    seller_id: int,
    key: str,
    request_hash: str,
    outcome: int | ChargeboxError,
    created: str,
) -> bool:
    """Keep the outcome of a key's first request: the id it made, or its refusal. False if a
    copy in another transaction recorded the key first: on PostgreSQL nothing serialises
    two servers' copies but the key's UNIQUE, where they meet (the later one waits for the
    earlier one's COMMIT or ROLLBACK); on SQLite the write holds the file, so none races."""
    refused = isinstance(outcome, ChargeboxError)
    sql = (
        f"INSERT INTO {kind.table} (seller_id, key, request_hash, {kind.column},"
        " error_code, error_message, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    values = (
        seller_id,
        key,
        request_hash,
        None if refused else outcome,
        outcome.code if refused else None,
        outcome.message if refused else None,
        created,
    )
    if not write.balance_first:
        write.execute(sql, values)
        return True
    return bool(write.rows(f"{sql} ON CONFLICT (seller_id, key) DO NOTHING RETURNING id", values))

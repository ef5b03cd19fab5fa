"""Tamper evidence: an HMAC chain over each seller's ledger, and a sealed head.

The triggers stop the application from rewriting history, but whoever holds the
database file can drop them and forge rows whose sums all agree. Each entry's
seal is HMAC(key, previous seal + the entry), and each seller's head seals its
newest entry, its count and its balance, so an edit, insertion, reordering or
deletion (the newest entry included) breaks a seal that only the key can remake.
The key lives outside the database file. Here: the arithmetic, the check, and
the quick test at start-up that a key is the one that sealed this ledger.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, NamedTuple, Protocol

from chargebox import anchors

if TYPE_CHECKING:
    import sqlite3

    from chargebox.db import Database

GENESIS = "0" * 64
# Start-up checks the sealed heads of the sellers of this many newest entries.
NEWEST_ENTRIES = 100
# What a seal covers, in this order; `phone` is the sale's number for sale entries. A
# refund's seal covers its `refund_of` too, after these (see `values`).
ENTRY_COLUMNS = ("id", "seller_id", "kind", "amount", "balance_after", "credit_request_id",
                 "sale_id", "reason", "created_at", "phone")  # fmt: skip


class Reader(Protocol):
    """A Database or an open Write: whatever can run a SELECT."""

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]: ...


class SqliteRows:
    """A plain sqlite3 connection as a Reader (a backup's copy, a file to be copied)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()


class Problem(NamedTuple):
    """One thing the seals say is wrong, in the audit's shape."""

    invariant: str
    seller_id: int | None
    entry_id: int | None
    message: str


class Chain(NamedTuple):
    """A seller's seal chain as far as it has been re-computed (or a checkpoint left it)."""

    mac: str = GENESIS
    entries: int = 0
    last_id: int | None = None
    balance: int = 0
    intact: bool = True


# What json.dumps(parts, separators=(",", ":"), ensure_ascii=False) gives, byte for byte
# (every seal ever made is of that text), without making an encoder per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _mac(key: bytes, *parts: object) -> str:
    message = _COMPACT.encode(parts)
    # surrogateescape: a forged row's bytes that are not UTF-8 (read by the audit's lenient
    # snapshot) are hashed as they are, so its seal fails to match instead of raising.
    return hmac.new(key, message.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def values(entry: dict) -> tuple:
    """What an entry's seal covers: ENTRY_COLUMNS' values, and a refund's `refund_of` after
    them. Entries of other kinds are sealed exactly as before refunds existed (schema
    version 3), so every older seal stays valid and nothing is re-sealed by a migration."""
    found = tuple(entry[name] for name in ENTRY_COLUMNS)
    return found if entry.get("refund_of") is None else (*found, entry["refund_of"])


def entry_mac(key: bytes, previous: str, entry: tuple) -> str:
    """The seal of one entry (values in ENTRY_COLUMNS order), chained to its predecessor's."""
    return _mac(key, "entry", previous, *entry)


def head_mac(key: bytes, seller_id: int, entry_id: int, entries: int, mac: str,
             balance_after: int) -> str:  # fmt: skip
    """The seal of a seller's newest entry: deleting it, or adding after it, breaks this."""
    return _mac(key, "head", seller_id, entry_id, entries, mac, balance_after)


def checkpoint_mac(key: bytes, entry_id: int, entries: int, request_id: int, full_at: str,
                   created_at: str) -> str:  # fmt: skip
    """The seal of an audit checkpoint: what a clean audit verified, and when."""
    return _mac(key, "checkpoint", entry_id, entries, request_id, full_at, created_at)


def seller_checkpoint_mac(key: bytes, checkpoint: str, seller_id: int, *state: object) -> str:
    """The seal of one seller's state in a checkpoint, bound to the checkpoint's seal."""
    return _mac(key, "seller-checkpoint", checkpoint, seller_id, *state)


def sealed(database: Database) -> bool:
    """Whether the database already holds seals (read only; no schema needed)."""
    tables = database.table_names() & {"ledger_seal", "seller_head"}
    return any(database.rows(f"SELECT 1 FROM {name} LIMIT 1") for name in sorted(tables))


def key_check(db: Reader, key: bytes) -> tuple[int, int]:
    """(heads checked, heads `key` verifies), for the sellers of the newest ledger entries.

    Cheap at any size: the newest entries and then each head are read by primary key,
    never the ledger. The key that sealed the ledger verifies every untouched head;
    any other key verifies none.
    """
    heads = db.rows(
        "SELECT h.seller_id, h.entry_id, h.entries, h.entry_mac, h.mac, l.balance_after"
        " FROM seller_head h JOIN ledger_entry l ON l.id = h.entry_id"
        " WHERE h.seller_id IN (SELECT seller_id FROM ledger_entry ORDER BY id DESC LIMIT ?)",
        (NEWEST_ENTRIES,),
    )
    verified = sum(
        anchors.matches(mac, head_mac(key, seller_id, entry_id, entries, entry_mac, balance))
        for seller_id, entry_id, entries, entry_mac, mac, balance in heads
    )
    return len(heads), verified


def wrong_key(checked: int) -> str:
    """Why a key that verifies none of `checked` heads is refused (see key_check)."""
    return (
        "is not the key that sealed this ledger: it verifies none of its newest sealed heads "
        f"({checked} tried)"
    )


def key_problems(db: Reader, key: bytes | None) -> list[Problem]:
    """Why no seal can be checked: no key, or a key that verifies none of the newest heads
    (one problem, not one per seller). Empty when the seals can be checked."""
    if key is None:
        return [
            _problem(
                None,
                None,
                "no ledger key: the seals cannot be checked (set "
                "CHARGEBOX_LEDGER_KEY or keep the ledger_key file beside the database)",
            )
        ]
    checked, verified = key_check(db, key)
    if checked and not verified:
        return [
            _problem(
                None,
                None,
                f"the ledger key {wrong_key(checked)}; only that key can check the seals "
                "(if this is it, every head tried was forged)",
            )
        ]
    return []


def step(key: bytes, chain: Chain, entry: tuple, stored: str | None) -> tuple[Chain, list[Problem]]:
    """The chain after one more entry (values in ENTRY_COLUMNS order) whose stored seal is
    `stored`; a problem for the seller's first broken seal only."""
    expected = entry_mac(key, chain.mac, entry)
    intact, found = chain.intact, []
    if intact and not anchors.matches(stored, expected):
        intact = False
        found.append(
            _problem(
                entry[1],
                entry[0],
                "its seal does not match: this entry "
                "or one before it was edited, inserted or reordered",
            )
        )
    return Chain(expected, chain.entries + 1, entry[0], entry[4], intact), found


def stray(entry_id: int) -> Problem:
    return _problem(None, entry_id, "a seal whose entry was deleted")


def head_problems(
    key: bytes, seller_id: int, chain: Chain | None, head: tuple | None
) -> list[Problem]:
    """A sealed head that does not match the chain (or one without the other)."""
    if chain is None:
        return [_problem(seller_id, None, "a sealed head but no ledger entries: deleted")]
    mac, entries, last_id, balance, _ = chain
    if head is None:
        return [_problem(seller_id, last_id, "ledger entries but no sealed head")]
    expected = head_mac(key, seller_id, last_id, entries, mac, balance)
    if anchors.matches(head[3], expected):
        return []
    if (head[0], head[1]) == (last_id, entries):  # the same place: only its seal differs
        message = (f"the sealed head names the ledger's newest entry (entry {last_id}, "
                   f"{entries} entries) but its seal does not match the ledger's: the head, "
                   "or an entry it seals, was edited")  # fmt: skip
    else:
        message = (f"the sealed head (entry {head[0]}, {head[1]} entries) does not match the "
                   f"ledger (entry {last_id}, {entries} entries): entries were removed or "
                   "added at the end, or the head was edited")  # fmt: skip
    return [_problem(seller_id, last_id, message)]


def _problem(seller_id: int | None, entry_id: int | None, message: str) -> Problem:
    return Problem("seal", seller_id, entry_id, message)

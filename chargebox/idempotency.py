"""Idempotency-Key outcomes: the first outcome of a key is final, and every copy gets it.

Keyed sales (`idempotency_record`) and credit requests (`credit_request_record`),
scoped to the seller, and keyed adjustments (`adjustment_record`, scoped to the
adjusted seller) share this.
A key's record is written in the same write as what it records, so a crash
keeps both or neither; a refusal (409) is recorded too, and replayed.
"""

from __future__ import annotations

import dataclasses
import hashlib

from chargebox import db
from chargebox.errors import (
    BalanceLimitExceeded,
    ChargeboxError,
    IdempotencyKeyReused,
    InsufficientCredit,
    ValidationError,
)

MAX_KEY_LENGTH = 255
# Refusals that are final outcomes of a key (nothing was written when they were raised).
FINAL = (InsufficientCredit, BalanceLimitExceeded)
REFUSALS = {refusal.code: refusal for refusal in FINAL}


@dataclasses.dataclass(frozen=True)
class Keyed:
    """Where the outcomes of one kind of keyed request are kept."""

    table: str
    column: str  # the id of what the first request made


SALES = Keyed("idempotency_record", "sale_id")
ADJUSTMENTS = Keyed("adjustment_record", "entry_id")
CREDIT_REQUESTS = Keyed("credit_request_record", "request_id")


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key):
        raise ValidationError(
            "Idempotency-Key must be 1 to 255 printable ASCII characters", "Idempotency-Key"
        )
    return key


def fingerprint(*parts: object) -> str:
    """What identifies a request's body, after normalisation."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def earlier(kind: Keyed, seller_id: int, key: str, request_hash: str) -> int | None:
    """The id made by this key's first request; its refusal, raised again; or None."""
    rows = db.rows(
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
        raise REFUSALS[error_code](error_message, replayed=True)
    return made_id


def record(
    kind: Keyed,
    seller_id: int,
    key: str,
    request_hash: str,
    outcome: int | ChargeboxError,
    created: str,
) -> None:
    """Keep the outcome of a key's first request: the id it made, or its refusal."""
    refused = isinstance(outcome, ChargeboxError)
    db.execute(
        f"INSERT INTO {kind.table} (seller_id, key, request_hash, {kind.column},"
        " error_code, error_message, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            seller_id,
            key,
            request_hash,
            None if refused else outcome,
            outcome.code if refused else None,
            outcome.message if refused else None,
            created,
        ),
    )

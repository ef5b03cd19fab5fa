"""Use cases of chargebox: what a seller or the admin can do, one method each.

`Chargebox(config)` owns the process's `Database` for that config. Inputs arrive
raw (from JSON, a form or the CLI) and are validated here, so every door shares
one set of rules; each write is one `database.write(work)` (which group commit
may share with other writes). Reads are `queries`, sign-in is `access`, key
replay is `idempotency.once`. No bottle, no environment, no HTTP status codes;
money itself moves only in `ledger`.
"""

from __future__ import annotations

import threading

from chargebox import (
    anchors,
    audit,
    auth,
    guards,
    idempotency,
    ledger,
    periods,
    revocations,
    statement_turns,
    statements,
)
from chargebox.clock import now
from chargebox.config import Config
from chargebox.db import Database, Write, open_database
from chargebox.errors import (
    SUSPENDED,
    KeyLabelInUse,
    KeyRevoked,
    NotFound,
    SellerSuspended,
    TooManyPendingRequests,
    Unavailable,
    ValidationError,
    phrase,
)
from chargebox.idempotency import Outcome
from chargebox.money import parse_amount, parse_signed_amount
from chargebox.phones import normalize_phone
from chargebox.queries import (
    CREDIT_REQUEST,
    NOT_REFUNDED,
    SELLER,
    SELLER_KEY,
    Page,
    Queries,
    Search,
)
from chargebox.text import clean_text

MAX_NAME_LENGTH = 200
AUDIT_RUNNING = phrase("an audit that reads every row is running on this server; retry later")
MAX_REASON_LENGTH = 500

_NEW_SELLER = (
    "INSERT INTO seller (name, balance, status, created_at) VALUES (?, 0, 'active', ?) "
    + SELLER.returning
)
_NEW_KEY = (
    "INSERT INTO seller_key (seller_id, label, key_hash, created_at) VALUES (?, ?, ?, ?) "
    + SELLER_KEY.returning
)
# Never before the key was made (CHECK revoked_at >= created_at): a clock set back, or
# another host's clock ahead when it made the key, would otherwise make a revocation fail.
_REVOKE = (
    "UPDATE seller_key SET revoked_at = CASE WHEN created_at > ? THEN created_at ELSE ? END"
    " WHERE id = ? AND seller_id = ? AND revoked_at IS NULL " + SELLER_KEY.returning
)
# A change of status is counted (schema version 11: the count only grows), for a restore.
_STATUS = ("UPDATE seller SET status = ?, status_changes = status_changes + ? WHERE id = ? "
           + SELLER.returning + ", status_changes")  # fmt: skip
MAX_LABEL_LENGTH = 100
DEFAULT_LABEL = "default"  # a new seller's first key, and every key a 0.1.0 seller had
# One statement inside the write counts and files: racing requests cannot pass the cap.
_NEW_REQUEST = (
    "INSERT INTO credit_request (seller_id, amount, status, created_at)"
    " SELECT :seller_id, :amount, 'pending', :now WHERE (SELECT count(*) FROM credit_request"
    " WHERE seller_id = :seller_id AND status = 'pending') < :cap " + CREDIT_REQUEST.returning
)
_NEW_PHONE = (
    "INSERT INTO phone (number, total_charged, created_at) VALUES (?, 0, ?) "
    "ON CONFLICT (number) DO NOTHING"
)


class Chargebox:
    """The use cases on the database of one Config."""

    def __init__(self, config: Config, database: Database | None = None) -> None:
        self.config = config
        self.database = database or open_database(config)
        self.queries = Queries(self.database)
        self.access = auth.Access(self.database, config.admin_token)
        self._full_audit = threading.Lock()
        self.statement_turns = statement_turns.for_threads(config.threads)

    def close(self) -> None:
        self.database.close()

    # --- sellers ---------------------------------------------------------------------------

    def create_seller(self, name: object) -> tuple[dict, str]:
        """A new seller with balance 0, and its API key labelled "default" (returned only
        this once)."""
        name = clean_text(name, "name", MAX_NAME_LENGTH)
        key, key_hash = auth.new_api_key()
        created = now()

        def make(write: Write) -> dict:
            seller = write.dicts(_NEW_SELLER, (name, created))[0]
            write.execute(_NEW_KEY, (seller["id"], DEFAULT_LABEL, key_hash, created))
            return seller

        return self.database.write(make), key

    # --- a seller's keys, and its suspension (no money moves in any of these) ---------------

    def create_key(self, seller_id: int, label: object) -> tuple[dict, str]:
        """A new key for one of the seller's integrations, shown only this once; its label
        must not be another unrevoked key's."""
        label = clean_text(label, "label", MAX_LABEL_LENGTH)
        key, key_hash = auth.new_api_key()

        def make(write: Write) -> dict:
            write.lock_seller(seller_id)  # two new keys of one seller: one after the other
            Queries(write).seller(seller_id)
            taken = write.rows(
                "SELECT 1 FROM seller_key WHERE seller_id = ? AND label = ? AND revoked_at IS NULL",
                (seller_id, label),
            )
            if taken:
                raise KeyLabelInUse(
                    "another of this seller's keys is labelled {label!r}", "label", label=label
                )
            return write.dicts(_NEW_KEY, (seller_id, label, key_hash, now()))[0]

        return self.database.write(make), key

    def revoke_key(self, seller_id: int, key_id: int) -> dict:
        """Revoke a key: from this commit on, no request with it succeeds on any server."""

        def revoke(write: Write) -> dict:
            return self._revoke(write, seller_id, key_id)

        revoked = self.database.write(revoke, alone=True)  # auth.hold_for_revocation
        revocations.revoked(self.database, revoked, "revoke-key")  # a restore redoes it
        return revoked

    def rotate_key(self, seller_id: int, key_id: int) -> tuple[dict, str]:
        """A new key with the old one's label, the old one revoked in the same transaction.

        It holds the old key (PostgreSQL: its row, which orders rotations and revocations
        of it) and nothing else: the label was the old key's, which no other unrevoked key
        can have (UNIQUE where unrevoked), so the seller's row is not held as create_key's
        check-then-insert holds it. Held after the key, it deadlocked with a batch that
        held the seller (an adjustment's) and then the key (a sale's check). The new row's
        reference to the seller takes a key-share lock, which neither hold of a seller's
        row blocks (both FOR NO KEY UPDATE: `hold`, `lock_seller`)."""
        key, key_hash = auth.new_api_key()

        def rotate(write: Write) -> tuple[dict, dict]:
            old = self._revoke(write, seller_id, key_id)
            return old, write.dicts(_NEW_KEY, (seller_id, old["label"], key_hash, now()))[0]

        old, made = self.database.write(rotate, alone=True)
        revocations.revoked(self.database, old, "rotate-key")
        return made, key

    def _revoke(self, write: Write, seller_id: int, key_id: int) -> dict:
        """The key revoked, stamped once the sales that checked it have ended (PostgreSQL:
        they may commit while the revocation waits, and are stamped before it)."""
        auth.hold_for_revocation(write, seller_id, key_id)
        at = now()
        revoked = write.dicts(_REVOKE, (at, at, key_id, seller_id))
        if revoked:
            return revoked[0]
        found = write.rows(
            "SELECT 1 FROM seller_key WHERE id = ? AND seller_id = ?", (key_id, seller_id)
        )
        if not found:
            raise NotFound(
                "seller {seller_id} has no key {key_id}", seller_id=seller_id, key_id=key_id
            )
        raise KeyRevoked("key {key_id} is already revoked; a revocation is final", key_id=key_id)

    def set_status(self, seller_id: int, status: str) -> dict:
        """Suspend ("suspended": its keys and sessions stop working, its web sessions end)
        or reactivate ("active": the same keys work again). The books stay as they are."""
        if status not in ("active", "suspended"):
            raise AssertionError(status)

        def change(write: Write) -> tuple[dict, bool]:
            write.lock_seller(seller_id)  # the status read is the one this write changes
            was = write.rows("SELECT status FROM seller WHERE id = ?", (seller_id,))
            if not was:
                raise NotFound("seller {seller_id} does not exist", seller_id=seller_id)
            if status == "suspended":
                revocations.end_sessions(write, seller_id)
            moved = was[0][0] != status
            return write.dicts(_STATUS, (status, int(moved), seller_id))[0], moved

        changed, moved = self.database.write(change)
        if moved:  # a restore redoes it
            by = "suspend" if status == "suspended" else "reactivate"
            revocations.status_set(self.database, changed, by)
        del changed["status_changes"]
        return changed

    # --- credit requests -------------------------------------------------------------------

    def request_credit(
        self, seller_id: int, amount: object, idempotency_key: str | None = None
    ) -> Outcome:
        """A pending request for credit; with a key, a copy files nothing new (see sell).

        At most `max_pending_requests` of a seller's requests wait at once.
        """
        amount = parse_amount(amount, self.config.max_amount)
        key = idempotency.check_key(idempotency_key)
        cap = self.config.max_pending_requests

        def file_request(write: Write, created: str) -> dict:
            write.lock_seller(seller_id)  # racing requests count one after another
            if Queries(write).seller(seller_id)["status"] != "active":  # NotFound, too
                raise SellerSuspended(SUSPENDED)
            params = {"seller_id": seller_id, "amount": amount, "now": created, "cap": cap}
            filed = write.dicts(_NEW_REQUEST, params)
            if not filed:
                raise TooManyPendingRequests(
                    "at most {cap:,} of your credit requests may wait for the admin at once;"
                    " ask again when one is approved or rejected",
                    cap=cap,
                )
            return filed[0]

        return idempotency.once(
            self.database,
            idempotency.CREDIT_REQUESTS,
            seller_id,
            key,
            idempotency.fingerprint(amount),
            file_request,
        )

    def approve_credit_request(self, request_id: int) -> dict:
        return self.database.write(
            lambda write: ledger.approve_credit_request(write, request_id, now())
        )

    def reject_credit_request(self, request_id: int) -> dict:
        return self.database.write(
            lambda write: ledger.reject_credit_request(write, request_id, now())
        )

    # --- money -----------------------------------------------------------------------------

    def adjust_balance(
        self, seller_id: int, amount: object, reason: object, idempotency_key: str | None = None
    ) -> Outcome:
        """An admin's signed correction; with a key, the first outcome is final (see sell)."""
        amount = parse_signed_amount(amount, self.config.max_amount)
        reason = clean_text(reason, "reason", MAX_REASON_LENGTH)
        return idempotency.once(
            self.database,
            idempotency.ADJUSTMENTS,
            seller_id,
            idempotency.check_key(idempotency_key),
            idempotency.fingerprint(amount, reason),
            lambda write, created: ledger.adjust(write, seller_id, amount, reason, created),
        )

    def sell(self, seller_id: int, phone: object, amount: object,
             idempotency_key: str | None = None, seller_key: auth.SellerKey | None = None,
             ) -> Outcome:  # fmt: skip
        """Sell a charge; with a key, the first outcome is final and replayed to every copy.
        `seller_key`: the caller's (auth.Principal.key), checked in the sale's own write
        (Unauthorized, SellerSuspended): a key revoked after the request read it, or not
        read at all (auth.Principal.unchecked), sells nothing."""
        if seller_key is not None and seller_key.seller_id != seller_id:
            raise ValueError("a seller key sells only for its own seller")
        number = normalize_phone(phone)
        amount = parse_amount(amount, self.config.max_amount)
        return idempotency.once(
            self.database,
            idempotency.SALES,
            seller_id,
            idempotency.check_key(idempotency_key),
            idempotency.fingerprint(number, amount),
            lambda write, created: {
                **ledger.sell(write, seller_id, number, amount, created),
                **NOT_REFUNDED,
            },
            idempotency.Sale(number, amount, lambda sale: {**sale, **NOT_REFUNDED}, seller_key),
        )

    def refund(self, sale_id: int, reason: object, idempotency_key: str | None = None) -> Outcome:
        """The admin gives a sale's whole amount back to its seller, at most once: a second
        refund is AlreadyRefunded. A key is the admin's on the sale's seller, shared with
        adjustments (idempotency.ADJUSTMENTS); its first outcome is final (see sell)."""
        reason = clean_text(reason, "reason", MAX_REASON_LENGTH)
        key = idempotency.check_key(idempotency_key)
        seller_id = self.queries.sale(sale_id)["seller_id"]  # NotFound; a sale keeps its seller
        return idempotency.once(
            self.database,
            idempotency.ADJUSTMENTS,
            seller_id,
            key,
            idempotency.fingerprint("refund", sale_id, reason),
            lambda write, created: ledger.refund(write, sale_id, reason, created),
        )

    # --- statements, and finding a sale ----------------------------------------------------

    def statement(self, seller_id: int, when: dict[str, str], fmt: str = "json",
                  for_spreadsheets: bool = False, client=None) -> statements.Rendered:  # fmt: skip
        """A seller's statement of the period `when` names (periods.period), as JSON or CSV
        (its CSV marked UTF-8 `for_spreadsheets`: statements.Rendered), to be iterated
        (streamed) and closed; read a chunk at a time, each in a snapshot of its own, and
        made as fast as its `client` (statements.CLIENT) reads it. Made in turns
        (statement_turns.for_threads): past them, Unavailable (503)."""
        if fmt not in statements.FORMATS:
            raise ValidationError("format must be json or csv", "format")
        chosen = periods.period(when)
        read = statements.Statement(self.database, seller_id, chosen, turns=self.statement_turns)
        return statements.Rendered(read, fmt, for_spreadsheets, client)

    def find_sales(self, page: Page, seller_id: int | None, search: dict[str, str]
                   ) -> list[dict]:  # fmt: skip
        """Sales by `phone` (any spelling a sale accepts), `idempotency_key` (the seller's
        own; the admin names the seller) and `from`/`to` (periods.instant), as raw text."""
        key = search.get("idempotency_key")
        if key is not None:
            key = idempotency.check_key(key, "idempotency_key")
            if seller_id is None:
                raise ValidationError("an idempotency_key is a seller's: give seller_id too",
                                      "seller_id")  # fmt: skip
        phone = search.get("phone")
        start, end = periods.optional_range(search)
        found = Search(None if phone is None else normalize_phone(phone, "phone"), key, start, end)
        return self.queries.sales(page, seller_id, found)

    # --- phones and the books --------------------------------------------------------------

    def register_phone(self, number: object) -> tuple[dict, bool]:
        """Register a number (normalised); returns (phone, created?)."""
        number = normalize_phone(number, "number")
        created = self.database.write(
            lambda write: write.execute(_NEW_PHONE, (number, now())).rowcount
        )
        return self.queries.phone(number), created == 1

    def storage_bytes(self) -> dict[str, int]:
        """The database's size on disk (and SQLite's WAL), for the metrics."""
        return self.database.storage_bytes()

    def damage(self) -> str | None:
        """What is wrong with the SQLite file under this server (location.Watched), if
        anything: then `/health` answers 503. PostgreSQL looks after its own files."""
        return self.database.file.damage() if self.database.dialect == "sqlite" else None

    def guards_missing(self) -> int | None:
        """How many of the schema's guards are dropped or changed now (I5), for the
        metrics: a running server goes on without them; the next start refuses. None if
        the database cannot be read now (the scrape answers without it)."""
        try:
            return len(guards.dropped_in(self.database))
        except Unavailable:
            return None

    def audit(self, full: bool = False, progress: audit.Progress | None = None) -> dict:
        """The books re-checked: from the newest checkpoint on, or every row (`full`).
        Full audits run one at a time in a process: each reads the whole ledger; so does a
        quick one that would (no checkpoint to start from, or a failed full audit's mark).
        One waits for the one running no longer than a write would (then Unavailable):
        requests queued behind an audit of years would each hold a request thread."""
        anchored = anchors.loaded(self.config, self.database.ledger_key)  # read once
        if not full and not audit.reads_every_row(self.database, anchored):
            return audit.audit(self.database, progress=progress, anchored=anchored)
        if not self._full_audit.acquire(timeout=self.config.busy_timeout_ms / 1000):
            raise Unavailable(AUDIT_RUNNING)
        try:
            return audit.audit(self.database, full=full, progress=progress, anchored=anchored)
        finally:
            self._full_audit.release()

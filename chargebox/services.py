"""Use cases of chargebox: what a seller or the admin can do, each write one `write_tx()`.

Inputs arrive raw (from JSON, a form or the CLI) and are validated here, so
every door shares one set of rules. Results are plain dicts shaped like the
API's resources. No bottle, no environment, no HTTP status codes here; money
itself moves only in `ledger`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import TypeVar

from chargebox import auth, db, idempotency, ledger
from chargebox.auth import Principal
from chargebox.config import Config
from chargebox.errors import (
    ChargeboxError,
    NotFound,
    TooManyPendingRequests,
    Unauthorized,
    ValidationError,
)
from chargebox.money import parse_amount, parse_signed_amount
from chargebox.phones import normalize_phone
from chargebox.text import clean_text
from chargebox.writer import GroupWriter, WriteSlots

T = TypeVar("T")
WRITER = GroupWriter()  # one per process: group commit for every write of this process
MAX_NAME_LENGTH = 200
MAX_REASON_LENGTH = 500
STATUSES = ("pending", "approved", "rejected")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
SESSION_LIFETIME = datetime.timedelta(hours=12)


@dataclasses.dataclass(frozen=True)
class Page:
    """Cursor paging: items with id > after_id, at most `limit`, oldest first."""

    limit: int = DEFAULT_LIMIT
    after_id: int = 0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a keyed write made (a sale, an entry, a request), and whether it is a copy."""

    record: dict
    replayed: bool


def now(later: datetime.timedelta = datetime.timedelta(0)) -> str:
    """The time (plus `later`) as ISO 8601 UTC with microseconds: such stamps sort as text."""
    stamp = (datetime.datetime.now(datetime.UTC) + later).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def _dicts(sql: str, params: tuple = ()) -> list[dict]:
    cursor = db.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


_SELLER = "SELECT id, name, balance, created_at FROM seller"
_REQUEST = "SELECT id, seller_id, amount, status, created_at, decided_at FROM credit_request"
_SALE = "SELECT id, seller_id, phone, amount, balance_after, created_at FROM sale"
_ENTRY = (
    "SELECT id, seller_id, kind, amount, balance_after, credit_request_id, sale_id, "
    "reason, created_at FROM ledger_entry"
)
_PHONE = "SELECT id, number, total_charged, created_at FROM phone"


class Chargebox:
    """The use cases, bound to one Config (limits); the database is `db.database`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.writer = WRITER if config.group_commit else None
        self.slots = WriteSlots(config.threads)

    def _write(self, work: Callable[[], T]) -> T:
        """The one door to a write: the process's group writer, or a transaction of its own.

        Answered within the busy timeout (plus one transaction), done or Unavailable.
        """
        deadline = db.deadline_in(self.config.busy_timeout_ms / 1000)
        with self.slots.taken():
            if self.writer is not None:
                return self.writer.submit(work, deadline)
            with db.write_tx(deadline):
                return work()

    # --- sellers ---------------------------------------------------------------------------

    def create_seller(self, name: object) -> tuple[dict, str]:
        """A new seller with balance 0, and its API key (returned only this once)."""
        name = clean_text(name, "name", MAX_NAME_LENGTH)
        key, key_hash = auth.new_api_key()
        created = now()
        seller_id = self._write(
            lambda: (
                db.execute(
                    "INSERT INTO seller (name, balance, api_key_hash, created_at) "
                    "VALUES (?, 0, ?, ?)",
                    (name, key_hash, created),
                ).lastrowid
            )
        )
        return {"id": seller_id, "name": name, "balance": 0, "created_at": created}, key

    def get_seller(self, seller_id: int) -> dict:
        return self._one(_SELLER + " WHERE id = ?", seller_id, "seller")

    def list_sellers(self, page: Page) -> list[dict]:
        return self._page(_SELLER, page)

    # --- credit requests -------------------------------------------------------------------

    def request_credit(
        self, seller_id: int, amount: object, idempotency_key: str | None = None
    ) -> dict:
        """A pending request for credit; with a key, a copy files nothing new (see sell)."""
        return self.request_credit_once(seller_id, amount, idempotency_key).record

    def request_credit_once(
        self, seller_id: int, amount: object, idempotency_key: str | None
    ) -> Outcome:
        amount = parse_amount(amount, self.config.max_amount)
        key = idempotency.check_key(idempotency_key)

        def file_request(created: str) -> dict:
            self.get_seller(seller_id)  # NotFound, not a foreign-key failure, for an unknown id
            # One statement inside the write counts and files: racing requests cannot pass the cap.
            cap = self.config.max_pending_requests
            filed = db.rows(
                "INSERT INTO credit_request (seller_id, amount, status, created_at) "
                "SELECT ?, ?, 'pending', ? WHERE (SELECT count(*) FROM credit_request"
                " WHERE seller_id = ? AND status = 'pending') < ? RETURNING id",
                (seller_id, amount, created, seller_id, cap),
            )
            if not filed:
                raise TooManyPendingRequests(
                    f"at most {cap:,} of your credit requests may wait for the admin at once;"
                    " ask again when one is approved or rejected"
                )
            request_id = filed[0][0]
            return {
                "id": request_id, "seller_id": seller_id, "amount": amount,
                "status": "pending", "created_at": created, "decided_at": None,
            }  # fmt: skip

        request_hash = idempotency.fingerprint(amount)
        return self._once(
            idempotency.CREDIT_REQUESTS,
            seller_id,
            key,
            request_hash,
            file_request,
            self.get_credit_request,
        )

    def get_credit_request(self, request_id: int) -> dict:
        return self._one(_REQUEST + " WHERE id = ?", request_id, "credit request")

    def approve_credit_request(self, request_id: int) -> dict:
        return self._write(lambda: ledger.approve_credit_request(request_id, now()))

    def reject_credit_request(self, request_id: int) -> dict:
        def reject() -> None:
            if not db.rows(
                "UPDATE credit_request SET status = 'rejected', decided_at = ? "
                "WHERE id = ? AND status = 'pending' RETURNING id",
                (now(), request_id),
            ):
                ledger.raise_not_pending(request_id)

        self._write(reject)
        return self.get_credit_request(request_id)

    def list_credit_requests(
        self, page: Page, seller_id: int | None = None, status: str | None = None
    ) -> list[dict]:
        if status is not None and status not in STATUSES:
            raise ValidationError("status must be pending, approved or rejected", "status")
        return self._page(_REQUEST, page, seller_id=seller_id, status=status)

    def pending_by_seller(self) -> list[dict]:
        """How many credit requests wait for the admin, per seller that has any."""
        return _dicts(
            "SELECT seller.id AS seller_id, seller.name, count(*) AS pending"
            " FROM credit_request JOIN seller ON seller.id = credit_request.seller_id"
            " WHERE credit_request.status = 'pending' GROUP BY seller.id ORDER BY seller.id"
        )

    # --- money -----------------------------------------------------------------------------

    def adjust_balance(
        self, seller_id: int, amount: object, reason: object, idempotency_key: str | None = None
    ) -> dict:
        """An admin's signed correction; with a key, the first outcome is final (see sell)."""
        return self.adjust_balance_once(seller_id, amount, reason, idempotency_key).record

    def adjust_balance_once(
        self, seller_id: int, amount: object, reason: object, idempotency_key: str | None
    ) -> Outcome:
        amount = parse_signed_amount(amount, self.config.max_amount)
        reason = clean_text(reason, "reason", MAX_REASON_LENGTH)
        key = idempotency.check_key(idempotency_key)

        def adjust(created: str) -> dict:
            return ledger.adjust(seller_id, amount, reason, created)

        request_hash = idempotency.fingerprint(amount, reason)
        return self._once(
            idempotency.ADJUSTMENTS, seller_id, key, request_hash, adjust, self.get_ledger_entry
        )

    def sell(
        self, seller_id: int, phone: object, amount: object, idempotency_key: str | None = None
    ) -> Outcome:
        """Sell a charge; with a key, the first outcome is final and replayed to every copy."""
        number = normalize_phone(phone)
        amount = parse_amount(amount, self.config.max_amount)
        key = idempotency.check_key(idempotency_key)

        def sell(created: str) -> dict:
            return ledger.sell(seller_id, number, amount, created)

        request_hash = idempotency.fingerprint(number, amount)
        return self._once(idempotency.SALES, seller_id, key, request_hash, sell, self.get_sale)

    def _once(
        self,
        kind: idempotency.Keyed,
        seller_id: int,
        key: str | None,
        request_hash: str,
        act: Callable[[str], dict],
        read: Callable[[int], dict],
    ) -> Outcome:
        """Do `act` in a write, once per key: every later copy gets the first outcome,
        `read` again by the id it made."""
        if key is None:
            return Outcome(self._write(lambda: act(now())), False)
        made = idempotency.earlier(kind, seller_id, key, request_hash)  # fast path, no write lock
        if made is not None:
            return Outcome(read(made), True)
        outcome = self._write(lambda: self._first(kind, seller_id, key, request_hash, act, read))
        if isinstance(outcome, ChargeboxError):
            raise outcome
        return outcome

    def _first(
        self,
        kind: idempotency.Keyed,
        seller_id: int,
        key: str,
        request_hash: str,
        act: Callable[[str], dict],
        read: Callable[[int], dict],
    ) -> Outcome | ChargeboxError:
        """Inside the write: what a copy that won the race made, or act now and record it.

        A refusal is returned, not raised, so that its record commits with the rest.
        """
        made = idempotency.earlier(kind, seller_id, key, request_hash)
        if made is not None:
            return Outcome(read(made), True)
        created = now()
        try:
            outcome: Outcome | ChargeboxError = Outcome(act(created), False)
        except idempotency.FINAL as refusal:  # nothing was written; the refusal is final
            outcome = refusal
        made_id = outcome if isinstance(outcome, ChargeboxError) else outcome.record["id"]
        idempotency.record(kind, seller_id, key, request_hash, made_id, created)
        return outcome

    # --- web sessions ----------------------------------------------------------------------

    def sign_in(self, token: object) -> tuple[str, Principal]:
        """Open a web session for the holder of a seller key or the admin token.

        Returns the session's secret cookie value (kept only as a hash) and who it is.
        Sessions that have expired are swept out in the same write.
        """
        if not isinstance(token, str) or not token.strip():
            raise Unauthorized("enter your API key (or the admin token)")
        secret = token.strip()
        principal = auth.identify(secret, self.config.admin_token)
        session, session_hash = auth.new_session_token()
        created = now()

        def open_session() -> None:
            db.execute("DELETE FROM web_session WHERE expires_at <= ?", (created,))
            db.execute(
                "INSERT INTO web_session (token_hash, role, seller_id, credential_hash,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session_hash,
                    principal.role,
                    principal.seller_id,
                    # What the session remembers of its secret: as it matched, this is
                    # the seller's api_key_hash, or the hash of the admin token.
                    auth.hash_key(secret),
                    created,
                    now(SESSION_LIFETIME),
                ),
            )

        self._write(open_session)
        return session, principal

    def session_principal(self, session: str | None) -> Principal | None:
        """Who an open, unexpired web session acts as; None for anything else."""
        if session is None:
            return None
        return auth.session_principal(session, self.config.admin_token, now())

    def sign_out(self, session: str) -> None:
        digest = auth.hash_key(session)
        self._write(lambda: db.execute("DELETE FROM web_session WHERE token_hash = ?", (digest,)))

    # --- reads -----------------------------------------------------------------------------

    def recent_ledger(self, seller_id: int, limit: int = 20) -> list[dict]:
        """A seller's newest ledger entries first, each sale with its phone number."""
        return _dicts(
            "SELECT e.id, e.kind, e.amount, e.balance_after, e.credit_request_id, e.sale_id,"
            " e.reason, e.created_at, sale.phone FROM ledger_entry AS e"
            " LEFT JOIN sale ON sale.id = e.sale_id"
            " WHERE e.seller_id = ? ORDER BY e.id DESC LIMIT ?",
            (seller_id, limit),
        )

    def recent_credit_requests(self, seller_id: int, limit: int = 10) -> list[dict]:
        return _dicts(
            _REQUEST + " WHERE seller_id = ? ORDER BY id DESC LIMIT ?", (seller_id, limit)
        )

    def list_sales(self, page: Page, seller_id: int | None = None) -> list[dict]:
        return self._page(_SALE, page, seller_id=seller_id)

    def get_sale(self, sale_id: int) -> dict:
        return self._one(_SALE + " WHERE id = ?", sale_id, "sale")

    def get_ledger_entry(self, entry_id: int) -> dict:
        return self._one(_ENTRY + " WHERE id = ?", entry_id, "ledger entry")

    def list_ledger(self, page: Page, seller_id: int | None = None) -> list[dict]:
        return self._page(_ENTRY, page, seller_id=seller_id)

    def list_phones(self, page: Page) -> list[dict]:
        return self._page(_PHONE, page)

    def register_phone(self, number: object) -> tuple[dict, bool]:
        """Register a number (normalised); returns (phone, created?)."""
        number = normalize_phone(number, "number")
        created = self._write(
            lambda: (
                db.execute(
                    "INSERT INTO phone (number, total_charged, created_at) VALUES (?, 0, ?) "
                    "ON CONFLICT (number) DO NOTHING",
                    (number, now()),
                ).rowcount
            )
        )
        return self._one(_PHONE + " WHERE number = ?", number, "phone"), created == 1

    def audit(self) -> dict:
        return ledger.audit()

    # --- helpers ---------------------------------------------------------------------------

    def _one(self, sql: str, ident: object, what: str) -> dict:
        found = _dicts(sql, (ident,))
        if not found:
            raise NotFound(f"{what} {ident} does not exist")
        return found[0]

    def _page(self, select: str, page: Page, **filters: object) -> list[dict]:
        where, params = ["id > ?"], [page.after_id]
        for column, value in filters.items():
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"{select} WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        return _dicts(sql, (*params, page.limit))

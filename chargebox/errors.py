"""The one exception tree of chargebox; each class carries a stable `code` of docs/api.md.

Domain code raises these; `web.errors` holds the only table from class to HTTP
status. Nothing here knows about HTTP, so services and the CLI can share it. An
unexpected exception is logged in one line (`in_one_line`), never with its trace,
waitress's too (`NoTraces` for its loggers, `closed_after_an_error` for its
connections, which asyncore would log frame by frame).
Messages are for humans and must never contain a token or a key. Each is an English
template with named params (`InsufficientCredit("balance {balance:,} toman does not
cover {amount:,} toman", balance=..., amount=...)`): the API answers the formatted
`message`, and a page says the template in its own language (web/refusals.py, whose
extraction finds every literal template here and in the raise sites).
"""

from __future__ import annotations

import errno
import logging
import re
import string
import sys
import traceback


def phrase(text: str) -> str:
    """Marks an English message kept in a constant, so that the `errors` catalogue's
    extraction (web/refusals.py) finds it as it finds a template written in a raise."""
    return text


def primary_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of a driver error (peewee keeps the original in .orig)."""
    code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def raised_at(exc: BaseException) -> str:
    """Where `exc` was raised, as `file:line`: what a log says of an unexpected error in
    place of its trace (which can carry data) and its message."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def in_one_line(exc: BaseException) -> str:
    """An unexpected error as a log says it: its type, an OSError's errno name, the type of
    what caused it (a lost connection and a read-only database are both Unavailable), and
    where it was raised; never its message nor its trace."""
    said = type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in errno.errorcode:
        said += f" {errno.errorcode[exc.errno]}"
    if exc.__cause__ is not None:
        said += f" from {type(exc.__cause__).__name__}"
    return f"{said} at {raised_at(exc)}"


class NoTraces(logging.Filter):
    """For a library's logger that logs exceptions with their trace (waitress): each such
    record becomes one line, what `in_one_line` says of the exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            record.msg = f"{record.getMessage()}: {in_one_line(exc)}"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def closed_after_an_error(dispatcher) -> None:
    """What a waitress connection (or its listener) does with an exception its handlers
    raised: asyncore's handle_error, which logs every frame and the exception's text, in
    one line."""
    logging.getLogger("chargebox.server").error(
        "closing %s after an unexpected error: %s", type(dispatcher).__name__,
        in_one_line(sys.exc_info()[1]))  # fmt: skip
    dispatcher.handle_close()


def _remade(cls: type, template: str, field: str | None, replayed: bool, params: dict) -> object:
    return cls(template, field, replayed=replayed, **params)


class ChargeboxError(Exception):
    """Base of every error a caller is meant to see."""

    code = "internal_error"

    def __init__(
        self, template: str, field: str | None = None, *, replayed: bool = False, **params: object
    ) -> None:
        message = template.format(field=field, **params)
        super().__init__(message)
        self.message = message
        self.field = field
        # The English the message is made of, and what fills it: a page translates these.
        self.template = template
        self.params = params
        # True when this is the stored outcome of an Idempotency-Key, answered again.
        self.replayed = replayed

    def __reduce__(self) -> tuple:
        """Pickled (and copied) as its template and params: its message, read as a
        template again, could hold braces of what a person typed."""
        return _remade, (type(self), self.template, self.field, self.replayed, self.params)

    @classmethod
    def replay(cls, template: str, message: str) -> ChargeboxError:
        """A refusal stored as its `message` alone, raised again (replayed) with the params
        read back by its `template` (numbers written `{name:,}`), so that a page can still
        say it in its own language; a message that does not fit stays as it was."""
        pattern, numbers = "", set()
        for literal, name, spec, _conversion in string.Formatter().parse(template):
            pattern += re.escape(literal)
            if name is not None:
                pattern += rf"(?P<{name}>[0-9,]+)" if spec == "," else rf"(?P<{name}>.+?)"
                numbers.update([name] if spec == "," else [])
        found = re.fullmatch(pattern, message)
        if found is None:
            return cls(message.replace("{", "{{").replace("}", "}}"), replayed=True)
        params = {
            name: int(value.replace(",", "")) if name in numbers else value
            for name, value in found.groupdict().items()
        }
        return cls(template, replayed=True, **params)


class MalformedJSON(ChargeboxError):
    """The request body is not valid JSON, or not a JSON object."""

    code = "malformed_json"


class Unauthorized(ChargeboxError):
    """No credentials, or credentials that match nobody."""

    code = "unauthorized"


class Forbidden(ChargeboxError):
    """Known caller, but this route or this resource is not theirs."""

    code = "forbidden"


class SellerSuspended(ChargeboxError):
    """The seller is suspended: its keys and sessions are refused, and a sale or credit
    request of its that was already under way is refused inside its write. Nothing moves."""

    code = "seller_suspended"


SUSPENDED = phrase("this seller is suspended; ask the admin to reactivate it")


class NotFound(ChargeboxError):
    """No such resource (or route)."""

    code = "not_found"


class ValidationError(ChargeboxError):
    """A field has the wrong type, range or shape; `field` names it."""

    code = "validation_error"


class IdempotencyKeyReused(ChargeboxError):
    """An Idempotency-Key already executed with a different request."""

    code = "idempotency_key_reused"


class InsufficientCredit(ChargeboxError):
    """The sale or decrease would make a balance negative (invariant I1)."""

    code = "insufficient_credit"


NOT_COVERED = phrase("balance {balance:,} toman does not cover {amount:,} toman")


class BalanceLimitExceeded(ChargeboxError):
    """A credit would push a balance above the 10^15 toman ceiling."""

    code = "balance_limit_exceeded"


OVER_CEILING = phrase("a balance may not exceed {limit:,} toman")


class PhoneTotalExceeded(ChargeboxError):
    """A sale would push its number's total charged past a 64-bit integer (only with
    CHARGEBOX_MAX_AMOUNT near its ceiling: at 10^15, after 9,223 such sales)."""

    code = "phone_total_exceeded"


class NotPending(ChargeboxError):
    """Approving or rejecting a credit request that is already decided."""

    code = "not_pending"


class AlreadyRefunded(ChargeboxError):
    """Refunding a sale that was refunded already: a sale is refunded at most once (I4)."""

    code = "already_refunded"


class KeyLabelInUse(ChargeboxError):
    """A new key's label is already the label of another of the seller's unrevoked keys."""

    code = "key_label_in_use"


class KeyRevoked(ChargeboxError):
    """Revoking or rotating a key that is already revoked (a revocation is final)."""

    code = "key_revoked"


class TooManyPendingRequests(ChargeboxError):
    """A seller files a credit request while its cap of pending requests is reached.

    A policy limit (`max_pending_requests`), not an invariant: nothing is filed, and
    a slot frees when the admin approves or rejects one of the seller's requests.
    """

    code = "too_many_pending_requests"


class TooManySignIns(ChargeboxError):
    """The web sign-in form, from an address with too many failed sign-ins of late
    (web/throttle.py): refused without its token being checked."""

    code = "too_many_sign_ins"


class PayloadTooLarge(ChargeboxError):
    """The request body is over the configured limit."""

    code = "payload_too_large"


class Unavailable(ChargeboxError):
    """The database could not take the write now (locked too long, read-only, disk full).

    Nothing was changed; the request may be retried (with the same Idempotency-Key).
    """

    code = "unavailable"


class HeldBack(Unavailable):
    """A list page (PostgreSQL) whose cursor a write stuck in flight keeps from being
    settled (settled.below_top): nothing is wrong with the connection."""


class NoTurn(Unavailable):
    """A statement that did not get its turn (statement_turns.Turns): the API's 503 like any;
    a page says why, in its own words, rather than "busy"."""


class LockTimeout(Unavailable):
    """The write lock was not had by the write's deadline; nothing of the write ran."""


class Deadlocked(Unavailable):
    """The database chose this write as a deadlock's victim (PostgreSQL): its part of
    the transaction was undone. The group writer tries it again while its deadline
    allows; otherwise it is a 503 like any write the database could not take."""


class Damaged(Unavailable):
    """The database file is damaged, or is no longer the file this process opened (one
    put in its place under the running server). Nothing was changed, and nothing will be
    until an operator stops the server, restores the file and starts it again."""


DAMAGED = phrase(
    "the database is damaged or was replaced under this server; an operator must restore"
    " it and restart the server"
)


class NotGranted(ChargeboxError):
    """The database refused this server's role a privilege (a grant revoked under the
    running server: start-up refuses a role without them, grants.refuse_lacking). 503 like
    Unavailable, but it fails only the write (or read) that needed it, not its batch."""

    code = "unavailable"


class IntegrityViolation(ChargeboxError):
    """The database refused a write that code should never have attempted.

    Raised when a CHECK, UNIQUE or trigger of the schema fires: the second line
    of defence caught what the first should have. Treated as a server bug.
    """

    code = "internal_error"

"""Who is calling: principals, seller API keys, web sessions (all stored hashed), sign-in.

A seller key is shown once at creation; only its SHA-256 is stored, so a copy
of the database file holds no usable key; a web session's cookie likewise. Every
request checks its key in the database, so a revoked key or a suspended seller is
refused from the next request on, on every server: most read it first. A sale
checks its key again inside its own write, in the transaction that would sell
(`refuse_unless_held`, `keys_hold`), by id, hash and seller together; so a key
read before in this process need not be read first (`remembered`, `KnownKeys`).
Each use is stamped on its key (key_use.py). `Access` binds it all to one database
and admin token. Nothing here logs a secret.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import logging
import secrets
import threading
from pathlib import Path
from time import monotonic

from chargebox import revocations
from chargebox.access_log import keep_out
from chargebox.clock import now
from chargebox.db import Database, Write
from chargebox.errors import SUSPENDED, SellerSuspended, Unauthorized
from chargebox.key_use import last_use
from chargebox.location import written_secret

log = logging.getLogger("chargebox.auth")

KEY_PREFIX = "cbk_"
MAX_TOKEN_LENGTH = 512
SESSION_LIFETIME = datetime.timedelta(hours=12)
# How far ahead of this host's clock another's may be when it opens a session. A session
# that expires later than a new one would, by more, was opened by a clock running ahead
# (set back since): it would last that much longer, so it is refused.
CLOCK_SKEW = datetime.timedelta(minutes=5)
# How long after they expire sessions are swept out (a sign-in sweeps): a clock that ran
# ahead for a while (a virtual machine resumed) would otherwise sweep, with one sign-in,
# every host's sessions, each good again once the clock is set right.
SWEPT_AFTER = datetime.timedelta(days=7)
SWEEP = 100  # expired sessions a sign-in sweeps out, at most: its write stays short
# Sessions the admin, and each seller, may have open at once: a sign-in past it ends the
# oldest. Unbounded, one seller's flood of sign-ins (1,300 a second) left rows that a
# suspension, or a later sweep, deleted in one write lasting seconds, under the write lock.
MAX_SESSIONS = 50
_SWEEP = (
    "DELETE FROM web_session WHERE id IN (SELECT id FROM web_session WHERE expires_at <= ? LIMIT ?)"
)
_OLDEST = (
    "DELETE FROM web_session WHERE {who} AND id <= (SELECT id FROM web_session WHERE {who}"
    " ORDER BY id DESC LIMIT 1 OFFSET ?)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class SellerKey:
    """A seller key as a request presented it: its row's id, its seller, and its hash. A
    write that acts on it checks all three against the row (`refuse_unless_held`), so an
    id edited by hand, or a database restored under running servers, refuses the key
    rather than letting it act as another."""

    id: int
    seller_id: int
    digest: str


@dataclasses.dataclass(frozen=True)
class Principal:
    role: str  # "admin" or "seller"
    seller_id: int | None = None
    key: SellerKey | None = dataclasses.field(default=None, compare=False)  # the key used
    # Known from an earlier read of its key, not read again in this request: its write
    # must check the key (`key`), and a refusal before that write reads it (web.api).
    unchecked: bool = dataclasses.field(default=False, compare=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


ADMIN = Principal("admin")

_KEY = (
    "SELECT k.id, k.seller_id, k.key_hash, k.last_used_at, seller.status FROM seller_key AS k"
    " JOIN seller ON seller.id = k.seller_id WHERE k.key_hash = ? AND k.revoked_at IS NULL"
)
_HELD = (
    "SELECT seller.status FROM seller_key AS k JOIN seller ON seller.id = k.seller_id"
    " WHERE k.id = ? AND k.seller_id = ? AND k.key_hash = ? AND k.revoked_at IS NULL"
)
_ALL_HELD = (  # of a table `held` (Write.table)
    "SELECT seller.status FROM {held} JOIN seller_key AS k ON k.id = held.id"
    " AND k.seller_id = held.seller AND k.key_hash = held.digest JOIN seller"
    " ON seller.id = k.seller_id WHERE k.revoked_at IS NULL"
)
# Inside a write, the key rows read stay as read until it commits. On PostgreSQL a plain
# read locks nothing (and a revocation touches no row a sale locks): a revocation could
# commit between the check and the sale's COMMIT. The sale holds a KEY SHARE lock on the
# rows, which a revocation's FOR UPDATE (`hold_for_revocation`) waits for; one that came
# first is seen (the locking read waits for it, then reads the revoked row). Not SHARE:
# the last-use stamp's UPDATE (key_use.py) would wait for the sales, and the sales queued
# behind it would deadlock with other sellers' batches (1 s stalls, 64 sellers, two
# servers). SQLite's write holds the whole file.
_KEPT = {"sqlite": "", "postgresql": " FOR KEY SHARE OF k"}
_REVOKING = "SELECT 1 FROM seller_key WHERE id = ? AND seller_id = ? FOR UPDATE"


def new_api_key() -> tuple[str, str]:
    """A fresh seller key and the hash to store for it."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)


def new_ledger_key() -> str:
    """A fresh key for the ledger's seals (seals.py): 256 random bits, as text."""
    return secrets.token_urlsafe(32)


def replace_secret(path: Path, secret: str) -> None:
    """Write a secret's file afresh, owner-only, atomically (never half written), and on
    disk before its answer: a power cut never leaves it empty or the old one."""
    written_secret(path, secret, replacing=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or Unauthorized."""
    if not header:
        raise Unauthorized("missing Authorization: Bearer <token> header")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token


def identify(database: Database, token: str, admin_token: str | None,
             remembered: bool = False) -> Principal:  # fmt: skip
    """The admin or the seller whose secret `token` is, or Unauthorized; SellerSuspended
    for a key of a suspended seller. A seller's key is one indexed read; `remembered`
    (the caller's write will check the principal's `key`), a key read before in this
    process is not read again: its principal is `unchecked`. An admin token is checked
    against the rotated one, if any (`current_admin`)."""
    presented = token.encode("utf-8", "surrogateescape")
    digest = hash_key(token)
    if admin_token and hmac.compare_digest(presented, admin_token.encode("utf-8")):
        rotated = current_admin(database)
        if rotated is None or hmac.compare_digest(rotated, digest):
            return ADMIN
        raise Unauthorized("unknown token")  # the token this server started with, rotated away
    known = _known(database)
    if remembered and (seen := known.get(digest)) is not None:
        if monotonic() >= seen.look_again:  # its last use looked at once a second, at most
            seen.used = last_use(database).saw(seen.key.id, seen.used)
            seen.look_again = monotonic() + 1
        return Principal("seller", seen.key.seller_id, seen.key, unchecked=True)
    rows = database.rows(_KEY, (digest,))
    if not rows or rows[0][4] != "active":
        known.forget(digest)  # refused from now on by this read, not by a write's check
    if rows and hmac.compare_digest(rows[0][2], digest):
        key_id, seller_id, _, last_used_at, status = rows[0]
        if status != "active":
            raise SellerSuspended(SUSPENDED)
        key = SellerKey(key_id, seller_id, digest)
        known.remember(key, last_use(database).saw(key_id, last_used_at))
        return Principal("seller", seller_id, key)
    rotated = current_admin(database)
    if rotated is not None and hmac.compare_digest(rotated, digest):
        keep_out(token)  # now known here: cut out of the access log, as the configured one
        return ADMIN  # a token rotated in after this server started
    raise Unauthorized("unknown token")


def refuse_unless_held(reader: Database | Write, key: SellerKey, *, in_write: bool) -> None:
    """Unauthorized unless the seller key `key` is still there as presented (its id, seller
    and hash) and not revoked; SellerSuspended if its seller is not active: the refusals
    `identify` would make, inside the caller's write (`in_write`: the key row then stays
    as read until it commits; a revocation waits) or a read (a copy replayed without a
    write)."""
    sql = _HELD + _KEPT[reader.dialect] if in_write else _HELD
    rows = reader.rows(sql, (key.id, key.seller_id, key.digest))
    if not rows:
        raise Unauthorized("unknown token")
    if rows[0][0] != "active":
        raise SellerSuspended(SUSPENDED)


def hold_for_revocation(write: Write, seller_id: int, key_id: int) -> None:
    """Before a key is revoked (PostgreSQL): wait for every sale whose write has checked it
    to end, and make those to come wait for the revocation (see _KEPT). The revocation
    goes in a transaction of its own (services), holding nothing else: in a batch after a
    sale of the same seller it would wait holding that seller's row, which another
    server's sale holding the key may wait for (a deadlock, broken after 1 s)."""
    if write.dialect == "postgresql":
        write.rows(_REVOKING, (key_id, seller_id))


def keys_hold(write: Write, keys: list[SellerKey]) -> bool:
    """Whether every seller key of `keys` still holds as `refuse_unless_held` checks it,
    in one read: a batch of sales checks its callers' keys at once (their rows then stay as
    read until the write commits)."""
    wanted = sorted(set(keys), key=lambda key: key.id)
    columns = [[key.id for key in wanted], [key.seller_id for key in wanted],
               [key.digest for key in wanted]]  # fmt: skip
    held, params = write.table("held", {"id": "bigint", "seller": "bigint", "digest": "text"},
                               columns)  # fmt: skip
    rows = write.rows(_ALL_HELD.format(held=held) + _KEPT[write.dialect], params)
    return sum(1 for (status,) in rows if status == "active") == len(wanted)


@dataclasses.dataclass(slots=True)
class _Known:
    key: SellerKey
    used: str | None  # its last use, as last seen
    look_again: float  # when to look at that again (time.monotonic())


class KnownKeys:
    """The seller keys this process has read, by hash. Never wrong, only old: another
    server can revoke a key or suspend its seller, which the write that uses it checks
    (by id, seller and hash: a row changed by hand refuses the key). At most LIMIT keys:
    the one remembered longest ago makes way for a new one (it is read again next time)."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self.keys: dict[str, _Known] = {}
        self.lock = threading.Lock()  # for changes; a look-up is one dict.get

    def get(self, digest: str) -> _Known | None:
        return self.keys.get(digest)

    def forget(self, digest: str) -> None:
        with self.lock:
            self.keys.pop(digest, None)

    def remember(self, key: SellerKey, used: str | None) -> None:
        with self.lock:
            self.keys.pop(key.digest, None)  # remembered afresh: the newest
            while len(self.keys) >= self.LIMIT:
                del self.keys[next(iter(self.keys))]
            self.keys[key.digest] = _Known(key, used, monotonic() + 1)


def _known(database: Database) -> KnownKeys:
    found = getattr(database, "known_keys", None)
    if found is None:
        found = database.known_keys = KnownKeys()
    return found


def current_admin(database: Database) -> str | None:
    """The SHA-256 of the admin token in force, once one was rotated in; None before."""
    rows = database.rows("SELECT token_hash FROM admin_token WHERE id = 1")
    return rows[0][0] if rows else None


def rotate_admin(database: Database, token: str) -> str:
    """Make `token` the admin token on every server at once: the one before it is refused
    from this commit on, and the admin's web sessions opened with it end. Stamped now, or
    past the rotation before it (a clock set back), and anchored (revocations). Its stamp."""
    digest = hash_key(token)
    at = database.write(lambda write: revocations.rotate_in(write, digest), alone=True)
    revocations.admin_rotated(database, digest, at)
    return at


def new_session_token() -> tuple[str, str]:
    """A fresh web session cookie value and the hash to store for it."""
    token = secrets.token_urlsafe(32)
    return token, hash_key(token)


def csrf_token(session_token: str) -> str:
    """The anti-forgery token of a session: derived from its secret cookie, so a page on
    another site can neither read nor compute it."""
    return hmac.new(session_token.encode("utf-8"), b"chargebox csrf", "sha256").hexdigest()


def session_principal(database: Database, token: str, admin_token: str | None) -> Principal | None:
    """Who the session with cookie `token` acts as, if it exists, has not expired, does not
    expire later than a session opened now could (a clock set back: `_too_late`), and its
    credential still holds: an admin session ends when the admin token changes, a
    seller's when its key is revoked or the seller is suspended."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    rows = database.rows(
        "SELECT s.role, s.seller_id, s.credential_hash, s.expires_at, k.key_hash, k.id"
        " FROM web_session AS s LEFT JOIN seller_key AS k ON k.key_hash = s.credential_hash"
        " AND k.seller_id = s.seller_id AND k.revoked_at IS NULL"
        " AND EXISTS (SELECT 1 FROM seller WHERE id = s.seller_id AND status = 'active')"
        " WHERE s.token_hash = ?",
        (hash_key(token),),
    )
    if not rows:
        return None
    role, seller_id, remembered, expires_at, key_hash, key_id = rows[0]
    current, key = key_hash, None
    if key_hash is not None:
        key = SellerKey(key_id, seller_id, key_hash)
    if role == "admin":
        current = current_admin(database) or (hash_key(admin_token) if admin_token else None)
    if not now() < expires_at <= _too_late() or current is None:
        return None
    if not hmac.compare_digest(remembered, current):
        return None
    return ADMIN if role == "admin" else Principal("seller", seller_id, key)


def _too_late() -> str:
    """Past the latest expiry a session opened now may have, give or take CLOCK_SKEW
    between hosts: one opened while a clock ran ahead is refused once it is set back,
    rather than lasting as much longer. (It is not swept: on a host whose clock runs
    ahead of this one by more than CLOCK_SKEW it is still good.)"""
    return now(SESSION_LIFETIME + CLOCK_SKEW)


class Access:
    """Who may act on one database: API tokens, and the web sessions opened with them."""

    def __init__(self, database: Database, admin_token: str | None) -> None:
        self.database = database
        self.admin_token = admin_token

    def authenticate(self, header: str | None, remembered: bool = False) -> Principal:
        """Map a request's Authorization header to the admin or one seller (`remembered`:
        see `identify`)."""
        return identify(self.database, bearer_token(header), self.admin_token, remembered)

    def sign_in(self, token: object) -> tuple[str, Principal]:
        """Open a web session for the holder of a seller key or the admin token.

        Returns the session's secret cookie value (kept only as a hash) and who it is.
        In the same write, up to SWEEP sessions that expired over SWEPT_AFTER ago are swept
        out, and its holder's oldest past MAX_SESSIONS ended.
        """
        if not isinstance(token, str) or not token.strip():
            raise Unauthorized("enter your API key (or the admin token)")
        secret = token.strip()
        principal = identify(self.database, secret, self.admin_token)
        session, session_hash = new_session_token()
        created = now()

        def open_session(write: Write) -> None:
            write.execute(_SWEEP, (now(-SWEPT_AFTER), SWEEP))
            write.execute(
                "INSERT INTO web_session (token_hash, role, seller_id, credential_hash,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session_hash,
                    principal.role,
                    principal.seller_id,
                    # What the session remembers of its secret: as it matched, this is
                    # the hash of the seller's key, or of the admin token.
                    hash_key(secret),
                    created,
                    now(SESSION_LIFETIME),
                ),
            )
            if principal.seller_id is None:
                write.execute(_OLDEST.format(who="seller_id IS NULL"), (MAX_SESSIONS,))
            else:
                mine, ids = "seller_id = ?", (principal.seller_id,)
                write.execute(_OLDEST.format(who=mine), (*ids, *ids, MAX_SESSIONS))

        self.database.write(open_session)
        return session, principal

    def session(self, session: str | None) -> Principal | None:
        """Who an open, unexpired web session acts as; None for anything else."""
        if session is None:
            return None
        return session_principal(self.database, session, self.admin_token)

    def sign_out(self, session: str) -> None:
        digest = hash_key(session)
        self.database.write(
            lambda write: write.execute("DELETE FROM web_session WHERE token_hash = ?", (digest,))
        )

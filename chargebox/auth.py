"""Who is calling: principals, seller API keys, web sessions (all stored hashed), sign-in.

A seller key is shown once at creation; only its SHA-256 is stored, so a copy
of the database file holds no usable key; a web session's cookie likewise.
Secrets are compared with `hmac.compare_digest`. `Access` binds it all to one
database and admin token. Nothing here logs, and no error message echoes a token.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import secrets

from chargebox.clock import now
from chargebox.db import Database, Write
from chargebox.errors import Unauthorized

KEY_PREFIX = "cbk_"
MAX_TOKEN_LENGTH = 512
SESSION_LIFETIME = datetime.timedelta(hours=12)


@dataclasses.dataclass(frozen=True)
class Principal:
    role: str  # "admin" or "seller"
    seller_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


ADMIN = Principal("admin")

# Keys are never changed or revoked once issued, so a key that matched a seller
# keeps matching it: remembering the match (in the Database's `seller_keys`) saves
# a read per request. Only a key's SHA-256 is kept, as in the database; unknown
# keys are not remembered.
_CACHE_LIMIT = 100_000


def new_api_key() -> tuple[str, str]:
    """A fresh seller key and the hash to store for it."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)


def new_ledger_key() -> str:
    """A fresh key for the ledger's seals (seals.py): 256 random bits, as text."""
    return secrets.token_urlsafe(32)


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


def identify(database: Database, token: str, admin_token: str | None) -> Principal:
    """The admin or the seller whose secret `token` is, or Unauthorized."""
    presented = token.encode("utf-8", "surrogateescape")
    if admin_token and hmac.compare_digest(presented, admin_token.encode("utf-8")):
        return ADMIN
    digest = hash_key(token)
    known = database.seller_keys.get(digest)
    if known is not None:
        return known
    rows = database.rows("SELECT id, api_key_hash FROM seller WHERE api_key_hash = ?", (digest,))
    if rows and hmac.compare_digest(rows[0][1], digest):
        principal = Principal("seller", rows[0][0])
        if len(database.seller_keys) >= _CACHE_LIMIT:
            database.seller_keys.clear()
        database.seller_keys[digest] = principal
        return principal
    raise Unauthorized("unknown token")


def new_session_token() -> tuple[str, str]:
    """A fresh web session cookie value and the hash to store for it."""
    token = secrets.token_urlsafe(32)
    return token, hash_key(token)


def csrf_token(session_token: str) -> str:
    """The anti-forgery token of a session: derived from its secret cookie, so a page on
    another site can neither read nor compute it."""
    return hmac.new(session_token.encode("utf-8"), b"chargebox csrf", "sha256").hexdigest()


def session_principal(
    database: Database, token: str, admin_token: str | None, at: str
) -> Principal | None:
    """Who the session with cookie `token` acts as, if it exists, has not expired and its
    credential still holds (an admin session ends when the admin token changes)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    rows = database.rows(
        "SELECT s.role, s.seller_id, s.credential_hash, s.expires_at, seller.api_key_hash "
        "FROM web_session AS s LEFT JOIN seller ON seller.id = s.seller_id "
        "WHERE s.token_hash = ?",
        (hash_key(token),),
    )
    if not rows:
        return None
    role, seller_id, remembered, expires_at, key_hash = rows[0]
    current = hash_key(admin_token) if role == "admin" and admin_token else key_hash
    if expires_at <= at or current is None or not hmac.compare_digest(remembered, current):
        return None
    return ADMIN if role == "admin" else Principal("seller", seller_id)


class Access:
    """Who may act on one database: API tokens, and the web sessions opened with them."""

    def __init__(self, database: Database, admin_token: str | None) -> None:
        self.database = database
        self.admin_token = admin_token

    def authenticate(self, header: str | None) -> Principal:
        """Map a request's Authorization header to the admin or one seller."""
        return identify(self.database, bearer_token(header), self.admin_token)

    def sign_in(self, token: object) -> tuple[str, Principal]:
        """Open a web session for the holder of a seller key or the admin token.

        Returns the session's secret cookie value (kept only as a hash) and who it is.
        Sessions that have expired are swept out in the same write.
        """
        if not isinstance(token, str) or not token.strip():
            raise Unauthorized("enter your API key (or the admin token)")
        secret = token.strip()
        principal = identify(self.database, secret, self.admin_token)
        session, session_hash = new_session_token()
        created = now()

        def open_session(write: Write) -> None:
            write.execute("DELETE FROM web_session WHERE expires_at <= ?", (created,))
            write.execute(
                "INSERT INTO web_session (token_hash, role, seller_id, credential_hash,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session_hash,
                    principal.role,
                    principal.seller_id,
                    # What the session remembers of its secret: as it matched, this is
                    # the seller's api_key_hash, or the hash of the admin token.
                    hash_key(secret),
                    created,
                    now(SESSION_LIFETIME),
                ),
            )

        self.database.write(open_session)
        return session, principal

    def session(self, session: str | None) -> Principal | None:
        """Who an open, unexpired web session acts as; None for anything else."""
        if session is None:
            return None
        return session_principal(self.database, session, self.admin_token, now())

    def sign_out(self, session: str) -> None:
        digest = hash_key(session)
        self.database.write(
            lambda write: write.execute("DELETE FROM web_session WHERE token_hash = ?", (digest,))
        )

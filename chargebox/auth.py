"""Who is calling: principals, seller API keys, web sessions (all stored hashed), lookups.

A seller key is shown once at creation; only its SHA-256 is stored, so a copy
of the database file holds no usable key; a web session's cookie likewise.
Secrets are compared with `hmac.compare_digest`. Nothing here logs, and no
error message echoes a token.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets

from chargebox import db
from chargebox.errors import Unauthorized

KEY_PREFIX = "cbk_"
MAX_TOKEN_LENGTH = 512


@dataclasses.dataclass(frozen=True)
class Principal:
    role: str  # "admin" or "seller"
    seller_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


ADMIN = Principal("admin")

# Keys are never changed or revoked once issued, so a key that matched a seller
# keeps matching it: remembering the match saves a database read per request.
# Only the SHA-256 of a key is kept, as in the database. Unknown keys are not cached.
_sellers_by_digest: dict[str, Principal] = {}
_CACHE_LIMIT = 100_000


def new_api_key() -> tuple[str, str]:
    """A fresh seller key and the hash to store for it."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


def new_admin_token() -> str:
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


def authenticate(header: str | None, admin_token: str | None) -> Principal:
    """Map a request's Authorization header to the admin or one seller."""
    return identify(bearer_token(header), admin_token)


def identify(token: str, admin_token: str | None) -> Principal:
    """The admin or the seller whose secret `token` is, or Unauthorized."""
    presented = token.encode("utf-8", "surrogateescape")
    if admin_token and hmac.compare_digest(presented, admin_token.encode("utf-8")):
        return ADMIN
    digest = hash_key(token)
    known = _sellers_by_digest.get(digest)
    if known is not None:
        return known
    rows = db.rows("SELECT id, api_key_hash FROM seller WHERE api_key_hash = ?", (digest,))
    if rows and hmac.compare_digest(rows[0][1], digest):
        principal = Principal("seller", rows[0][0])
        if len(_sellers_by_digest) >= _CACHE_LIMIT:
            _sellers_by_digest.clear()
        _sellers_by_digest[digest] = principal
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


def session_principal(token: str, admin_token: str | None, now: str) -> Principal | None:
    """Who the session with cookie `token` acts as, if it exists, has not expired and its
    credential still holds (an admin session ends when the admin token changes)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    rows = db.rows(
        "SELECT s.role, s.seller_id, s.credential_hash, s.expires_at, seller.api_key_hash "
        "FROM web_session AS s LEFT JOIN seller ON seller.id = s.seller_id "
        "WHERE s.token_hash = ?",
        (hash_key(token),),
    )
    if not rows:
        return None
    role, seller_id, remembered, expires_at, key_hash = rows[0]
    current = hash_key(admin_token) if role == "admin" and admin_token else key_hash
    if expires_at <= now or current is None or not hmac.compare_digest(remembered, current):
        return None
    return ADMIN if role == "admin" else Principal("seller", seller_id)

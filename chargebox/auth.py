"""Who is calling: principals, seller API keys (random, stored hashed) and token lookup.

A seller key is shown once at creation; only its SHA-256 is stored, so a copy
of the database file holds no usable key. Secrets are compared with
`hmac.compare_digest`. Nothing here logs, and no error message echoes a token.
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
    token = bearer_token(header)
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

"""What a restored copy would quietly undo: revoked keys, suspensions, admin token rotations.

A backup holds the keys, the sellers' statuses and the admin token of its moment. Put
back, a key revoked since would sell again, a seller suspended since would be active,
and the admin token in force before the last rotation would be again. So each such
change is anchored as it commits: a line of kind `access` in the anchors file
(anchors.py), sealed with the ledger key, naming the key revoked (its id, seller,
creation stamp and when it was revoked), the seller's status set (its id, creation
stamp and status) or the admin token's hash and when it came in force. A `restore`
line does not end them: they stay true of whatever copy is served next.

The audit names each one the database does not hold as an `anchor` problem; start-up
refuses such a file, as it refuses a rolled-back one; `chargebox anchors accept-restore`
(restore.redo) does each one again and says so: the key revoked (stamped as it was),
the seller's status set (a suspension ends its web sessions), the admin token put back
in force (the admin's other sessions end). A key or a seller the copy does not hold
(made after it) is passed over: the creation stamp tells apart a row made again with
the same id. A newer rotation of the admin token in the database than the one anchored
stands. A change committed but not anchored (a full disk, the anchors' lock held for
seconds) is logged as such, and left to the operator.

Keys made after the copy, a rotated key's replacement among them, are not in it and are
not made again: the seller needs a new one (`chargebox create-key`).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from chargebox import anchors
from chargebox.config import Config
from chargebox.db import Database

KIND = "access"
KEY, SELLER, ADMIN = "key", "seller", "admin"
_LIVE_KEYS = ("SELECT id, seller_id, created_at FROM seller_key"
              " WHERE revoked_at IS NULL AND id IN ({})")  # fmt: skip
_STATUSES = "SELECT id, created_at, status FROM seller WHERE id IN ({})"
log = logging.getLogger("chargebox.anchors")


class Change(NamedTuple):
    """One anchored change: `what` (KEY, SELLER, ADMIN), the row it names (`ident`: a
    key's id, seller and creation stamp; a seller's id and creation stamp; the admin
    token's hash), the state set (`state`: a key's revocation stamp, a seller's status,
    the admin token's stamp), and the line's stamp and writer."""

    what: str
    ident: tuple
    state: str
    at: str
    by: str

    @property
    def seller_id(self) -> int | None:
        return self.ident[1] if self.what == KEY else self.ident[0] if self.what == SELLER else None

    def said(self) -> str:
        if self.what == KEY:
            return f"key {self.ident[0]} of seller {self.ident[1]}, revoked at {self.state}"
        if self.what == SELLER:
            return f"seller {self.ident[0]}, set {self.state} at {self.at}"
        return f"the admin token rotated in at {self.state}"


def revoked(database: Database, key: dict, by: str) -> None:
    """Anchor a key's revocation (`key`: its row as revoke_key answers it)."""
    _anchor(database, [KEY, key["id"], key["seller_id"], key["created_at"], key["revoked_at"]],
            by)  # fmt: skip


def status_set(database: Database, seller: dict) -> None:
    """Anchor a seller's status, as set_status answers its row."""
    _anchor(database, [SELLER, seller["id"], seller["created_at"], seller["status"]],
            "suspend" if seller["status"] == "suspended" else "reactivate")  # fmt: skip


def admin_rotated(database: Database, token_hash: str, at: str) -> None:
    _anchor(database, [ADMIN, token_hash, at], "rotate-admin-token")


def _anchor(database: Database, record: list, by: str) -> None:
    """One committed change, anchored; a failure is logged (the change stands)."""
    key = database.ledger_key
    if key is None:
        return
    config = database.config
    try:
        anchors.record(config, key, [record], by, kind=KIND)
    except OSError as exc:
        log.error("%s of %s is committed, but could not be anchored in %s (%s: %s): a copy "
                  "restored later would not be told of it", by, _named(record),
                  config.anchors_path, type(exc).__name__, exc)  # fmt: skip


def _named(record: list) -> str:
    """What a record is of, for the log: never the admin token's hash."""
    return f"{record[0]} {record[1]}" if record[0] != ADMIN else "the admin token"


def changes(lines: list[tuple]) -> list[Change]:
    """The newest anchored change of each key, seller and the admin token (`lines`: the
    anchors file's `access` records, anchors.File.access; a seller's in the file's order,
    the admin token's by its stamp). A record this release cannot
    read (a newer one's) is passed over."""
    newest: dict[tuple, Change] = {}
    for at, by, record in lines:
        try:
            change = _change(record, at, by)
        except (ValueError, TypeError, IndexError):
            continue
        subject = (change.what, change.ident if change.what != ADMIN else ())
        known = newest.get(subject)
        if change.what != ADMIN or known is None or change.state >= known.state:
            newest[subject] = change
    return list(newest.values())


def _change(record: list, at: str, by: str) -> Change:
    what = record[0]
    if what == KEY:
        _, key_id, seller_id, created_at, revoked_at = record
        return Change(KEY, (int(key_id), int(seller_id), str(created_at)), str(revoked_at), at, by)
    if what == SELLER:
        _, seller_id, created_at, status = record
        if status not in ("active", "suspended"):
            raise ValueError(status)
        return Change(SELLER, (int(seller_id), str(created_at)), status, at, by)
    if what == ADMIN:
        _, token_hash, changed_at = record
        return Change(ADMIN, (str(token_hash),), str(changed_at), at, by)
    raise ValueError(what)


def undone(db, held: list[Change]) -> list[Change]:
    """The anchored changes `db` (a snapshot or a Write, of this release's schema: every
    caller checked it) does not hold."""
    found = []
    keys = [c for c in held if c.what == KEY]
    if keys:
        live = {tuple(row) for row in anchors.rows_in(db, _LIVE_KEYS, [c.ident[0] for c in keys])}
        found += [c for c in keys if c.ident in live]
    sellers = [c for c in held if c.what == SELLER]
    if sellers:
        rows = anchors.rows_in(db, _STATUSES, [c.ident[0] for c in sellers])
        now = {(seller_id, created_at): status for seller_id, created_at, status in rows}
        found += [c for c in sellers if now.get(c.ident, c.state) != c.state]
    admin = [c for c in held if c.what == ADMIN]
    if admin:
        rows = db.rows("SELECT token_hash, changed_at FROM admin_token WHERE id = 1")
        token_hash, changed_at = rows[0] if rows else (None, "")
        found += [c for c in admin if token_hash != c.ident[0] and changed_at < c.state]
    return found


def problems(db, found: anchors.Loaded) -> list[dict]:
    """An `anchor` problem for each anchored change the database does not hold."""
    return [
        anchors.problem(c.seller_id, None, f"{c.said()} (anchored by {c.by}), is undone in "
                        "this database: a copy restored? `chargebox anchors accept-restore` "
                        "does it again")
        for c in undone(db, changes(found.access))
    ]  # fmt: skip


def refuse_undone(config: Config, database: Database, key: str) -> None:
    """Start-up, after anchors.refuse_rollback (which reports an anchors file it cannot
    read): ValueError if the database lacks an anchored change."""
    held = changes(anchors.read(config.anchors_path, key.encode("utf-8")).access)
    found = undone(database, held) if held else []
    if found:
        where = "(the PostgreSQL database)" if config.db_url else str(config.db_path)
        raise ValueError(
            f"--db {where} lacks {len(found)} change(s) of access anchored in "
            f"{config.anchors_path}, first: {found[0].said()}. If you restored it on purpose, "
            "run `chargebox anchors accept-restore` with the same --db: it does them again; "
            "if not, find out who replaced it before serving it"
        )

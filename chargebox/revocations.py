"""What a restored copy would quietly undo: revoked keys, admin token rotations, and
sellers suspended or reactivated.

A backup holds the keys and the admin token of its moment. Put back, a key revoked
since (or rotated: the old one is revoked) would sell again, and the admin token in
force before the last rotation would be again. So each revocation and each rotation of
the admin token is anchored as it commits: a line of kind `access` in the anchors file
(anchors.py), sealed with the ledger key, naming the key (its id, seller, creation stamp
and when it was revoked), the admin token's hash and stamp, or the seller (its id and
creation stamp), its status and the count of its changes of status. A `restore` line does
not end them: they stay true of whatever copy is served next.

Each only moves one way, so a database's state can be compared with the anchored one
whatever the order of the lines, whichever host or process wrote them, and in a
snapshot taken after the file was read (anchors.loaded): a revocation is final; each
rotation of the admin token is stamped past the one before it, one at a time
(rotate_in), so a database that holds another token under an older stamp than the
anchored one is older than that rotation; and a seller's status, which goes both ways,
comes with a count of its changes that only grows (schema version 11: the column
seller.status_changes, the guard seller_status_is_counted; the row's lock orders two
changes), so a database whose count is below the anchored one lacks that change, and
one whose count has reached it holds it or a later one. (Unless an older release
rotated the admin token since, by its own clock alone, or changed a status uncounted; or,
after a PostgreSQL restore, a host that accepted it changed what another host's redo,
run later, does again over it: a rotation by a clock behind, or a change of status, as
the counts start again from the copy's. README: accept on every host first.)

The audit names each anchored change the database lacks as an `anchor` problem;
start-up refuses such a file, as it refuses a rolled-back one; `chargebox anchors
accept-restore` (restore.redo) does each again and says so: the key revoked (stamped as
it was), the admin token's hash and stamp put back (the admin's other web sessions
end), the seller's newest anchored status put back with its count (a suspension ends
its web sessions). A key or seller the copy does not hold (made after it) is passed
over: the creation stamp tells apart a row made again with the same id.

Not anchored: a key or a seller made after the copy (a rotated key's replacement among
them): the seller needs a new key (`chargebox create-key`). On purpose: a key made again
from its anchor would fail open wherever its revocation was not anchored in the same
file (an append that failed, another PostgreSQL host's file), where a key left out only
fails closed (helper-132). A change committed but not anchored (a full disk, the
anchors' lock held for seconds: logged as such; or a crash between the commit and the
line) is not known to a later restore.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from chargebox import anchors, clock
from chargebox.config import Config
from chargebox.db import Database, Write

KIND = "access"
KEY, ADMIN, SELLER = "key", "admin", "seller"
_LIVE_KEYS = ("SELECT id, seller_id, created_at FROM seller_key"
              " WHERE revoked_at IS NULL AND id IN ({})")  # fmt: skip
_COUNTS = "SELECT id, created_at, status_changes FROM seller WHERE id IN ({})"
ADMIN_LOCK = 7355610  # PostgreSQL's advisory lock for a rotation of the admin token
_ADMIN_IN_FORCE = ("INSERT INTO admin_token (id, token_hash, changed_at) VALUES (1, ?, ?)"
                   " ON CONFLICT (id) DO UPDATE SET token_hash = excluded.token_hash,"
                   " changed_at = excluded.changed_at")  # fmt: skip
log = logging.getLogger("chargebox.anchors")


class Change(NamedTuple):
    """One anchored change: `what` (KEY, ADMIN, SELLER), what it names (`ident`: a key's
    id, seller and creation stamp; the admin token's hash; a seller's id and creation
    stamp), its state (`state`: the key's revocation stamp, the admin token's rotation
    stamp, the seller's status), the line's stamp and writer, and a seller's count of
    changes of status with it (`count`)."""

    what: str
    ident: tuple
    state: str
    at: str
    by: str
    count: int = 0

    @property
    def seller_id(self) -> int | None:
        return self.ident[1] if self.what == KEY else self.ident[0] if self.what == SELLER else None

    def said(self) -> str:
        if self.what == KEY:
            return f"key {self.ident[0]} of seller {self.ident[1]}, revoked at {self.state}"
        if self.what == SELLER:
            done = "suspended" if self.state == "suspended" else "reactivated"
            return f"seller {self.ident[0]} {done} (change {self.count} of its status)"
        return f"the admin token rotated in at {self.state}"


def revoked(database: Database, key: dict, by: str) -> None:
    """Anchor a key's revocation (`key`: its row as revoke_key answers it)."""
    _anchor(database, [KEY, key["id"], key["seller_id"], key["created_at"], key["revoked_at"]],
            by)  # fmt: skip


def status_set(database: Database, seller: dict, by: str) -> None:
    """Anchor a seller's status (`seller`: its row as set_status wrote it, with its count)."""
    _anchor(database, [SELLER, seller["id"], seller["created_at"], seller["status"],
                       seller["status_changes"]], by)  # fmt: skip


def admin_rotated(database: Database, token_hash: str, at: str) -> None:
    _anchor(database, [ADMIN, token_hash, at], "rotate-admin-token")


def rotate_in(write: Write, token_hash: str) -> str:
    """The admin token of `token_hash` in force (put_admin), stamped now or past the
    rotation before it (a clock set back, another host's behind); the stamp. Rotations
    go one at a time: on PostgreSQL (READ COMMITTED) two that read the stamp before
    either wrote would leave the older stamp on the newer token (helper-129)."""
    hold_admin(write)
    held = write.rows("SELECT changed_at FROM admin_token WHERE id = 1")
    at = clock.after(held[0][0] if held else None)
    put_admin(write, token_hash, at)
    return at


def hold_admin(write: Write) -> None:
    """Until this write ends, no other rotation or redo of the admin token (PostgreSQL;
    SQLite's writes go one at a time anyway)."""
    if write.dialect == "postgresql":
        write.rows("SELECT pg_advisory_xact_lock(?)", (ADMIN_LOCK,))


def put_admin(write: Write, token_hash: str, at: str) -> None:
    """The admin token of `token_hash` in force from this commit on, stamped `at`; the
    admin's web sessions opened with another end (auth.rotate_admin, restore.redo)."""
    write.execute(_ADMIN_IN_FORCE, (token_hash, at))
    write.execute("DELETE FROM web_session WHERE role = 'admin' AND credential_hash <> ?",
                  (token_hash,))  # fmt: skip


def end_sessions(write: Write, seller_id: int) -> None:
    """A suspension ends the seller's web sessions (set_status, restore.redo)."""
    write.execute("DELETE FROM web_session WHERE seller_id = ?", (seller_id,))


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
    """Each key's anchored revocation, the newest anchored admin token, by its stamp, and
    each seller's newest anchored status, by its count (`lines`: the anchors file's
    `access` records, anchors.File.access). A record this release cannot read (a newer
    one's) is passed over."""
    newest: dict[tuple, Change] = {}
    for at, by, record in lines:
        try:
            change = _change(record, at, by)
        except (ValueError, TypeError, IndexError):
            continue
        subject = (change.what, change.ident if change.what != ADMIN else ())
        known = newest.get(subject)
        if (
            known is None
            or change.what == KEY
            or (change.count, change.state) >= (known.count, known.state)
        ):
            newest[subject] = change
    return list(newest.values())


def _change(record: list, at: str, by: str) -> Change:
    what = record[0]
    if what == KEY:
        _, key_id, seller_id, created_at, revoked_at = record
        return Change(KEY, (int(key_id), int(seller_id), str(created_at)), str(revoked_at), at, by)
    if what == ADMIN:
        _, token_hash, changed_at = record
        return Change(ADMIN, (str(token_hash),), str(changed_at), at, by)
    if what == SELLER:
        _, seller_id, created_at, status, count = record
        if status not in ("active", "suspended") or type(count) is not int:
            raise ValueError(status)
        return Change(SELLER, (int(seller_id), str(created_at)), status, at, by, count)
    raise ValueError(what)


def undone(db, held: list[Change]) -> list[Change]:
    """The anchored changes `db` (a snapshot or a Write, of this release's schema: every
    caller checked it) does not hold."""
    found = []
    keys = [c for c in held if c.what == KEY]
    if keys:
        live = {tuple(row) for row in anchors.rows_in(db, _LIVE_KEYS, [c.ident[0] for c in keys])}
        found += [c for c in keys if c.ident in live]
    admin = [c for c in held if c.what == ADMIN]
    if admin:
        rows = db.rows("SELECT token_hash, changed_at FROM admin_token WHERE id = 1")
        token_hash, changed_at = rows[0] if rows else (None, "")
        found += [c for c in admin if token_hash != c.ident[0] and changed_at < c.state]
    sellers = [c for c in held if c.what == SELLER]
    if sellers:
        rows = anchors.rows_in(db, _COUNTS, [c.ident[0] for c in sellers])
        counts = {(row[0], row[1]): row[2] for row in rows}
        found += [c for c in sellers if counts.get(c.ident, c.count) < c.count]
    return found


def problems(db, found: anchors.Loaded) -> list[dict]:
    """An `anchor` problem for each anchored change the database does not hold."""
    return [
        anchors.problem(c.seller_id, None, f"{c.said()} (anchored by {c.by}), is undone in "
                        "this database: a copy restored? `chargebox anchors accept-restore` "
                        "does it again")
        for c in undone(db, changes(found.access))
    ]  # fmt: skip


def every_problem(db, found: anchors.Loaded) -> list[dict]:
    """All that the anchors `found` say of `db`: the file's own problems, each rollback and
    lost mark (anchors.problems, which may not import this module), each change undone."""
    return anchors.problems(db, found) + problems(db, found)


def refuse_undone(config: Config, database: Database, anchored: anchors.File) -> None:
    """Start-up, after anchors.refuse_rollback (which read the anchors, `anchored`):
    ValueError if the database lacks an anchored change."""
    held = changes(anchored.access)
    found = undone(database, held) if held else []
    if found:
        where = "(the PostgreSQL database)" if config.db_url else str(config.db_path)
        raise ValueError(
            f"--db {where} lacks {len(found)} change(s) of access anchored in "
            f"{config.anchors_path}, first: {found[0].said()}. If you restored it on purpose, "
            "run `chargebox anchors accept-restore` with the same --db: it does them again; "
            "if not, find out who replaced it before serving it"
        )

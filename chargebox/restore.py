"""`chargebox anchors check | accept-restore`: the operator's side of rollback detection.

`check` compares the database with its anchors (anchors.py) and names each seller it
is behind (exit 1). `accept-restore`, after a deliberate restore (a backup put back,
PostgreSQL recovered to an earlier time), records that this database is the truth
from now on: it must audit clean but for its anchors; then a `restore` line with its
heads is appended, the file is compacted (older and forged lines go) and start-up
serves it again (refused with no anchors file: start-up serves then anyway). It says
which sellers' later sales the restore gave up. Before that line, it does again each
change of access anchored since that the database lacks (a key revoked or rotated, the
admin token rotated, a seller suspended or reactivated: revocations.py), and says which.
"""

from __future__ import annotations

import dataclasses
import sys

from chargebox import anchors, auth, revocations
from chargebox.config import Config
from chargebox.db import Database, Write
from chargebox.location import check_database_path
from chargebox.services import Chargebox

_REVOKE_AGAIN = ("UPDATE seller_key SET revoked_at = ? WHERE id = ? AND seller_id = ?"
                 " AND created_at = ? AND revoked_at IS NULL")  # fmt: skip
_STATUS_AGAIN = ("UPDATE seller SET status = ?, status_changes = ? WHERE id = ?"
                 " AND created_at = ? AND status_changes < ? RETURNING id")  # fmt: skip


def arguments(parser) -> None:
    parser.add_argument("action", choices=("check", "accept-restore"),
                        help="check: compare the database with its anchors; accept-restore: "
                        "after a deliberate restore, anchor this database afresh")  # fmt: skip


def main(config: Config, action: str) -> int:
    key = config.ledger_key_at_hand()
    if key is None:
        raise ValueError(f"no ledger key ({config.ledger_key_path} or CHARGEBOX_LEDGER_KEY): "
                         "anchors are sealed with it")  # fmt: skip
    config = dataclasses.replace(config, ledger_key=key)
    if not config.db_url:  # as every command: not a copy with another file's -wal beside it
        check_database_path(config.db_path, writing=action == "accept-restore")
    service = Chargebox(config)
    try:
        service.database.check_schema()
        if action == "check":
            return _check(service, config)
        return _accept(service, config)
    finally:
        service.close()


def _found(service: Chargebox, config: Config) -> list[dict]:
    database = service.database
    found = anchors.loaded(config, database.ledger_key)  # before the snapshot (anchors.py)
    with database.snapshot() as db:
        return revocations.every_problem(db, found)


def _check(service: Chargebox, config: Config) -> int:
    if not config.anchors_path.exists():  # a clean check would say nothing was checked
        with service.database.snapshot() as db:
            sealed = len(anchors.heads(db))
        print(f"anchors: no anchors file at {config.anchors_path}: nothing checked"
              + (f"; {sealed} seller(s) have sealed entries, whose heads a running server "
                 "anchors there: was the file deleted, or is CHARGEBOX_ANCHORS wrong?"
                 if sealed else ""), file=sys.stderr)  # fmt: skip
        return 1 if sealed else 0
    found = _found(service, config)
    for problem in found:
        print(f"  {anchors.located(problem)}{problem['message']}", file=sys.stderr)
    if found:
        print(f"anchors: {len(found)} problem(s) against {config.anchors_path}", file=sys.stderr)
        return 1
    print(f"anchors: the database holds every head anchored in {config.anchors_path}",
          file=sys.stderr)  # fmt: skip
    return 0


def _accept(service: Chargebox, config: Config) -> int:
    if not config.anchors_path.exists():  # moved aside with the database (helper-133)
        raise ValueError(
            f"no anchors file at {config.anchors_path}: nothing to compare this database "
            "with, nor to do again what it lacks (revoked keys, suspensions), and a new file "
            "would hide that. If it was moved with the database, put it back and run this "
            "again; if it is lost, there is nothing to accept: start-up serves the database"
        )
    report = service.audit()
    others = [p for p in report["problems"] if p["invariant"] != "anchor"]
    if others:
        first = others[0]
        raise ValueError(
            f"the database does not audit clean ({len(others)} problem(s) besides its anchors, "
            f"first: {first['invariant']}: {anchors.located(first)}{first['message']}); "
            "run `chargebox audit` and restore a sound copy before accepting it"
        )
    behind = [p for p in report["problems"] if p["entry_id"] is not None]  # heads: rollbacks
    database = service.database
    done = redo(database, anchors.loaded(config, database.ledger_key))
    with database.snapshot() as db:
        now_heads = anchors.heads(db)
    anchors.record(config, database.ledger_key, now_heads, "accept-restore", kind="restore")
    anchors.compact(config.anchors_path, database.ledger_key)
    for problem in behind:
        print(f"  {anchors.located(problem)}{problem['message']}", file=sys.stderr)
    for change in done:
        print(f"  done again: {change.said()}", file=sys.stderr)
    print(
        f"anchors: restore accepted; {len(now_heads)} seller heads anchored afresh in "
        f"{config.anchors_path}; {len(behind)} seller(s) were behind their anchors: the sales "
        f"they made after this copy are not in it; {len(done)} change(s) of access done again",
        file=sys.stderr,
    )
    return 0


def redo(database: Database, found: anchors.Loaded) -> list[revocations.Change]:
    """Do again what the database does not hold, each change in a write of its own (a key
    waits for the sales that checked it: auth.hold_for_revocation); the changes done."""
    done = []
    for change in revocations.changes(found.access):

        def again(write: Write, change: revocations.Change = change) -> bool:
            if change.what == revocations.ADMIN:
                revocations.hold_admin(write)  # no rotation between the look and the write
            return bool(revocations.undone(write, [change])) and _done(write, change)

        if database.write(again, alone=True):
            done.append(change)
    return done


def _done(write: Write, change: revocations.Change) -> bool:
    if change.what == revocations.KEY:
        key_id, seller_id, created_at = change.ident
        auth.hold_for_revocation(write, seller_id, key_id)
        write.execute(_REVOKE_AGAIN, (change.state, key_id, seller_id, created_at))
    elif change.what == revocations.SELLER:  # unless changed since (another host's)
        seller_id, created_at = change.ident
        if not write.rows(_STATUS_AGAIN, (change.state, change.count, seller_id, created_at,
                                          change.count)):  # fmt: skip
            return False
        if change.state == "suspended":
            revocations.end_sessions(write, seller_id)
    else:
        revocations.put_admin(write, change.ident[0], change.state)
    return True

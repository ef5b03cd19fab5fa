"""The audit: I1-I5, the cross-links, phone totals and the seals, re-checked from the rows.

Full (`chargebox audit --full`, `GET /api/audit?full=true`): every row, in one read
snapshot, the ledger walked in chunks (never held in memory, never the write lock).
Quick (the default): from the newest sealed checkpoint (checkpoints.py) on; rows
up to it are trusted as that audit verified them, and only what came after is read:
each seller's later entries (seals, I1-I3, links), later sales, the credit requests
and phones they touch, later seals. The report says which it did (`scope`). A clean
audit that verified at least CHECKPOINT_AFTER entries records a checkpoint. Without
one, the quick audit is the full one; a full audit that finds a problem makes every
later quick audit a full one, until one is clean (checkpoints.distrust). Both compare
the heads with their anchors outside the file (anchors.py), and a clean audit anchors
the heads it saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chargebox import anchors, checkpoints, guards, revocations, schema, seals
from chargebox.audit_checks import (
    ALL_AFTER,
    CHUNK,
    FULL_CHECKS,
    HEADS,
    Found,
    Walk,
    as_problems,
    heads,
    newest_ids,
    sealed,
    sellers,
    since,
    totals,
)
from chargebox.checkpoints import Mark, State, Trusted
from chargebox.clock import now
from chargebox.constraints import Shape
from chargebox.db import Database
from chargebox.errors import ChargeboxError, Unavailable

PROBLEM_CAP = 100
CHECKPOINT_AFTER = 10_000  # newly verified entries that make a quick audit record one
Progress = Callable[[str, int, int], None]  # (what, done, of)


def audit(database: Database, full: bool = False, progress: Progress | None = None,
          checkpoint_after: int = CHECKPOINT_AFTER, anchored: anchors.Loaded | None = None
          ) -> dict:  # fmt: skip
    """Re-check the books: every row (`full`), or what came after the newest checkpoint.
    A clean audit with enough newly verified entries records a checkpoint. `anchored`:
    the anchors file, if the caller has `loaded` it already (before this audit begins)."""
    started, at = time.perf_counter(), now()
    key = database.ledger_key
    if anchored is None:
        anchored = anchors.loaded(database.config, key)  # before the snapshot: see there
    settled = _settled(database)  # before the snapshot too: it holds every row up to these
    with database.snapshot(lenient=True) as db:  # forged bytes are named, not fatal
        problems = [p._asdict() for p in seals.key_problems(db, key)]
        keyed = not problems
        usable = keyed and checkpoints.kept_in(db)
        trusted, newest, marked = None, checkpoints.newest_id(db) if usable else 0, None
        if usable and not full:
            lost = anchors.lost(db, anchored.marks)  # a finding deleted: trust nothing
            trusted, forged = (None, []) if lost else checkpoints.newest(db, key)
            problems += [p._asdict() for p in forged]
            if lost:  # why every row is read (see _scope)
                marked = Mark(lost[0].id, lost[0].found_at)
            elif not (trusted or forged):
                marked = checkpoints.later_mark(db, key)
        found = _full(db, keyed, progress) if trusted is None else since(db, trusted)
        problems += found.problems
        problems += _missing_triggers(db)
        if keyed:  # an older genuine copy, put back: only anchors outside the file tell
            problems += revocations.every_problem(db, anchored)
            seen_heads = anchors.heads(db)
    problems.sort(key=lambda p: (p["seller_id"] or 0, p["entry_id"] or 0))
    saved, finding = None, None
    bounds = [
        seen if top is None else min(seen, top)  # None: SQLite, which holds none back
        for seen, top in zip((found.entry_id, found.request_id), settled, strict=True)
    ]
    # never behind the checkpoint it continues (a write in flight that did not settle)
    ahead = trusted is None or (bounds[0] >= trusted.entry_id and bounds[1] >= trusted.request_id)
    if usable and not problems and found.walked >= checkpoint_after and ahead:
        full_at = None if trusted is None else trusted.full_at  # None: this one's own
        seen = (bounds[0], found.totals["ledger_entries"], bounds[1], full_at)
        saved, _ = _save(database, lambda write: checkpoints.save(write, key, seen, found.states,
                                                                  trusted, newest))  # fmt: skip
    elif usable and problems and full:  # the quick audits may trust nothing before this
        recorded, why = _save(database, lambda write: checkpoints.distrust(write, key))
        saved = recorded.id if recorded else None
        if recorded:  # anchored once committed: its absence from the database then tells
            seal = checkpoints.mark_mac(key, recorded.created_at)
            why = _anchor(database, [(saved, seal, recorded.created_at)], "mark")
        finding = (saved, why)
    if keyed and not problems:
        _anchor(database, seen_heads)
    bad_sellers = {p["seller_id"] for p in problems}
    why = "no ledger key was given" if key is None else "the ledger key given did not seal it"
    unkeyed = None if keyed else why  # then no seal was checked
    return {
        "consistent": not problems,
        "sellers": [
            {
                "seller_id": sid,
                "balance": balance,
                "ledger_sum": ledger_sum,
                "consistent": balance == ledger_sum and sid not in bad_sellers,
            }  # fmt: skip
            for sid, balance, ledger_sum in found.sellers
        ],
        "problems": problems[:PROBLEM_CAP],
        "problem_count": len(problems),
        "totals": found.totals,
        "scope": _scope(trusted, found.walked, saved, at, started, unkeyed, marked, finding),
    }


def reads_every_row(database: Database, anchored: anchors.Loaded) -> bool:
    """Whether a quick audit begun now would read every row: no checkpoint to start from,
    the newest one verified nothing (checkpoints.distrust), its seal does not verify
    (forged, or a copy), or an anchored mark is not in the database. Its row read in a
    lenient snapshot: written by hand, it may hold any bytes. Its sellers' rows are not:
    one of them forged is not foreseen."""
    if database.ledger_key is None or not checkpoints.kept_in(database):
        return True
    with database.snapshot(lenient=True) as db:
        return bool(anchors.lost(db, anchored.marks)) or not (
            checkpoints.starts_a_quick_audit(db, database.ledger_key)
        )


def _full(db, keyed: bool, progress: Progress | None) -> Found:
    """Every row: the ledger walked in (seller, id) order for the seals, and the checks."""
    (total,) = db.rows("SELECT COUNT(*) FROM ledger_entry")[0]
    walks: dict[int, Walk] = {}
    problems: list[dict] = []
    last, walked = (0, 0), 0
    while keyed:
        rows = db.rows(ALL_AFTER, (*last, CHUNK))
        for row in rows:
            walk = walks.get(row[1]) or Walk(seals.Chain(), 0)
            chain, broken = seals.step(db.ledger_key, walk.chain, sealed(row), row[10])
            problems += [p._asdict() for p in broken]
            walks[row[1]] = Walk(chain, walk.ledger_sum + row[3], walk.walked + 1)
        walked += len(rows)
        if progress:
            progress("entries", walked, total)
        if len(rows) < CHUNK:
            break
        last = (rows[-1][1], rows[-1][0])
    loose = "OR typeof(balance) != 'integer'" if db.dialect == "sqlite" else ""
    for number, (invariant, sql) in enumerate(FULL_CHECKS):
        if progress:
            progress("checks", number, len(FULL_CHECKS))
        problems += as_problems(invariant, db.rows(sql.format(not_an_integer=loose)))
    if keyed:
        problems += heads(db, walks, db.rows(HEADS))
        # NOT EXISTS, not NOT IN: PostgreSQL hashes a NOT IN's list only if it fits in
        # work_mem, and otherwise scans it again for each seal (a million of each: hours)
        problems += [seals.stray(entry_id)._asdict() for (entry_id,) in db.rows(
            "SELECT s.entry_id FROM ledger_seal AS s WHERE NOT EXISTS"
            " (SELECT 1 FROM ledger_entry AS e WHERE e.id = s.entry_id)"
        )]  # fmt: skip
    sales = {sid: (count, top) for sid, count, top in db.rows(
        "SELECT seller_id, COUNT(*), MAX(id) FROM sale GROUP BY seller_id")}  # fmt: skip
    states = {
        sid: State(
            w.chain.last_id,
            w.chain.entries,
            w.chain.mac,
            w.chain.balance,
            sales.get(sid, (0, 0))[1],
            sales.get(sid, (0, 0))[0],
        )  # fmt: skip
        for sid, w in walks.items()
    }
    return Found(problems, sellers(db), totals(db), states, walked, *newest_ids(db))


def _missing_triggers(db) -> list[dict]:
    """I5: a guard someone dropped or changed (a checkpoint table's only once that table
    exists), or what was added beside them (schema.Added), as start-up and the metrics
    count them (guards.dropped_guards)."""
    return [
        {
            "invariant": "I5",
            "seller_id": None,
            "entry_id": None,
            "message": _added(name)
            if isinstance(name, schema.Added)
            else f"schema {name} is missing or changed: the schema's is {name.definition}"
            if isinstance(name, Shape)
            else f"schema function {name} was dropped or changed"
            if name.endswith("()")
            else f"schema trigger {name} is missing or changed",
        }  # fmt: skip
        for name in guards.dropped_in(db)
    ]


def _added(added: schema.Added) -> str:
    """I5's words for what was added beside the guards (schema.Added)."""
    if added.kind == "rule":
        return f"rule {added.table}.{added.name} is not the schema's: it rewrites what is written"
    if added.kind == "child":
        return (f"table {added.name} inherits {added.table}: {added.table} shows its rows,"
                " which no guard saw written")  # fmt: skip
    return (f"trigger {added} is not the schema's: it fires beside the guards and may change"
            " what they let through")  # fmt: skip


def _settled(database: Database) -> tuple[int | None, int | None]:
    """The ledger entry and credit request ids up to which every write has ended
    (settled.py; None on SQLite: one write at a time commits in id order). A checkpoint's
    ids bound what the next quick audits read of the rows of no seller's chain (credit
    requests, seals): one past a row of another server still to come would leave that
    row to full audits."""
    return tuple(database.settled(table) for table in ("ledger_entry", "credit_request"))


def _save(database: Database, record: Callable[[object], object]
          ) -> tuple[object, str | None]:  # fmt: skip
    """Record a checkpoint: its id, or None and why not. One that cannot be written now (a
    read-only file or place, a busy database) is left for the next audit: it only saves
    time. A `distrust` not recorded leaves the quick audits trusting what they did: the
    report says so (`_scope`)."""
    try:
        return database.write(record, alone=True), None  # sales never wait for its lock
    except OSError as exc:  # the write lock's file, in a read-only place
        return None, exc.strerror
    except Unavailable as exc:
        return None, exc.message
    except ChargeboxError:  # its words may quote the database: not in a report
        return None, "the database refused it"


def _anchor(database: Database, seen: list, kind: str = "heads") -> str | None:
    """Anchor the heads a clean audit saw, or a failed full audit's mark; None, or why the
    file could not be written now (read-only, full, locked). For heads that only leaves
    the window to the server's own anchoring; a mark is then kept by its guards in the
    database alone, which the report says (`_scope`)."""
    if not seen:
        return None
    try:
        anchors.record(database.config, database.ledger_key, seen, "audit", kind)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _scope(trusted: Trusted | None, walked: int, saved: int | None, at: str, started: float,
           unkeyed: str | None = None, marked: Mark | None = None,
           finding: tuple[int | None, str | None] | None = None) -> dict:  # fmt: skip
    """What this audit verified now and what it trusted, in words and in numbers.
    `started`: its perf_counter() at the start; `unkeyed`: why no seal could be checked
    (then no entry was walked); `marked`: the full audit's finding that left a quick audit
    no checkpoint to trust; `finding`: a full audit's finding recorded for the quick audits
    (its mark's id, with why it could not be anchored if it could not), or why it could
    not be recorded (no id)."""
    checkpoint, distrusted = None, None
    if unkeyed:  # not "0 entries verified", which reads as an empty ledger
        summary = (f"nothing verified against the seals at {at}: {unkeyed}; only the sums and "
                   "links of the rows were checked (I1-I5)")  # fmt: skip
    elif trusted is None:
        summary = f"verified every ledger entry now ({walked:,} entries) at {at}"
        if marked:
            distrusted = {"id": marked.id, "found_at": marked.created_at}
            summary += (f", trusting no checkpoint: a full audit found a problem at"
                        f" {marked.created_at} (checkpoint {marked.id})")  # fmt: skip
    else:
        checkpoint = {
            "id": trusted.id,
            "entry_id": trusted.entry_id,
            "entries": trusted.entries,
            "verified_at": trusted.created_at,
            "full_at": trusted.full_at,
        }
        by = (
            "a full audit"
            if trusted.full_at == trusted.created_at
            else f"audits continuing the full audit of {trusted.full_at}"
        )
        summary = (
            f"verified fully up to entry {trusted.entry_id:,} ({trusted.entries:,} entries) at "
            f"{trusted.created_at} by {by} (checkpoint {trusted.id}); entries after it "
            f"verified now: {walked:,}"
        )
    if finding and finding[0]:
        summary += (f"; its finding recorded (checkpoint {finding[0]}): the quick audits trust"
                    " no checkpoint before it until an audit is clean")  # fmt: skip
        if finding[1]:
            summary += (f"; it could NOT be anchored outside the database ({finding[1]}):"
                        " only the database's guards keep it; run this audit again")  # fmt: skip
    elif finding:
        summary += (f"; its finding could NOT be recorded ({finding[1]}): the quick audits"
                    " may go on trusting a checkpoint before it; run this audit again")  # fmt: skip
    return {
        "full": trusted is None,
        "checkpoint": checkpoint,
        "distrusted": distrusted,
        "entries_verified": walked,
        "summary": summary,
        "saved_checkpoint": saved,
        "seconds": round(time.perf_counter() - started, 3),
    }

"""A failed full audit's mark is anchored outside the database, as the sellers' heads are.

The mark (checkpoints.distrust) keeps the quick audits from trusting the checkpoint
before a finding. Whoever can get past the append-only guards (the owner, or the
SQLite file's holder) could delete it, and the quick audits would trust that older
checkpoint again, saying nothing of the finding. Anchored (kind `mark`), its absence
is an audit problem, the quick audits trust no checkpoint, and `anchors
accept-restore` (after a look) ends it, as it ends a rollback.
"""

from __future__ import annotations

import datetime
import types

import pytest

from chargebox import anchors, audit, checkpoints, clock, restore
from tests.support import database_of, rows_on_disk, writable
from tests.test_audit_checkpoints import behind_the_guard, checkpointed, counted_turns

MISSING = "is missing from the database or sealed differently"


def no_delete(conn) -> str:
    """The guard that keeps audit checkpoints from being deleted, in either dialect."""
    return "audit_checkpoint_no_change" if conn.postgresql else "audit_checkpoint_no_delete"


def entry_one_edited(config, created_at: str) -> None:
    """Ledger entry 1's created_at set behind its guard (a forgery, or putting it back)."""
    with writable(database_of(config)) as conn:
        edit = f"UPDATE ledger_entry SET created_at = '{created_at}' WHERE id = 1"
        behind_the_guard(conn, "ledger_entry_no_update", "ledger_entry", edit)


def marked(service, config, then=lambda: None) -> tuple[int, str, str]:
    """A forgery before checkpoint 1 that only a full audit sees, and that audit's mark:
    its id and when it was found; and the forged field's true value. `then` runs before
    that audit."""
    checkpointed(service)
    ((original,),) = rows_on_disk(database_of(config), "SELECT created_at FROM ledger_entry"
                                  " WHERE id = 1")  # fmt: skip
    entry_one_edited(config, "x")
    assert service.audit()["consistent"]  # trusts checkpoint 1: the documented trade
    then()
    assert not service.audit(full=True)["consistent"]
    ((mark_id, found_at),) = rows_on_disk(
        database_of(config), "SELECT id, created_at FROM audit_checkpoint WHERE entries = 0"
    )
    return mark_id, found_at, original


def mark_deleted(config, mark_id: int) -> None:
    with writable(database_of(config)) as conn:
        behind_the_guard(conn, no_delete(conn), "audit_checkpoint",
                         f"DELETE FROM audit_checkpoint WHERE id = {mark_id}")  # fmt: skip


def test_a_failed_full_audits_mark_is_anchored_with_its_seal(service, config):
    mark_id, found_at, _ = marked(service, config)
    key = service.database.ledger_key
    held = anchors.read(config.anchors_path, key)
    ((ident, mac, found, at, by),) = held.marks
    assert (ident, mac, found, by) == (mark_id, checkpoints.mark_mac(key, found_at), found_at,
                                       "audit")  # fmt: skip
    assert at > found_at  # anchored once committed, after the audit began
    assert held.forged == []


def test_a_mark_deleted_behind_the_guards_is_named_and_nothing_is_trusted(service, config):
    """Without the anchor, the quick audit trusted checkpoint 1 again and was consistent."""
    mark_id, found_at, _ = marked(service, config)
    mark_deleted(config, mark_id)
    assert checkpoints.later_mark(service.database, service.database.ledger_key) is None
    turns = counted_turns(service)
    quick = service.audit()
    assert turns == ["full audit's turn"]  # foreseen: it reads every row
    assert not quick["consistent"] and quick["scope"]["full"]
    assert quick["scope"]["distrusted"] == {"id": mark_id, "found_at": found_at}
    (lost,) = [p["message"] for p in quick["problems"] if MISSING in p["message"]]
    assert f"the finding of the audit of {found_at} (audit checkpoint {mark_id})" in lost
    assert any(p["invariant"] == "seal" and p["entry_id"] == 1 for p in quick["problems"])


def test_a_restore_accepted_after_a_look_ends_a_lost_mark(service, config, capsys):
    """The forgery mended and the mark deleted: only the anchor still says so, until the
    operator accepts the database as it is (`anchors accept-restore`)."""
    mark_id, _, original = marked(service, config)
    entry_one_edited(config, original)
    mark_deleted(config, mark_id)
    quick = service.audit()
    assert [p["invariant"] for p in quick["problems"]] == ["anchor"], quick["problems"]
    assert restore._check(service, config) == 1
    assert MISSING in capsys.readouterr().err
    assert restore._accept(service, config) == 0
    assert anchors.read(config.anchors_path, service.database.ledger_key).marks == []
    assert service.audit()["consistent"]


def test_compaction_keeps_the_marks_and_a_restore_line_ends_them(tmp_path):
    path, key = tmp_path / "anchors", b"k" * 32
    head = anchors.Head(1, 5, 5, "a" * 64)
    anchors.append(path, key, anchors.line(key, [head], "server"))
    anchors.append(path, key, anchors.line(key, [(7, "b" * 64, "F")], "audit", "mark", "T"))
    anchors.append(path, key, anchors.line(key, [head._replace(entry_id=6, entries=6)], "server"))
    before = anchors.read(path, key)
    assert before.marks == [anchors.Mark(7, "b" * 64, "F", "T", "audit")]
    anchors.compact(path, key)
    after = anchors.read(path, key)
    assert after.marks == before.marks and after.heads == before.heads
    assert len(path.read_text().splitlines()) == 2
    anchors.append(path, key, anchors.line(key, [head], "accept-restore", "restore"))
    assert anchors.read(path, key).marks == []


def test_a_mark_line_is_sealed_and_one_written_without_the_key_ignored(tmp_path):
    path, key = tmp_path / "anchors", b"k" * 32
    anchors.append(path, key, anchors.line(b"x" * 32, [(7, "b" * 64, "F")], "audit", "mark"))
    held = anchors.read(path, key)
    assert held.marks == [] and "does not match its seal" in held.forged[0]


def test_marks_past_one_querys_worth_are_each_looked_for(service, config):
    """Years of failed nightly audits: the anchored marks are looked up _CHUNK at a time."""
    key, count = service.database.ledger_key, anchors._CHUNK * 2 + 1
    ids = service.database.write(
        lambda write: [checkpoints.distrust(write, key, f"T{n}").id for n in range(count)]
    )
    marks = [anchors.Mark(ident, checkpoints.mark_mac(key, f"T{n}"), f"T{n}", "A", "audit")
             for n, ident in enumerate(ids)]  # fmt: skip
    with service.database.snapshot() as db:
        assert anchors.lost(db, marks) == []
    mark_deleted(config, ids[-1])
    with service.database.snapshot() as db:
        assert anchors.lost(db, marks) == [marks[-1]]


@pytest.mark.parametrize(
    ("anchored", "behind", "unsealed"),
    [(True, False, 0), (False, False, 0), (False, True, 0), (False, True, 150)],
    ids=["anchored", "anchors file gone", "the mark recorded by a clock a day behind",
         "... and 150 rows written without the key before it"],
)  # fmt: skip
def test_the_checkpoint_before_a_mark_moved_above_it_is_not_trusted(
    service, config, monkeypatch, anchored, behind, unsealed
):
    """A checkpoint's seal binds no id: checkpoint 1, moved to an id above the mark (its
    sellers' rows with it), was the newest, verified, and was trusted again, the mark
    still in place (helper-68). A checkpoint stamped no later than a mark is not trusted:
    the mark's sealed stamp tells, in the database alone. A mark recorded by a clock
    behind the checkpoint's (set back, or another host's) was stamped before it, and told
    nothing (helper-92): it is stamped after the newest row, whatever the clock says."""

    class Behind(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.now(tz) - datetime.timedelta(days=1)

    def a_day_behind() -> None:  # checkpoint 1 by the right clock, the mark by this one
        shim = types.SimpleNamespace(datetime=Behind, UTC=datetime.UTC)
        monkeypatch.setattr(clock, "datetime", shim)
        with writable(database_of(config)) as conn:  # rows the service's role may insert
            for n in range(unsealed):  # (helper-94: the newest 20 were all it looked at)
                conn.execute(
                    "INSERT INTO audit_checkpoint (entry_id, entries, request_id, full_at,"
                    f" created_at, mac) VALUES (1, 7, 0, 'x', 'x', 'f{n}')"
                )

    mark_id, found_at, _ = marked(service, config, a_day_behind if behind else lambda: None)
    monkeypatch.undo()
    if not anchored:
        config.anchors_path.unlink()
    moved = mark_id + 1
    with writable(database_of(config)) as conn:
        behind_the_guard(conn, "audit_checkpoint_is_new", "audit_checkpoint",
                         "INSERT INTO audit_checkpoint (id, entry_id, entries, request_id,"
                         " full_at, created_at, mac) SELECT "
                         f"{moved}, entry_id, entries, request_id, full_at, created_at, mac"
                         " FROM audit_checkpoint WHERE id = 1")  # fmt: skip
        no_update = ("seller_checkpoint_no_change" if conn.postgresql
                     else "seller_checkpoint_no_update")  # fmt: skip
        behind_the_guard(conn, no_update, "seller_checkpoint",
                         f"UPDATE seller_checkpoint SET checkpoint_id = {moved}"
                         " WHERE checkpoint_id = 1")  # fmt: skip
        behind_the_guard(conn, no_delete(conn), "audit_checkpoint",
                         "DELETE FROM audit_checkpoint WHERE id = 1")  # fmt: skip
    turns = counted_turns(service)
    quick = service.audit()
    assert turns == ["full audit's turn"]
    assert not quick["consistent"] and quick["scope"]["full"]
    assert quick["scope"]["distrusted"] == {"id": mark_id, "found_at": found_at}
    assert any(p["invariant"] == "seal" and p["entry_id"] == 1 for p in quick["problems"])


def test_a_mark_that_could_not_be_anchored_is_said(service, config, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    checkpointed(service)
    entry_one_edited(config, "x")
    monkeypatch.setattr(anchors, "append", refused)
    full = service.audit(full=True)
    assert full["scope"]["saved_checkpoint"] is not None
    assert (
        "; it could NOT be anchored outside the database (Read-only file system): only the"
        " database's guards keep it; run this audit again"
    ) in full["scope"]["summary"]


FORGED_MARK = ("INSERT INTO audit_checkpoint (entry_id, entries, request_id, full_at,"
               " created_at, mac) VALUES (0, 0, 0, ?, ?, ?)")  # fmt: skip


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59.999999Z", "x"], ids=["far", "x"])
def test_a_mark_written_without_the_key_and_stamped_late_vetoes_nothing(service, stamp):
    """The service's role may insert a row that looks like a mark, stamped after every
    stamp to come: counted, every quick audit would have read every row for ever
    (helper-71). Its seal does not verify: passed over once a checkpoint is above it."""
    checkpointed(service)
    service.database.write(lambda write: write.execute(FORGED_MARK, (stamp, stamp, "f" * 64)))
    full = audit.audit(service.database, full=True, checkpoint_after=1)
    assert full["consistent"] and full["scope"]["saved_checkpoint"] is not None
    quick = service.audit()
    assert quick["consistent"] and not quick["scope"]["full"], quick["scope"]


def test_a_checkpoint_is_stamped_as_it_is_recorded_so_a_mark_it_saw_is_older(service, monkeypatch):
    """A mark recorded after an audit began but before its snapshot is seen by it (it reads
    every row, clean): its checkpoint, stamped as the audit began, was older than the mark
    and distrusted at once (helper-71). Stamped as it is recorded, it is trusted."""
    checkpointed(service)
    key, loaded = service.database.ledger_key, anchors.loaded

    def marked_meanwhile(*args, **kwargs):
        service.database.write(lambda write: checkpoints.distrust(write, key))
        return loaded(*args, **kwargs)

    monkeypatch.setattr(anchors, "loaded", marked_meanwhile)
    report = audit.audit(service.database, checkpoint_after=1)
    monkeypatch.setattr(anchors, "loaded", loaded)
    assert report["consistent"] and report["scope"]["saved_checkpoint"] is not None
    assert not service.audit()["scope"]["full"]

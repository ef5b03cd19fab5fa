"""The quick audit starts from a sealed checkpoint; the full audit re-reads every row.

A checkpoint records what a clean audit verified, sealed with the ledger key. These
tests take one after a few entries (`checkpoint_after=1`; the service waits for
10,000), then check that the quick audit reads only what came after it and agrees
with the full one, catches a forgery after it, trusts (and says it trusts) the rows
before it, and refuses a checkpoint written without the key; that the checkpoint
tables are append-only in the database; and the doors: CLI `--full`, `?full=true`.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from chargebox import audit, checkpoints, grants, migrations, schema
from chargebox.cli import prepare
from chargebox.errors import Unavailable
from chargebox.services import Chargebox
from tests.support import (
    ADMIN_TOKEN,
    KEYED_ROWS,
    cli_audit_of,
    credited_seller,
    database_of,
    drop_trigger,
    outcomes,
    postgresql_plan,
    rows_on_disk,
    rows_read,
    sqlite_plan,
    writable,
)

REFUSED = Exception  # sqlite3.IntegrityError or a psycopg error: the schema refuses
COPY_OF_1 = ("INSERT INTO audit_checkpoint (entry_id, entries, request_id, full_at, created_at,"
             " mac) SELECT entry_id, entries, request_id, full_at, created_at, mac"
             " FROM audit_checkpoint WHERE id = 1")  # fmt: skip


def sold(service, seller_id: int, count: int, phone: str = "09121234567") -> None:
    for _ in range(count):
        service.sell(seller_id, phone, 1_000)


def checkpointed(service) -> tuple[dict, dict]:
    """Two sellers with entries, a clean full audit that records a checkpoint."""
    ali = credited_seller(service, 100_000, "Ali")
    sara = credited_seller(service, 50_000, "Sara")
    sold(service, ali["id"], 3)
    sold(service, sara["id"], 2, "09351234567")
    report = audit.audit(service.database, full=True, checkpoint_after=1)
    assert report["consistent"], report["problems"]
    assert report["scope"]["full"] and report["scope"]["saved_checkpoint"] == 1
    return ali, sara


def test_the_quick_audit_reads_only_what_came_after_the_checkpoint_and_agrees(service):
    ali, sara = checkpointed(service)
    sold(service, ali["id"], 4)
    service.adjust_balance(sara["id"], 500, "goodwill")
    quick = service.audit()
    full = service.audit(full=True)
    assert quick["consistent"] and full["consistent"]
    scope = quick["scope"]
    assert not scope["full"] and scope["entries_verified"] == 5
    assert scope["checkpoint"]["id"] == 1 and scope["checkpoint"]["entries"] == 7
    assert "verified fully up to entry" in scope["summary"]
    assert scope["saved_checkpoint"] is None  # 5 entries: fewer than CHECKPOINT_AFTER
    assert quick["sellers"] == full["sellers"] and quick["totals"] == full["totals"]
    assert full["scope"]["full"] and full["scope"]["entries_verified"] == 12


def test_a_quick_audit_continues_the_chain_of_checkpoints(service):
    ali, _ = checkpointed(service)
    sold(service, ali["id"], 2)
    second = audit.audit(service.database, checkpoint_after=1)
    assert second["consistent"] and second["scope"]["saved_checkpoint"] == 2
    (changed,) = rows_on_disk(
        database_of(service.config),
        "SELECT COUNT(*) FROM seller_checkpoint WHERE checkpoint_id = 2",
    )[0]
    assert changed == 1  # only Ali's chain moved
    third = service.audit()
    assert third["scope"]["checkpoint"]["id"] == 2 and third["scope"]["entries_verified"] == 0
    assert third["scope"]["checkpoint"]["full_at"] == second["scope"]["checkpoint"]["full_at"]
    assert third["totals"] == service.audit(full=True)["totals"]


def test_a_checkpoint_of_many_sellers_is_written_a_few_statements_not_one_a_seller(
    service, monkeypatch
):
    """Every seller's row of a checkpoint went in a round trip of its own: a first full
    audit of 200,000 sellers would outlast a PostgreSQL write's bound (transaction_timeout,
    17 on). They go `_AT_ONCE` a statement (here 2: five sellers, three statements), and
    the quick audit trusts each of them."""
    monkeypatch.setattr(checkpoints, "_AT_ONCE", 2)
    sellers = [credited_seller(service, 10_000, f"seller {n}") for n in range(5)]
    for seller in sellers:
        sold(service, seller["id"], 1)
    sent: list = []
    monkeypatch.setattr(checkpoints, "_NEW_STATES", _Counted(checkpoints._NEW_STATES, sent))
    report = audit.audit(service.database, full=True, checkpoint_after=1)
    assert report["consistent"] and report["scope"]["saved_checkpoint"] == 1, report
    assert len(sent) == 3
    rows = rows_on_disk(database_of(service.config),
                        "SELECT seller_id FROM seller_checkpoint WHERE checkpoint_id = 1"
                        " ORDER BY id")  # fmt: skip
    assert [seller_id for (seller_id,) in rows] == [seller["id"] for seller in sellers]
    quick = service.audit()
    assert quick["consistent"] and quick["scope"]["checkpoint"]["id"] == 1
    assert quick["scope"]["entries_verified"] == 0 and quick["totals"] == report["totals"]


class _Counted:
    """A statement's text that counts each statement made of it."""

    def __init__(self, text: str, made: list) -> None:
        self.text, self.made = text, made

    def format(self, **parts: str) -> str:
        self.made.append(1)
        return self.text.format(**parts)


def test_the_quick_audit_catches_a_forged_entry_after_the_checkpoint(service, config):
    ali, _ = checkpointed(service)
    sold(service, ali["id"], 2)
    with writable(database_of(config)) as conn:
        drop_trigger(conn, "ledger_entry_no_update")
        (newest,) = conn.execute("SELECT MAX(id) FROM ledger_entry").fetchone()
        conn.execute("UPDATE ledger_entry SET created_at = ? WHERE id = ?", ("x", newest))
    report = service.audit()
    assert not report["scope"]["full"]
    assert ("seal", ali["id"], newest) in {
        (p["invariant"], p["seller_id"], p["entry_id"]) for p in report["problems"]
    }


def test_both_audits_name_a_sale_made_after_the_checkpoint_outside_its_blocks_span(service, config):
    """A sale of Ali's made after the checkpoint with the trigger that widens its block
    dropped (schema version 7) lies in no span, and a search by time would miss it: an
    I5 problem of Ali's in the quick audit (which reads the sales after the checkpoint)
    and in the full one."""
    ali, _ = checkpointed(service)
    sale = service.sell(ali["id"], "09121234567", 1_000).record
    with writable(database_of(config)) as conn:
        drop_trigger(conn, "sale_widens_its_block")
        conn.execute(
            "INSERT INTO sale (id, seller_id, phone, amount, balance_after, created_at)"
            " VALUES (?, ?, '09121234567', 1, 0, '2020-01-01T00:00:00.000000Z')",
            (sale["id"] + 1, ali["id"]),
        )
    for report in (service.audit(), service.audit(full=True)):
        named = [p for p in report["problems"] if "span" in p["message"]]
        assert [(p["invariant"], p["seller_id"]) for p in named] == [("I5", ali["id"])], named
        assert f"sale {sale['id'] + 1} lies in no span" in named[0]["message"]


# What a forged key record names: its table, its column, the row's table.
FORGED_RECORDS = dict(zip(("sale", "refund", "request"), KEYED_ROWS, strict=True))


@pytest.mark.parametrize("kind", FORGED_RECORDS)
def test_both_audits_name_a_key_record_that_names_another_sellers_row(service, config, kind):
    """A record forged for Sara (its trigger dropped) of Ali's sale, refund or credit request
    made after the checkpoint: an I4 problem of Sara's, in the quick audit and the full."""
    ali, sara = checkpointed(service)
    sale = service.sell(ali["id"], "09121234567", 1_000).record
    service.refund(sale["id"], "not delivered")
    service.request_credit(ali["id"], 5_000)
    table, column, names = FORGED_RECORDS[kind]
    (row,) = rows_on_disk(database_of(config), f"SELECT MAX(id) FROM {names}")[0]
    with writable(database_of(config)) as conn:
        drop_trigger(conn, f"{table}_is_its_sellers")
        conn.execute(
            f"INSERT INTO {table} (seller_id, key, request_hash, created_at, {column})"
            " VALUES (?, 'forged', 'h', 'now', ?)",
            (sara["id"], row),
        )
    for report in (service.audit(), service.audit(full=True)):
        named = [p for p in report["problems"] if p["invariant"] == "I4"]
        assert [p["seller_id"] for p in named] == [sara["id"]], report["problems"]
        assert f"names {names} {row} of seller {ali['id']}" in named[0]["message"]


def test_rows_before_the_checkpoint_are_trusted_and_the_full_audit_rereads_them(service, config):
    ali, _ = checkpointed(service)
    with writable(database_of(config)) as conn:
        drop_trigger(conn, "ledger_entry_no_update")
        conn.execute("UPDATE ledger_entry SET created_at = ? WHERE id = 1", ("x",))
    quick = service.audit()
    assert {p["invariant"] for p in quick["problems"]} == {"I5"}  # only the dropped trigger
    assert quick["scope"]["entries_verified"] == 0
    full = service.audit(full=True)
    assert full["scope"]["full"]
    assert any(p["invariant"] == "seal" and p["entry_id"] == 1 for p in full["problems"])


def test_after_a_full_audit_finds_a_forgery_the_quick_audit_trusts_nothing_before_it(
    service, config
):
    """A full audit that finds a problem leaves a checkpoint that verified nothing: the
    quick audits after it re-read every row and name the forgery too, rather than go on
    trusting the checkpoint from before it."""
    checkpointed(service)
    with writable(database_of(config)) as conn:
        drop_trigger(conn, "ledger_entry_no_update")
        conn.execute("UPDATE ledger_entry SET created_at = ? WHERE id = 1", ("x",))
    missed = service.audit()["scope"]
    assert not missed["full"] and missed["distrusted"] is None  # trusted the checkpoint
    failed = service.audit(full=True)
    assert not failed["consistent"] and failed["scope"]["distrusted"] is None
    (mark_id, found_at), *_ = rows_on_disk(
        database_of(config), "SELECT id, created_at FROM audit_checkpoint ORDER BY id DESC"
    )
    assert failed["scope"]["saved_checkpoint"] == mark_id == 2
    assert "; its finding recorded (checkpoint 2): the quick audits trust no checkpoint before"\
        " it until an audit is clean" in failed["scope"]["summary"]  # fmt: skip
    for _ in range(2):
        quick = service.audit()
        assert quick["scope"]["full"] and quick["scope"]["saved_checkpoint"] is None
        assert any(p["invariant"] == "seal" and p["entry_id"] == 1 for p in quick["problems"])
        assert quick["scope"]["distrusted"] == {"id": mark_id, "found_at": found_at}
        said = f"trusting no checkpoint: a full audit found a problem at {found_at} (checkpoint"
        assert f"{said} {mark_id})" in quick["scope"]["summary"], quick["scope"]["summary"]


def behind_the_guard(conn, trigger: str, table: str, statement: str) -> None:
    """Run `statement` with the guard `trigger` out of the way, then put the guard back as
    it was: nothing but the seals can tell (no I5)."""
    if conn.postgresql:
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
        conn.execute(statement)
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
    else:
        (made,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = ?", (trigger,)
        ).fetchone()
        conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute(statement)
        conn.execute(made)


def forged_behind_the_guards(conn) -> None:
    """Ledger entry 1 edited behind its guard (behind_the_guard)."""
    behind_the_guard(conn, "ledger_entry_no_update", "ledger_entry",
                     "UPDATE ledger_entry SET created_at = 'x' WHERE id = 1")  # fmt: skip


def test_a_copy_of_an_older_checkpoint_inserted_after_a_mark_is_named_not_trusted(service, config):
    """A checkpoint's seal binds neither its id nor its place, and the append-only guards
    let anyone who may insert add a row: a copy of checkpoint 1 inserted after the mark
    verified, and the quick audits trusted it again, forgetting the forgery the full
    audit found (helper-66). The schema refuses a copy (version 9); one made behind its
    guard is named, as a checkpoint whose seal another row also bears, not trusted."""
    checkpointed(service)
    with writable(database_of(config)) as conn:
        forged_behind_the_guards(conn)
    assert service.audit()["consistent"]  # trusts checkpoint 1: the documented trade
    assert not service.audit(full=True)["consistent"]  # records the mark (2)
    with writable(database_of(config)) as conn, pytest.raises(REFUSED, match="recorded once"):
        conn.execute(COPY_OF_1)
    with writable(database_of(config)) as conn:
        behind_the_guard(conn, "audit_checkpoint_is_new", "audit_checkpoint", COPY_OF_1)
    quick = service.audit()
    assert not quick["consistent"] and quick["scope"]["full"], quick["scope"]
    (copied,) = [p["message"] for p in quick["problems"] if "a copy of" in p["message"]]
    assert ", a copy of checkpoint 1, does not match its seal" in copied  # (its id: 3 or 4)
    assert any(p["invariant"] == "seal" and p["entry_id"] == 1 for p in quick["problems"])


@pytest.mark.sqlite_only
def test_a_checkpoint_row_whose_text_is_not_utf8_is_named_not_a_500(service, config):
    """Whether a quick audit reads every row is asked outside its lenient snapshot: the
    newest checkpoint's `entries` was read as a value, and bytes that are not UTF-8 there
    made every quick audit raise (a 500 from GET /api/audit) rather than name the row
    (helper-66)."""
    checkpointed(service)
    with writable(database_of(config)) as conn:
        conn.execute(
            "INSERT INTO audit_checkpoint (entry_id, entries, request_id, full_at,"
            " created_at, mac) VALUES (1, CAST(X'FFFE' AS TEXT), 0, 'x', 'x', 'x')"
        )
    report = service.audit()
    assert not report["consistent"] and report["scope"]["full"]
    assert any("does not match its seal" in p["message"] for p in report["problems"])


def test_an_audit_waits_for_the_one_reading_every_row_no_longer_than_a_write(config):
    """Audits that read every row go one at a time in a process; one waited for the one
    running without bound (after a mark, every quick audit: monitoring's polls piled up
    on request threads behind an audit of years, helper-66). It waits as long as a write
    would, then is 503; the next one, once the lock is free, runs."""
    service = Chargebox(prepare(dataclasses.replace(config, busy_timeout_ms=200)))
    pool = ThreadPoolExecutor(2)
    try:
        checkpointed(service)
        with writable(database_of(config)) as conn:
            forged_behind_the_guards(conn)
        assert service.audit(full=True)["scope"]["saved_checkpoint"] == 2  # the mark
        with service._full_audit:  # a full audit of a long ledger, running
            # and the quick one, which after the mark reads every row too
            answered = outcomes([pool.submit(service.audit, full=full) for full in (True, False)])
        for refused in answered:
            assert isinstance(refused, Unavailable), refused
            assert "an audit that reads every row is running" in refused.message
        assert not service.audit()["consistent"]
    finally:
        pool.shutdown()
        service.close()


def test_a_finding_that_could_not_be_recorded_is_said(service, config, monkeypatch):
    """A failed full audit whose mark cannot be written now (a busy database, a read-only
    file) said nothing of it, and the quick audits after it answered consistent again
    (helper-66). Its report says so, in the words the CLI prints, and to run it again."""
    checkpointed(service)
    with writable(database_of(config)) as conn:
        forged_behind_the_guards(conn)

    def busy(*args, **kwargs):
        raise Unavailable("the database is busy; retry shortly")

    with monkeypatch.context() as patched:
        patched.setattr(checkpoints, "distrust", busy)
        failed = service.audit(full=True)
    assert not failed["consistent"] and failed["scope"]["saved_checkpoint"] is None
    assert "; its finding could NOT be recorded (the database is busy; retry shortly): the"\
        " quick audits may go on trusting a checkpoint before it; run this audit again"\
        in failed["scope"]["summary"]  # fmt: skip
    assert service.audit()["consistent"]  # the trade the report warned of
    again = service.audit(full=True)
    assert again["scope"]["saved_checkpoint"] == 2 and not service.audit()["consistent"]


@pytest.mark.postgresql_only
def test_sales_do_not_wait_while_an_audit_waits_to_record_its_checkpoint(config):
    """An audit records its checkpoint under CHECKPOINT_LOCK, which another server's audit
    may hold (or any role: an advisory lock needs no grant). Recorded through the group
    writer, the sales batched with it, or queued behind it, waited as long (helper-66);
    it is recorded in a transaction of its own. Here the lock is held until the sale is
    done: the sale must not wait for it (a busy timeout of 60 s)."""
    import psycopg

    service = Chargebox(prepare(dataclasses.replace(config, busy_timeout_ms=60_000)))
    holder = psycopg.connect(config.db_url)
    try:
        ali, _ = checkpointed(service)
        sold(service, ali["id"], 2)  # for the next audit to record a checkpoint
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (checkpoints.CHECKPOINT_LOCK,))
        auditing = threading.Thread(
            target=audit.audit, args=(service.database,), kwargs={"checkpoint_after": 1}
        )
        auditing.start()
        waiting = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                   " AND objid = %s")  # fmt: skip
        with psycopg.connect(config.db_url, autocommit=True) as look:
            while (
                auditing.is_alive()
                and not look.execute(waiting, (checkpoints.CHECKPOINT_LOCK,)).fetchone()[0]
            ):
                auditing.join(0.01)
        selling = threading.Thread(target=sold, args=(service, ali["id"], 1))
        selling.start()
        selling.join(30)
        assert not selling.is_alive(), "the sale waited for the audit's checkpoint lock"
        holder.rollback()
        auditing.join(30)
    finally:
        holder.close()
        service.close()


def test_a_clean_audit_after_a_failed_one_records_a_checkpoint_trusted_again(service, config):
    """What a failed full audit found mended (here a trigger added beside the guards,
    dropped again), the next audit is clean and records a checkpoint, which the quick
    audits after it trust again."""
    checkpointed(service)
    with writable(database_of(config)) as conn:
        if conn.postgresql:
            conn.execute("CREATE FUNCTION zz() RETURNS trigger LANGUAGE plpgsql"
                         " AS $$ BEGIN RETURN NEW; END; $$")  # fmt: skip
            conn.execute("CREATE TRIGGER zz BEFORE INSERT ON ledger_entry"
                         " FOR EACH ROW EXECUTE FUNCTION zz()")  # fmt: skip
        else:
            conn.execute("CREATE TRIGGER zz AFTER INSERT ON ledger_entry BEGIN SELECT 1; END")
    failed = audit.audit(service.database, full=True, checkpoint_after=1)
    assert [p["invariant"] for p in failed["problems"]] == ["I5"]
    with writable(database_of(config)) as conn:
        conn.execute("DROP TRIGGER zz ON ledger_entry" if conn.postgresql else "DROP TRIGGER zz")
    assert service.audit()["scope"]["full"]  # trusts nothing (it walked too few to record)
    mended = audit.audit(service.database, checkpoint_after=1)
    assert mended["consistent"] and mended["scope"]["full"]
    (found_at,) = rows_on_disk(database_of(config), "SELECT created_at FROM audit_checkpoint"
                               " WHERE id = 2")[0]  # fmt: skip
    assert mended["scope"]["distrusted"] == {"id": 2, "found_at": found_at}
    assert mended["scope"]["saved_checkpoint"] == 3  # after the failed audit's (2)
    trusted = service.audit()["scope"]
    assert not trusted["full"] and trusted["distrusted"] is None


def counted_turns(service) -> list[str]:
    """The service's turns of the audits that read every row, counted (never waited for)."""
    turns: list[str] = []

    class Turns:
        def acquire(self, timeout: float) -> bool:
            turns.append("full audit's turn")
            return True

        def release(self) -> None:
            pass

    service._full_audit = Turns()
    return turns


def test_quick_audits_that_read_every_row_run_one_at_a_time_as_full_ones(service, config):
    """A quick audit with no checkpoint to trust (here after a failed full audit) reads
    the whole ledger, so it waits its turn with the full audits; one that starts from a
    checkpoint does not wait."""
    checkpointed(service)
    turns = counted_turns(service)
    service.audit()
    assert turns == []
    with writable(database_of(config)) as conn:
        drop_trigger(conn, "ledger_entry_no_update")
    service.audit(full=True)
    service.audit()
    assert len(turns) == 2


@pytest.mark.parametrize("newest", ["forged", "a copy"])
def test_a_quick_audit_from_a_checkpoint_that_does_not_verify_takes_the_full_audits_turn(
    service, config, newest
):
    """A checkpoint row inserted without the key (the service's role may insert) made
    every quick audit read every row, all at once, outside the full audits' turns; it is
    foreseen as they are: its seal, and whether another row bears it, checked first."""
    checkpointed(service)
    with writable(database_of(config)) as conn:
        if newest == "forged":
            conn.execute("INSERT INTO audit_checkpoint (entry_id, entries, request_id, full_at,"
                         " created_at, mac) VALUES (5, 5, 0, 'x', 'x', 'x')")  # fmt: skip
        else:
            behind_the_guard(conn, "audit_checkpoint_is_new", "audit_checkpoint", COPY_OF_1)
    turns = counted_turns(service)
    report = service.audit()
    assert turns and report["scope"]["full"] and not report["consistent"]


def test_a_quick_audit_that_began_before_a_failed_full_one_records_no_checkpoint(service):
    """A quick audit continuing a checkpoint older than a failed full audit's mark records
    nothing that would trust it again."""
    checkpointed(service)
    key = service.database.ledger_key
    trusted, _ = checkpoints.newest(service.database, key)
    service.database.write(lambda write: checkpoints.distrust(write, key, "2026-12-05T00:00:00Z"))
    seen = (trusted.entry_id, trusted.entries, trusted.request_id, trusted.full_at)
    saved = service.database.write(
        lambda write: checkpoints.save(write, key, seen, trusted.states, trusted, trusted.id)
    )
    assert saved is None
    assert checkpoints.newest(service.database, key) == (None, [])


def test_a_clean_audit_whose_snapshot_began_before_a_failed_ones_mark_records_none(
    service, monkeypatch
):
    """Two audits at once: one whose snapshot was clean, another (its snapshot later) that
    found a problem and recorded its mark meanwhile. The clean one records no checkpoint:
    what it saw clean may have been changed since, and its checkpoint would be trusted."""
    checkpointed(service)
    key, walk = service.database.ledger_key, audit._full

    def marked_meanwhile(*args, **kwargs):
        found = walk(*args, **kwargs)
        mark = lambda write: checkpoints.distrust(write, key, "t")  # noqa: E731
        other = threading.Thread(target=service.database.write, args=(mark,))
        other.start()
        other.join()
        return found

    monkeypatch.setattr(audit, "_full", marked_meanwhile)
    report = audit.audit(service.database, full=True, checkpoint_after=1)
    assert report["consistent"] and report["scope"]["saved_checkpoint"] is None
    assert checkpoints.later_mark(service.database, key) is not None


def test_a_checkpoint_written_without_the_key_is_refused_and_everything_verified(service, config):
    ali, _ = checkpointed(service)
    with writable(database_of(config)) as conn:
        drop_trigger(conn, "seller_checkpoint_no_update" if not config.db_url else
                     "seller_checkpoint_no_change")  # fmt: skip
        conn.execute("UPDATE seller_checkpoint SET balance = balance + 1000")
    report = service.audit()
    assert report["scope"]["full"] and not report["consistent"]
    assert any("does not match its seal" in p["message"] for p in report["problems"])


def test_each_sellers_newest_checkpoint_is_found_by_a_seek_not_a_read_of_them_all(service, config):
    """Years of checkpoints (here 4,000 more, a row per seller each) cost the quick audit
    nothing: each seller's newest row is one seek of the (seller, checkpoint) index. A
    GROUP BY over every row read them all: 0.4-0.6 s at 3.3M rows on either backend."""
    checkpointed(service)
    numbers = "WITH RECURSIVE k(n) AS (SELECT 2 UNION ALL SELECT n + 1 FROM k WHERE n < 4001)"
    with writable(database_of(config)) as conn:
        conn.execute(f"{numbers} INSERT INTO audit_checkpoint (id, entry_id, entries,"
                     " request_id, full_at, created_at, mac) SELECT n, 5, 5, 0, 'x', 'x', 'x' || n"
                     " FROM k")  # fmt: skip
        conn.execute(f"{numbers} INSERT INTO seller_checkpoint (checkpoint_id, seller_id,"
                     " entry_id, entries, entry_mac, balance, sale_id, sales, mac)"
                     " SELECT n, seller.id, 1, 1, 'x', 0, 0, 0, 'x' FROM k, seller")  # fmt: skip
        if config.db_url:
            conn.execute("ANALYZE")
    reader = service.database
    if config.db_url:
        read = rows_read(postgresql_plan(reader, checkpoints._STATES))
        assert read < 100, read  # of 8,000 rows
    else:
        plan = sqlite_plan(reader, checkpoints._STATES)
        assert "SCAN seller_checkpoint" not in plan and "SCAN c " not in plan + " ", plan
    newest = {row[0]: row[8] for row in reader.rows(checkpoints._STATES)}  # its entry_id
    assert len(newest) == 2 and set(newest.values()) == {5}  # each seller's, of the newest


@pytest.mark.postgresql_only
def test_a_postgresql_database_made_before_the_checkpoint_tables_serves_and_migrates(
    service, config
):
    """Made before the checkpoint tables, a database still starts (the grants' check
    looks at the tables there: helper-67), and migrate from version 8 adds them, with
    version 9's guard, and grants them to the service's roles (they named tables not
    there, and migrate failed)."""
    import psycopg

    from tests.backends import owner_url

    with psycopg.connect(owner_url(config.db_url), autocommit=True) as conn:
        conn.execute("DROP TABLE seller_checkpoint, audit_checkpoint")
    prepare(config)
    assert audit.audit(service.database)["consistent"]
    with psycopg.connect(owner_url(config.db_url), autocommit=True) as conn:  # version 8's
        conn.execute("DROP FUNCTION chargebox_checkpoint_is_new()")
        conn.execute("DROP INDEX web_session_seller_id")  # (version 10's)
        conn.execute("DROP FUNCTION chargebox_seller_status_is_counted() CASCADE")  # (11's)
        conn.execute("ALTER TABLE seller DROP COLUMN status_changes")
        conn.execute("ALTER TABLE schema_version DISABLE TRIGGER ALL")
        conn.execute(f"UPDATE schema_version SET version = 8 WHERE version = {schema.VERSION}")
        conn.execute("ALTER TABLE schema_version ENABLE TRIGGER ALL")
        found, to, roles, put = migrations.upgrade_postgresql(conn, "here")
    assert (found, to, put) == (8, schema.VERSION, []) and roles
    prepare(config)
    assert audit.audit(service.database, checkpoint_after=0)["scope"]["saved_checkpoint"] == 1
    assert checkpoints.kept_in(service.database) and not service.database.missing_triggers()


@pytest.mark.parametrize("statement", [
    "UPDATE audit_checkpoint SET entries = 0",
    "DELETE FROM audit_checkpoint",
    "UPDATE seller_checkpoint SET balance = 0",
    "DELETE FROM seller_checkpoint",
])  # fmt: skip
def test_checkpoints_are_append_only_in_the_database(service, config, statement):
    checkpointed(service)
    with writable(database_of(config)) as conn, pytest.raises(REFUSED, match="checkpoints"):
        conn.execute(statement)


def test_the_cli_full_audit_says_what_it_verified(service, config):
    checkpointed(service)
    quick = cli_audit_of(config)
    assert quick.returncode == 0 and "audit: verified fully up to entry" in quick.stderr


def test_get_audit_full_true_rereads_every_row_and_a_bad_flag_is_422(server):
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    full = requests.get(f"{server.url}/api/audit?full=true", headers=admin, timeout=60)
    assert full.status_code == 200 and full.json()["scope"]["full"] is True
    bad = requests.get(f"{server.url}/api/audit?full=yes", headers=admin, timeout=60)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "full"


@pytest.mark.postgresql_only  # SQLite: prepare() creates the tables missing, with the others
def test_init_db_adds_the_checkpoint_tables_to_a_postgresql_database_made_before_them(
    service, config
):
    """Until `init-db --grant-to ROLE` grants the role the new tables, audits only read."""
    import psycopg

    from tests.backends import owner_url

    with psycopg.connect(owner_url(config.db_url), autocommit=True) as conn:
        conn.execute("DROP TABLE seller_checkpoint, audit_checkpoint")
        schema.create_postgresql(conn)
        schema.create_postgresql(conn)  # once is enough: the second finds them
        assert (
            audit.audit(service.database, checkpoint_after=0)["scope"]["saved_checkpoint"] is None
        )
        grants.grant(conn, psycopg.conninfo.conninfo_to_dict(config.db_url)["user"])
    assert audit.audit(service.database, checkpoint_after=0)["scope"]["saved_checkpoint"] == 1

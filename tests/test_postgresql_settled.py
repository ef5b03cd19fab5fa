"""PostgreSQL: no page, and no audit checkpoint, passes a row still to come (settled.py).

Two app servers on one database: server A's sale takes its ids, then waits for a
phone's row held by `gate` (so its transaction stays open with the lower ids);
server B's sale, for another seller, takes higher ids and commits. A page read now
must not show B's sale without A's: a client would pass B's id as its next
`after_id` and never see A's. So B's page stops at the last settled id: it waits a
moment for A's transaction, which does not end, and shows only what came before
it; once A has committed, both sales, in id order. A page of one seller's rows
waits for nothing: they are written under the seller's row lock, so they commit in
id order. An audit's checkpoint likewise bounds what the next quick audits read of
credit requests: none is recorded past another server's request still to come.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
import threading
import time
import types

import psycopg
import pytest

from chargebox import audit, settled
from chargebox.cli import main, prepare
from chargebox.errors import Unavailable
from chargebox.queries import Page
from chargebox.sale_search import Search
from chargebox.services import Chargebox
from tests.support import credited_seller
from tests.test_postgresql_group_commit import FUNDS, blocked_by

A_NUMBER, B_NUMBER = "09120000001", "09120000002"
NEWEST = Page(newest_first=True)


@pytest.fixture
def two_servers(pg_group_commit):
    """Server A (the fixture's service), server B on the same database (its pages wait
    0.5 s at most: its busy timeout), and a superuser URL."""
    a, superuser = pg_group_commit
    b = Chargebox(dataclasses.replace(a.config, busy_timeout_ms=500))
    yield a, b, superuser
    b.close()


def ids(rows: list[dict]) -> list[int]:
    return [row["id"] for row in rows]


def test_a_page_stops_below_a_lower_id_still_in_flight_on_another_server(two_servers):
    a, b, superuser = two_servers
    low, high = (credited_seller(a, FUNDS)["id"] for _ in range(2))
    first = a.sell(low, A_NUMBER, 1_000).record["id"]  # the phone's row now exists
    assert ids(b.queries.sales(Page())) == [first]
    entries = ids(b.queries.ledger(Page(limit=1000)))
    with (
        concurrent.futures.ThreadPoolExecutor(1) as pool,
        psycopg.connect(superuser) as gate,
    ):
        gate.execute("SELECT 1 FROM phone WHERE number = %s FOR UPDATE", (A_NUMBER,))
        in_flight = pool.submit(a.sell, low, A_NUMBER, 1_000)
        blocked_by(superuser, gate.info.backend_pid)  # A holds its ids, not committed
        later = b.sell(high, B_NUMBER, 1_000).record["id"]
        assert later > first + 1  # A's sale took the id between
        assert ids(b.queries.sales(Page())) == [first]  # not `later`: 100 before 101
        # newest first, too, starts below the settled top: `later` on it, then `first`,
        # and a client's next page (below `first`) would never have seen A's sale
        assert ids(b.queries.sales(NEWEST)) == [first]
        assert ids(b.queries.sales(Page(), search=Search(phone=B_NUMBER))) == []
        assert ids(b.queries.ledger(Page(limit=1000))) == entries
        # one seller's rows are written under its row lock, in id order: none waits
        assert ids(b.queries.sales(Page(after_id=first), high)) == [later]
        assert b.queries.sales(Page(after_id=first), low) == []
        assert [e["seller_id"] for e in b.queries.ledger(Page(after_id=entries[-1]), high)] == [
            high
        ]
        gate.rollback()
        middle = in_flight.result(timeout=30).record["id"]
    assert ids(b.queries.sales(Page(after_id=first))) == [middle, later]
    assert ids(b.queries.sales(NEWEST)) == [later, middle, first]
    assert [e["kind"] for e in b.queries.ledger(Page(after_id=entries[-1]))] == ["sale"] * 2


def test_a_full_page_below_the_known_top_waits_for_nothing(two_servers):
    """Once settled, an id stays settled: a page that fills up below the top its server
    knows is read without a look at the writes in flight."""
    a, b, superuser = two_servers
    seller = credited_seller(a, FUNDS)["id"]
    sold = [a.sell(seller, A_NUMBER, 100).record["id"] for _ in range(3)]
    assert ids(b.queries.sales(Page())) == sold
    settles = []
    settle = b.database.tops.settle
    b.database.tops.settle = lambda *args: settles.append(args) or settle(*args)
    with psycopg.connect(superuser) as holder:  # an id taken and held: a write in flight
        holder.execute("SELECT nextval('sale_id_seq')")
        assert ids(b.queries.sales(Page(limit=2))) == sold[:2]
        assert settles == []
        assert ids(b.queries.sales(Page())) == sold  # short: waited 0.5 s, then the known top
        assert len(settles) == 1


def test_newest_first_settles_for_its_first_page_only(two_servers):
    """A list newest first settles a top for its first page (a write in flight is waited
    for, 0.5 s, then left out); every page below it is settled already and waits for
    nothing, whatever is in flight; a cursor above the known top settles again (which the
    write in flight keeps from covering it: a 503, the test below). Oldest
    first, a page bounded below the known top (`before_id`) settles nothing either."""
    a, b, superuser = two_servers
    seller = credited_seller(a, FUNDS)["id"]
    sold = [a.sell(seller, A_NUMBER, 100).record["id"] for _ in range(3)]
    settles = []
    settle = b.database.tops.settle
    b.database.tops.settle = lambda *args: settles.append(args) or settle(*args)
    assert ids(b.queries.sales(Page(limit=2, newest_first=True))) == sold[:0:-1]
    assert len(settles) == 1
    with psycopg.connect(superuser) as holder:  # an id taken and held: a write in flight
        (held,) = holder.execute("SELECT nextval('sale_id_seq')").fetchone()
        below = Page(limit=2, before_id=sold[1], newest_first=True)
        assert ids(b.queries.sales(below)) == sold[:1]
        assert len(settles) == 1
        above = Page(before_id=held + 5, newest_first=True)
        with pytest.raises(Unavailable):  # waited; the write keeps the cursor unsettled
            b.queries.sales(above)
        assert len(settles) == 2
        # oldest first, a short page that ends below the known top settles nothing
        assert ids(b.queries.sales(Page(before_id=sold[2]))) == sold[:2]
        assert len(settles) == 2


def test_a_cursor_from_another_server_that_a_stuck_write_keeps_unsettled_is_503(two_servers):
    """helper-107's HIGH: a client's first page newest first came from server A; its next
    page goes to server B, which has settled nothing yet (a restart, another host). An id
    taken and held (a write in flight that does not end) keeps B's settle from covering
    the cursor: B answered a page below its own top, empty, which the client took for the
    end, the committed sales below the cursor never shown. It is a 503 to retry now, and
    once the write ends B shows them. Oldest first, a page bounded by before_id, too."""
    a, b, superuser = two_servers
    seller = credited_seller(a, FUNDS)["id"]
    sold = [a.sell(seller, A_NUMBER, 100).record["id"] for _ in range(3)]
    (newest,) = ids(a.queries.sales(Page(limit=1, newest_first=True)))
    assert newest == sold[2]
    older = Page(limit=1, before_id=newest, newest_first=True)
    between = Page(after_id=0, before_id=newest)
    (pid,) = b.database.rows("SELECT pg_backend_pid()")[0]
    with psycopg.connect(superuser) as holder:
        holder.execute("SELECT nextval('sale_id_seq')")
        for page in (older, between):
            with pytest.raises(Unavailable, match="holds back the rows"):
                b.queries.sales(page)
    assert b.database.rows("SELECT pg_backend_pid()") == [(pid,)]  # its connection kept
    assert ids(b.queries.sales(older)) == [sold[1]]
    assert ids(b.queries.sales(between)) == sold[:2]


def test_after_a_stuck_write_the_other_writes_in_flight_are_waited_for_as_ever(two_servers):
    """helper-108's HIGH: once a settle had given up on a stuck write, every settle for
    WAIT after it gave up on any write in flight, and each renewed the window: under
    steady writes the top never moved again, and a cursor above it was a 503 for ever.
    Only the write given up on is not waited for again; another, ending in 0.2 s, is
    waited for, and the page is answered."""
    a, b, superuser = two_servers
    seller = credited_seller(a, FUNDS)["id"]
    sold = [a.sell(seller, A_NUMBER, 100).record["id"] for _ in range(3)]
    with psycopg.connect(superuser) as stuck:
        stuck.execute("SELECT nextval('sale_id_seq')")
        assert b.queries.sales(Page(newest_first=True)) == []  # gave up on it: B's top 0
        stuck.rollback()  # (it ends; the window for it is still open)
        with psycopg.connect(superuser) as brief:
            brief.execute("SELECT nextval('sale_id_seq')")
            timer = threading.Timer(0.2, brief.rollback)
            timer.start()
            try:
                older = Page(limit=1, before_id=sold[2], newest_first=True)
                assert ids(b.queries.sales(older)) == [sold[1]]
            finally:
                timer.join()
    assert b.database.tops.known("sale") >= sold[2]


def test_a_cursor_just_above_the_known_top_reads_below_it_and_one_more_settles(two_servers):
    """The top known is K and K+1 is held by a write in flight: a cursor of K or K+1 reads
    the ids up to K, waiting for nothing (every id below it is settled); K+2 may hold K+1
    back, so it settles, which the write keeps from covering it: 503, newest or oldest."""
    a, b, superuser = two_servers
    seller = credited_seller(a, FUNDS)["id"]
    sold = [a.sell(seller, A_NUMBER, 100).record["id"] for _ in range(3)]
    assert ids(b.queries.sales(Page())) == sold  # B's top: the last sale
    known = sold[-1]
    settles = []
    settle = b.database.tops.settle
    b.database.tops.settle = lambda *args: settles.append(args) or settle(*args)
    with psycopg.connect(superuser) as holder:
        (held,) = holder.execute("SELECT nextval('sale_id_seq')").fetchone()
        assert held == known + 1
        for cursor, shown in ((known, sold[:2]), (known + 1, sold)):
            assert ids(b.queries.sales(Page(before_id=cursor, newest_first=True))) == shown[::-1]
            assert ids(b.queries.sales(Page(before_id=cursor))) == shown
        assert settles == []  # every id below the cursor is settled: nothing to wait for
        for page in (Page(before_id=known + 2, newest_first=True), Page(before_id=known + 2)):
            with pytest.raises(Unavailable, match="holds back the rows"):
                b.queries.sales(page)


def test_a_page_with_nothing_in_flight_shows_every_committed_row(pg_group_commit):
    """The cap is the sequence's last id: rows up to it are all there (none held back),
    on a fresh database and after sales."""
    service, _ = pg_group_commit
    assert service.queries.sales(Page()) == []
    seller = credited_seller(service, FUNDS)["id"]
    sold = [service.sell(seller, A_NUMBER, 100).record["id"] for _ in range(3)]
    assert ids(service.queries.sales(Page())) == sold
    assert ids(service.queries.sales(Page(after_id=sold[0]))) == sold[1:]


def test_only_a_transaction_holding_an_id_of_the_table_holds_its_pages_back(two_servers):
    """Waited for: a transaction that took an id from the table's sequence, whatever its
    role (here a superuser's `nextval`, before any transaction id is assigned). Not
    waited for: another database's transaction, and one that took no such id."""
    a, b, superuser = two_servers
    seller = credited_seller(a, FUNDS)["id"]
    with psycopg.connect(superuser) as taker:
        taker.execute("SELECT nextval('sale_id_seq')")
        sold = a.sell(seller, A_NUMBER, 100).record["id"]
        assert b.queries.sales(Page()) == []  # b knew no top: it settles none meanwhile
    assert ids(b.queries.sales(Page())) == [sold]
    again = a.sell(seller, A_NUMBER, 100).record["id"]
    elsewhere = superuser.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(elsewhere) as other_database, psycopg.connect(superuser) as other:
        other_database.execute("SELECT txid_current()")
        other.execute("SELECT txid_current()")
        other.execute("SELECT nextval('ledger_entry_id_seq')")  # another table's id
        assert ids(b.queries.sales(Page())) == [sold, again]


@pytest.mark.parametrize(
    ("change", "named"),
    [("CACHE 10", r"CACHE 10, INCREMENT 1\)"), ("CYCLE", r"CACHE 1, INCREMENT 1, CYCLE\)"),
     ("INCREMENT -1", r"CACHE 1, INCREMENT -1\)")],
)  # fmt: skip
def test_a_sequence_that_may_hand_out_a_lower_id_is_refused_at_start(
    pg_group_commit, change, named, capsys
):
    """A session's cached ids, or a sequence that cycles, would hand out an id after a
    page had passed it. The audit, which only reads, still runs (it refused too, so the
    books could not be audited at all); `migrate` puts the sequence back in order."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, 10_000)
    sold = [service.sell(seller["id"], A_NUMBER, 100).record["id"] for _ in range(3)]
    with psycopg.connect(superuser, autocommit=True) as admin:
        admin.execute(f"ALTER SEQUENCE sale_id_seq {change}")
        # one that ran down hands out ids below those it gave: migrate restarts it above
        admin.execute("SELECT nextval('sale_id_seq'), nextval('sale_id_seq')")
    with pytest.raises(ValueError, match=rf"sale's ids \({named}.*run `chargebox migrate`"):
        prepare(service.config)
    data = ["--data-dir", str(service.config.data_dir)]
    assert main(["audit", "--db", service.config.db_url, *data]) == 0
    assert main(["migrate", "--db", superuser, *data]) == 0
    said = capsys.readouterr().err
    assert re.search(rf"put back 1 guard\(s\) dropped or changed: sale's ids \({named}", said)
    with psycopg.connect(superuser) as admin:
        assert admin.execute(
            "SELECT seqcache, seqincrement, seqcycle FROM pg_sequence WHERE"
            " seqrelid = 'sale_id_seq'::regclass"
        ).fetchone() == (1, 1, False)
        (following,) = admin.execute("SELECT nextval('sale_id_seq')").fetchone()
    assert following > max(sold)  # not one handed out before (a sale would fail on it)
    prepare(service.config)
    assert service.sell(seller["id"], A_NUMBER, 100).record["id"] > max(sold)


def test_a_reader_of_the_sequence_holds_no_page_back(two_servers):
    """A pg_dump, or a monitor, reads a sequence in a transaction and keeps a lock on it
    to the end: a weaker one than nextval's, not waited for."""
    a, b, superuser = two_servers
    seller = credited_seller(a, FUNDS)["id"]
    sold = a.sell(seller, A_NUMBER, 100).record["id"]
    with psycopg.connect(superuser) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT last_value FROM sale_id_seq")
        assert ids(b.queries.sales(Page())) == [sold]


def test_a_stuck_write_is_waited_for_once_then_not_again_for_a_while(two_servers, monkeypatch):
    """A write that does not end within the wait (here an id taken and held) leaves the
    known top; the next pages that reach it do not wait for it again (a thread each)."""
    a, b, superuser = two_servers
    pauses = []
    clock = types.SimpleNamespace(monotonic=time.monotonic,
                                  sleep=lambda s: (pauses.append(s), time.sleep(s)))  # fmt: skip
    monkeypatch.setattr(settled, "time", clock)
    with psycopg.connect(superuser) as holder:
        holder.execute("SELECT nextval('sale_id_seq')")
        assert b.queries.sales(Page()) == []
        waited = len(pauses)
        assert waited and sum(pauses) >= 0.4  # about the 0.5 s of b's busy timeout
        assert b.queries.sales(Page()) == []
        assert len(pauses) == waited
    sold = a.sell(credited_seller(a, FUNDS)["id"], A_NUMBER, 100).record["id"]
    assert ids(b.queries.sales(Page())) == [sold]  # settled again: the holder is gone


def test_a_database_gone_back_lowers_the_known_top(two_servers, caplog):
    """The sequence found below the top a process knew (a restore, a failover to a standby
    that lost the last commits): the process takes the lower one, and logs it."""
    a, b, superuser = two_servers
    seller = credited_seller(a, FUNDS)["id"]
    sold = [a.sell(seller, A_NUMBER, 100).record["id"] for _ in range(3)]
    assert b.database.settled("sale") == sold[-1]
    with psycopg.connect(superuser, autocommit=True) as admin:
        admin.execute("SELECT setval('sale_id_seq', %s)", (sold[0],))
    assert b.database.settled("sale") == sold[0]
    assert f"sale's ids went back from {sold[-1]} to {sold[0]}" in caplog.text


def test_no_checkpoint_passes_a_credit_request_still_to_come(two_servers):
    """Another server's credit request holds a lower id, not committed, while this one's,
    higher, commits: a clean audit bounds its checkpoint below the lower one (it would
    otherwise say every request up to the higher id was verified). Once the lower one
    has committed and is tampered with (approved with no credit entry), the next quick
    audit names it."""
    a, b, superuser = two_servers
    low, high = (credited_seller(a, FUNDS)["id"] for _ in range(2))
    settled = ids(b.queries.credit_requests(Page()))[-1]  # b knows a settled top
    with psycopg.connect(a.config.db_url) as other:  # as a server's write
        (held,) = other.execute(
            "INSERT INTO credit_request (seller_id, amount, status, created_at)"
            " VALUES (%s, 500, 'pending', %s) RETURNING id",
            (low, "2026-12-04T06:00:00.000000Z"),
        ).fetchone()
        later = b.request_credit(high, 500).record["id"]
        assert later > held
        report = audit.audit(b.database, checkpoint_after=0)
        assert report["consistent"] and report["scope"]["saved_checkpoint"]
        (bound,) = b.database.rows("SELECT max(request_id) FROM audit_checkpoint")[0]
        assert settled == bound < held
        c = Chargebox(a.config)  # a new process: it knows no settled top yet
        try:  # its bounds (0) would be behind the checkpoint: it records none
            assert audit.audit(c.database, checkpoint_after=0)["scope"]["saved_checkpoint"] is None
        finally:
            c.close()
    with psycopg.connect(superuser) as tamper:
        tamper.execute("SET session_replication_role = replica")
        tamper.execute(
            "UPDATE credit_request SET status = 'approved', decided_at = created_at WHERE id = %s",
            (held,),
        )
    named = [p["message"] for p in audit.audit(b.database)["problems"]]
    assert f"credit request {held} (approved, 500) has 0 credit entries" in named


def test_a_settled_audit_records_its_checkpoint(pg_group_commit):
    """With nothing in flight, a clean audit records its checkpoint, up to the newest
    request."""
    service, _ = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    newest = service.request_credit(seller, 500).record["id"]
    assert audit.audit(service.database, checkpoint_after=0)["scope"]["saved_checkpoint"]
    rows = service.database.rows("SELECT request_id FROM audit_checkpoint ORDER BY id DESC")
    assert rows[0][0] == newest

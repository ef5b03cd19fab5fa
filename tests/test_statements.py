"""Statements (statements.py, periods.py): the sums, the chaining, the streaming, the CLI.

The property tests write a seller's entries through the ledger with stamps chosen by
Hypothesis, in any order against the entries' own (as app hosts with different clocks
would on PostgreSQL), then cut time into consecutive periods: each statement must hold
exactly the entries stamped in it, open on the sum of those before it, close on its
opening plus its entries, and open where the one before it closed. The streaming test
checks that a statement is read chunk by chunk as it is sent, never all at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chargebox import (
    clock,
    ledger,
    periods,
    queries,
    sale_search,
    schema,
    statement_turns,
    statements,
)
from chargebox.audit_checks import KINDS
from chargebox.errors import NotFound, Unavailable, ValidationError
from tests.support import (
    REFUSED,
    ROOT,
    credited_seller,
    database_of,
    postgresql_plan,
    rows_read,
    sqlite_plan,
    statements_read,
    writable,
)

BASE = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
PHONE = "09121234567"


def at(seconds: int) -> str:
    return clock.stamp(BASE + datetime.timedelta(seconds=seconds))


def write_entries(service, seller_id: int, entries: list[tuple[int, int]]) -> list[dict]:
    """Each (seconds, amount) as a ledger entry stamped BASE + seconds, in list order:
    a sale for a negative amount the balance covers, else a credit-like adjustment."""
    made = []
    balance = service.queries.seller(seller_id)["balance"]

    def work(write):
        nonlocal balance
        for seconds, amount in entries:
            stamp = at(seconds)
            if amount < 0 and balance + amount >= 0:
                sale = ledger.sell(write, seller_id, PHONE, -amount, stamp)
                row = write.dicts("SELECT * FROM ledger_entry WHERE sale_id = ?", (sale["id"],))
            else:
                row = [ledger.adjust(write, seller_id, abs(amount), "test", stamp)]
            balance = row[0]["balance_after"]
            made.append({"id": row[0]["id"], "kind": row[0]["kind"],
                         "amount": row[0]["amount"], "stamp": stamp})  # fmt: skip

    service.database.write(work)
    return made


def read(service, seller_id: int, period: periods.Period, chunk: int = 3) -> dict:
    """The statement as a client gets it: rendered to JSON bytes, parsed back."""
    statement = statements.Statement(service.database, seller_id, period, chunk=chunk)
    return json.loads(b"".join(statements.Rendered(statement, "json")))


def period(start: int, end: int) -> periods.Period:
    return periods.Period(BASE + datetime.timedelta(seconds=start),
                          BASE + datetime.timedelta(seconds=end))  # fmt: skip


entries_strategy = st.lists(
    st.tuples(st.integers(0, 100), st.integers(-3000, 3000).map(lambda n: n or 1)), max_size=25
)
cuts_strategy = st.lists(st.integers(-5, 105), min_size=2, max_size=6, unique=True).map(sorted)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=entries_strategy, cuts=cuts_strategy)
def test_opening_plus_entries_is_closing_and_consecutive_statements_chain(service, entries, cuts):
    """Any stamps, in any order against the ledger's: each statement holds exactly the
    entries stamped in [from, to), opens on the sum of those before, closes on its
    opening plus its entries, and the next one opens where it closed."""
    seller = credited_seller(service, 0, "prop")
    made = write_entries(service, seller["id"], entries)
    previous = None
    for start, end in itertools.pairwise(cuts):
        got = read(service, seller["id"], period(start, end))
        low, high = at(start), at(end)
        inside = [entry for entry in made if low <= entry["stamp"] < high]
        assert got["opening_balance"] == sum(e["amount"] for e in made if e["stamp"] < low)
        assert [e["id"] for e in got["entries"]] == [e["id"] for e in inside]
        assert got["closing_balance"] == got["opening_balance"] + sum(
            e["amount"] for e in got["entries"]
        )
        assert got["count"] == len(inside)
        for kind in KINDS:
            mine = [e["amount"] for e in inside if e["kind"] == kind]
            assert got["totals"][kind] == {"count": len(mine), "amount": sum(mine)}
        if previous is not None:
            assert got["opening_balance"] == previous["closing_balance"]
        previous = got
    everything = read(service, seller["id"], period(-10, 200))
    assert everything["closing_balance"] == service.queries.seller(seller["id"])["balance"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(  # each sale: its id's gap after the one before (0: the next block's first), ...
    sales=st.lists(st.tuples(st.sampled_from([1, 1, 1, 5, 600, 2500, 0]),
                             st.integers(0, 100), st.booleans()), max_size=30),
    low=st.none() | st.integers(-5, 105),
    high=st.none() | st.integers(-5, 105),
    mine=st.booleans(),
    limit=st.integers(1, 4),
    blocks=st.sampled_from([1, 2, sale_search.BLOCKS]),
)  # fmt: skip
# a block's first sale in the range, the block before it not meeting the range
@example(sales=[(5, 50, True), (0, 10, True)], low=0, high=20, mine=False, limit=1, blocks=64)
def test_a_search_by_time_finds_every_sale_stamped_in_it_and_no_other(
    service, config, sales, low, high, mine, limit, blocks
):
    """Any stamps, in any order against the sales' ids, over two sellers and ids strewn
    over many blocks (each sale's id some gap after the one before, or the next block's
    first: written here, its block widened by the schema's trigger): a search
    of sales by time (from, to, or both; one seller's or everyone's), read page by page,
    finds exactly the sales stamped in [from, to), in id order, however many blocks it
    reads at a time (sale_search.BLOCKS)."""
    first, second = (credited_seller(service, 10**6, name)["id"] for name in ("A", "B"))
    service.sell(first, PHONE, 1_000)  # (the number's row, which the sales below name)
    with writable(database_of(config)) as conn:
        (last,) = conn.execute("SELECT max(id) FROM sale").fetchone()
        for gap, seconds, firsts in sales:
            last = last + gap if gap else (last >> schema.BLOCK_BITS) + 1 << schema.BLOCK_BITS
            owner = first if firsts else second
            conn.execute(
                "INSERT INTO sale (id, seller_id, phone, amount, balance_after, created_at)"
                " VALUES (?, ?, ?, 1, 0, ?)", (last, owner, PHONE, at(seconds))
            )  # fmt: skip
        conn.ids_given("sale")
    search = queries.Search(start=None if low is None else at(low),
                            end=None if high is None else at(high))  # fmt: skip
    seller = first if mine else None
    found, after = [], 0
    default, sale_search.BLOCKS = sale_search.BLOCKS, blocks
    try:
        while page := service.queries.sales(queries.Page(limit, after), seller, search):
            found += [sale["id"] for sale in page]
            after = page[-1]["id"]
    finally:
        sale_search.BLOCKS = default
    every = service.queries.reader.rows("SELECT id, seller_id, created_at FROM sale ORDER BY id")
    assert found == [
        id_ for id_, owner, stamp in every
        if seller in (None, owner) and (search.start is None or stamp >= search.start)
        and (search.end is None or stamp < search.end)
    ]  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime.datetime(1950, 1, 1), max_value=datetime.datetime(2200, 1, 1),
        timezones=st.sampled_from([datetime.UTC, periods.TEHRAN,
                                   datetime.timezone(datetime.timedelta(hours=-5))]),
        allow_imaginary=False,
    )
)  # fmt: skip
# the hour repeated when Tehran's summer time ended, its second time (found by hypothesis)
@example(moment=datetime.datetime(2001, 9, 21, 23, 30, tzinfo=periods.TEHRAN, fold=1))
def test_a_bound_with_any_offset_is_the_same_instant_and_its_stamp_sorts_as_time(moment):
    """Compared as UTC instants: a Tehran time of the hour repeated when summer time ended
    (fold=1) is never == a time of another zone (PEP 495), though it is the same instant."""
    text = moment.isoformat()
    parsed = periods.instant(text, "from")
    utc = moment.astimezone(datetime.UTC)
    assert parsed.astimezone(datetime.UTC) == utc
    later = clock.stamp(utc + datetime.timedelta(microseconds=1))  # (+ drops fold=1)
    assert clock.stamp(parsed) < later
    shown = datetime.datetime.fromisoformat(periods.local(clock.stamp(parsed)))
    assert shown.astimezone(datetime.UTC) == utc
    assert shown.utcoffset() == moment.astimezone(periods.TEHRAN).utcoffset()


def test_days_and_months_are_tehran_days_and_months_gregorian_and_jalali():
    day = periods.period({"day": "2026-12-01"})
    assert periods.local(day.start) == "2026-12-01T00:00:00.000000+03:30"
    assert day.bounds == ("2026-11-30T20:30:00.000000Z", "2026-12-01T20:30:00.000000Z")
    month = periods.period({"month": "2026-12"})
    assert month.bounds == ("2026-11-30T20:30:00.000000Z", "2026-12-31T20:30:00.000000Z")
    azar = periods.period({"jmonth": "1405-09"})  # Azar 1405: 2026-11-22 to 2026-12-22
    assert (azar.start.date(), azar.end.date()) == (datetime.date(2026, 11, 22),
                                                    datetime.date(2026, 12, 22))  # fmt: skip
    esfand = periods.period({"jmonth": "1405-12"})  # to the first of Farvardin 1406
    assert esfand.end.date() == datetime.date(2027, 3, 21)
    dated = periods.period({"from": "2026-12-01", "to": "2026-12-01T12:00:00+03:30"})
    assert dated.bounds == ("2026-11-30T20:30:00.000000Z", "2026-12-01T08:30:00.000000Z")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "from"),
        ({"from": "2026-12-01"}, "from"),
        ({"day": "2026-12-01", "month": "2026-12"}, "day"),
        ({"from": "2026-12-01T10:00:00", "to": "2026-12-02"}, "from"),  # no offset
        ({"from": "2026-12-02", "to": "2026-12-01"}, "to"),
        ({"from": "2026-12-01", "to": "2026-12-01"}, "to"),
        ({"day": "2026-02-30"}, "day"),
        ({"day": "۲۰۲۶-۱۲-۰۱"}, "day"),
        ({"month": "2026-13"}, "month"),
        ({"jmonth": "1405-00"}, "jmonth"),
        ({"month": "9999-12"}, "month"),
        ({"month": "9999-01"}, "month"),
        ({"day": "9999-06-01"}, "day"),
        ({"from": "2026-01-01", "to": "9999-01-01T00:00:01+03:30"}, "to"),
        ({"from": "9999-01-01", "to": "9999-12-31"}, "to"),
        ({"day": "0001-01-01"}, "day"),
        ({"from": "0001-01-01T00:00:00+03:30", "to": "2026-12-01"}, "from"),
        ({"from": "2026-12-01T10:00:00+25:00", "to": "2026-12-02"}, "from"),
    ],
)
def test_a_period_that_is_not_exactly_one_clear_period_is_refused_naming_the_field(params, field):
    with pytest.raises(ValidationError) as refused:
        periods.period(params)
    assert refused.value.field == field


def test_the_last_period_of_the_documented_years_ends_as_9999_begins():
    assert periods.period({"day": "9998-12-31"}).end == periods.period({"month": "9998-12"}).end
    with pytest.raises(ValidationError, match="outside the years 1 to 9998"):
        periods.period({"month": "9999-01"})


def test_a_big_statement_is_read_in_chunks_as_it_is_sent_never_all_at_once(service):
    """5,000 entries, read 1,000 at a time: when the first entries are sent, one chunk
    has been read; in all, six reads (the sixth finds the end), each at most 1,000."""
    seller = credited_seller(service, 0, "big")
    write_entries(service, seller["id"], [(n % 90, 1) for n in range(5000)])
    statement = statements.Statement(service.database, seller["id"], period(0, 100))
    assert statement.chunk == statements.CHUNK == 1000
    pieces = iter(statements.Rendered(statement, "csv"))
    next(pieces)  # the header and the opening line
    assert statement.reads == 0
    first = next(pieces)
    assert statement.reads == 1 and first.count(b"\r\n") == 1000
    rest = list(pieces)
    assert statement.reads == 6
    assert all(piece.count(b"\r\n") <= 1000 for piece in rest)
    assert rest[-1].startswith(b"closing,,,,5000,")


def test_a_statement_of_a_seller_that_does_not_exist_is_not_found(service):
    with pytest.raises(NotFound):
        service.statement(999, {"day": "2026-12-01"})


def test_a_statement_lists_every_known_kind_even_with_no_entries(service):
    seller = credited_seller(service, 0, "quiet")
    got = json.loads(b"".join(service.statement(seller["id"], {"month": "2026-12"})))
    assert got["entries"] == [] and got["opening_balance"] == got["closing_balance"] == 0
    assert got["totals"] == {kind: {"count": 0, "amount": 0} for kind in KINDS}


def test_a_closed_statement_ends_its_read_snapshot_and_writes_go_on(service):
    """A client that stops reading half-way: closing the body ends the snapshot, and the
    same thread can write (a snapshot left open would block it on PostgreSQL, and keep
    SQLite's WAL from being checkpointed)."""
    seller = credited_seller(service, 0, "gone")
    write_entries(service, seller["id"], [(n, 5) for n in range(30)])
    rendered = service.statement(seller["id"], {"from": at(0), "to": at(100)}, "csv")
    pieces = iter(rendered)
    next(pieces)
    rendered.close()
    write_entries(service, seller["id"], [(50, 7)])
    again = json.loads(b"".join(service.statement(seller["id"], {"from": at(0), "to": at(100)})))
    assert again["closing_balance"] == 30 * 5 + 7


def test_a_process_makes_two_statements_at_once_one_a_seller_and_refuses_more(service):
    """One seller's hundred statements at once (each ~6 us of the interpreter lock an
    entry) stalled every other seller's sales for a minute: a process makes at most
    statement_turns.AT_ONCE at once, one a seller; one more waits its turn (here in vain: 503),
    given back as each closes, whether read to its end, closed half-way, or never begun."""
    service.statement_turns.wait = 0.05  # (one thread: a wait for a turn ends unserved)
    sellers = [credited_seller(service, 1_000, f"s{n}")["id"] for n in range(3)]
    period = {"from": "2000-01-01", "to": "2100-01-01"}  # (one thread's snapshots: nested)
    first = service.statement(sellers[0], period)
    with pytest.raises(Unavailable, match="one at a time"):
        service.statement(sellers[0], period, "csv")
    second = service.statement(sellers[1], period)
    with pytest.raises(Unavailable, match="too many statements"):
        service.statement(sellers[2], period)
    assert json.loads(b"".join(second))["closing_balance"] == 1_000  # read to its end
    service.statement(sellers[2], period).close()  # never begun
    half = service.statement(sellers[2], period, "csv")
    next(iter(half))
    half.close()  # a client gone half-way
    with pytest.raises(NotFound):  # refused before it reads: its turn given back too
        service.statement(10_000, period)
    first.close()
    made = [service.statement(seller, period) for seller in sellers[1:]]
    for rendered in reversed(made):
        rendered.close()


def test_turns_are_given_in_the_order_asked_and_a_wait_is_bounded():
    """Two sellers asking again and again kept a third out: it was refused whenever both
    turns were taken (20 of its 22 tries). Turns are given in the order asked, to
    WAITING waiters at most, each for WAIT seconds at most (helper-94)."""
    turns = statement_turns.Turns(at_once=1, waiting=2, wait=30)
    given = []

    def ask(seller: int) -> threading.Thread:
        thread = threading.Thread(target=lambda: given.append((seller, turns.take(seller))))
        thread.start()
        deadline = time.monotonic() + 30
        while turns.queued() < len(threads) + 1:  # it waits in the queue (polled, bounded)
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        return thread

    threads: list[threading.Thread] = []
    first = turns.take(1)
    threads.append(ask(3))  # first in the queue
    with pytest.raises(Unavailable, match="one at a time"):
        turns.take(1)  # its own statement is being made: not queued
    threads.append(ask(2))
    with pytest.raises(Unavailable, match="too many"):
        turns.take(4)  # two wait already
    first()
    threads[0].join(30)
    assert [seller for seller, _ in given] == [3]  # not 2, which asked after it
    given[0][1]()
    threads[1].join(30)
    assert [seller for seller, _ in given] == [3, 2]
    hurried = statement_turns.Turns(at_once=1, wait=0.1)
    held = hurried.take(1)
    with pytest.raises(Unavailable, match="too many"):
        hurried.take(2)  # waited 0.1 s in vain
    held()
    hurried.take(2)()


def test_a_quarter_of_a_servers_threads_at_most_wait_for_a_statements_turn(config):
    """With --threads 4, eight waiting statements held every request thread for 5 s:
    /health and sales stalled (helper-95)."""
    from chargebox.services import Chargebox

    for threads, waiting in ((64, statement_turns.WAITING), (16, 4), (4, 1), (2, 0)):
        few = Chargebox(dataclasses.replace(config, threads=threads))
        assert few.statement_turns.waiting == waiting
        few.close()
    none_wait = statement_turns.Turns(at_once=1, waiting=0)
    given = none_wait.take(1)  # a free turn is given: only a wait is refused
    with pytest.raises(Unavailable, match="too many"):
        none_wait.take(2)
    given()
    none_wait.take(2)()


def test_a_statement_past_the_processs_turns_is_a_503_with_retry_after(service):
    from wsgiref.util import setup_testing_defaults

    from chargebox.web import create_app

    seller, key = service.create_seller("Ali")
    held = service.statement(seller["id"], {"from": at(0), "to": at(100)})  # its one turn
    environ = {"PATH_INFO": "/api/statements", "QUERY_STRING": "from=2000-01-01&to=2100-01-01",
               "HTTP_AUTHORIZATION": f"Bearer {key}"}  # fmt: skip
    setup_testing_defaults(environ)
    answered = {}
    app = create_app(service.config, service)
    body = b"".join(app(environ, lambda status, sent, *_: answered.update(s=status, h=dict(sent))))
    held.close()
    assert answered["s"].startswith("503") and answered["h"]["Retry-After"] == "1"
    assert json.loads(body)["error"]["code"] == "unavailable"


def test_a_statement_page_past_the_turns_says_why_in_its_language_and_when_to_retry(service):
    """A page's refusal said only "the service is busy" (its Persian for the new words
    never shown) and no Retry-After (helper-94's NIT)."""
    from wsgiref.util import setup_testing_defaults

    from chargebox.web import create_app

    seller, key = service.create_seller("Ali")
    session, _ = service.access.sign_in(key)
    held = service.statement(seller["id"], {"from": at(0), "to": at(100)})
    answered = {}
    environ = {"PATH_INFO": "/seller/statement", "QUERY_STRING": "month=2026-12",
               "HTTP_COOKIE": f"chargebox_session={session}; lang=fa"}  # fmt: skip
    setup_testing_defaults(environ)
    app = create_app(service.config, service)
    body = b"".join(app(environ, lambda status, sent, *_: answered.update(s=status, h=dict(sent))))
    held.close()
    assert answered["s"].startswith("503") and answered["h"]["Retry-After"] == "1"
    assert "صورت‌حسابی از این فروشنده هم‌اکنون در حال آماده شدن است" in body.decode()


def cli(config, *args: str) -> subprocess.CompletedProcess:
    where = ["--db", str(config.db_url or config.db_path)]
    if config.db_url:
        where += ["--data-dir", str(config.data_dir)]
    env = {**os.environ, "CHARGEBOX_ADMIN_TOKEN": config.admin_token}
    return subprocess.run(
        [sys.executable, "-m", "chargebox.cli", "statement", *args, *where],
        cwd=ROOT, env=env, capture_output=True, timeout=60,
    )  # fmt: skip


def test_the_cli_prints_the_statement_as_json_or_csv(service, config):
    seller = credited_seller(service, 0, "shell")
    write_entries(service, seller["id"], [(10, 1000), (20, -300), (30, 50)])
    sid = str(seller["id"])
    made = cli(config, "--seller", sid, "--from", at(0), "--to", at(25))
    assert made.returncode == 0, made.stderr
    got = json.loads(made.stdout)
    assert (got["opening_balance"], got["closing_balance"], got["count"]) == (0, 700, 2)
    csv_made = cli(config, "--seller", sid, "--day", "2026-12-01", "--csv")
    assert csv_made.returncode == 0, csv_made.stderr
    lines = csv_made.stdout.decode().splitlines()
    assert lines[0].startswith("line,id,kind,amount,balance_after")
    assert [line.split(",")[0] for line in lines[1:6]] == ["opening", *["entry"] * 3, "closing"]
    assert lines[5].startswith("closing,,,,750,")
    refused = cli(config, "--seller", sid, "--from", "2026-12-01T10:00")
    assert refused.returncode == 2 and b"exactly one period" in refused.stderr


@settings(max_examples=200, deadline=None)
@given(
    moments=st.lists(
        st.datetimes(min_value=datetime.datetime(1900, 1, 1),
                     max_value=datetime.datetime(2100, 1, 1), timezones=st.just(datetime.UTC)),
        min_size=1, max_size=20,
    )
)  # fmt: skip
def test_a_statements_fast_tehran_times_are_the_times_zoneinfo_gives(moments):
    """The per-minute shortcut (periods.Localiser) across Iran's summer times of old and
    the pre-1946 offset with seconds, one stamp after another as a statement reads them."""
    shown = periods.Localiser()
    for moment in sorted(moments):
        stored = clock.stamp(moment)
        assert shown(stored) == periods.local(stored)


def test_a_statement_reads_one_snapshot_while_sales_go_on(service):
    """Sales made (from another thread) while a statement is half sent are not in it, and
    its sums still close: every chunk reads the rows its opening's snapshot saw."""
    seller = credited_seller(service, 100_000, "busy")
    for n in range(6):
        service.sell(seller["id"], PHONE, 1000, f"before-{n}")
    when = {"from": "2000-01-01", "to": "2100-01-01"}
    statement = statements.Statement(service.database, seller["id"], periods.period(when), 2)
    pieces = iter(statements.Rendered(statement, "json"))
    text = next(pieces) + next(pieces)  # the head and the first chunk: the snapshot is taken
    sold = threading.Thread(
        target=lambda: [service.sell(seller["id"], PHONE, 500, f"during-{n}") for n in range(3)]
    )
    sold.start()
    sold.join(timeout=60)
    assert not sold.is_alive()
    got = json.loads(text + b"".join(pieces))
    assert got["count"] == 7 and got["closing_balance"] == 100_000 - 6 * 1000
    assert got["opening_balance"] + sum(e["amount"] for e in got["entries"]) == 94_000
    after = json.loads(b"".join(service.statement(seller["id"], when)))
    assert after["count"] == 10 and after["closing_balance"] == 94_000 - 1500


def test_a_statement_read_slowly_holds_no_snapshot_between_its_chunks(service, config):
    """One read snapshot for the whole statement: a client reading slowly (a year's
    statement on a phone) kept SQLite's WAL from being checkpointed, growing by 60 MB in
    8 s of writes, and PostgreSQL from vacuuming (helper-95). Each chunk is read in a
    snapshot of its own, the same rows (entries never change; later ones have higher ids)."""
    seller = credited_seller(service, 100_000, "slow")
    for _ in range(6):
        service.sell(seller["id"], PHONE, 1000)
    when = {"from": "2000-01-01", "to": "2100-01-01"}
    statement = statements.Statement(service.database, seller["id"], periods.period(when), 2)
    pieces = iter(statements.Rendered(statement, "json"))
    text = next(pieces) + next(pieces)  # the head and the first chunk; the client dawdles
    for _ in range(3):
        service.sell(seller["id"], PHONE, 500)
    with writable(database_of(config)) as conn:
        if config.db_url:
            idle = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%'"
            )
            assert idle.fetchone()[0] == 0
        else:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0  # no reader holds the log back
    got = json.loads(text + b"".join(pieces))
    assert got["count"] == 7 and got["closing_balance"] == 100_000 - 6 * 1000


def test_a_days_statement_reads_that_day_not_the_sellers_whole_ledger(service, config):
    """Schema version 5: a seller's entries are indexed by stamp. A statement walked the
    seller's whole ledger for its opening and to find the period (about a second per
    million entries); now it reads the period, and the seller's ends. 5 entries on a
    first day, 6,000 over the next two, 300 on a fourth: the first and the fourth days'
    statements are right, and on PostgreSQL no read of theirs reads more than twice the
    period and 100 rows (counted in each node of a plan; the old opening read 6,000)
    and no chunk is read along the stamps' index, with statistics taken before the
    fourth day (autovacuum off: a reviewer's plan then read and sorted the whole period
    for each chunk along it) and after; on SQLite each read goes along an index, the stamps' or the
    ledger's order."""
    # credited first, stamped on day 1 (not now: a run on day 3, 2026-12-04, found it there)
    seller = credited_seller(service, 0, "Busy")["id"]
    write_entries(service, seller, [(86400, 10**9)])
    write_entries(service, seller, [(n, -1) for n in range(5)])
    write_entries(service, seller, [(86400 + n * 28, -1) for n in range(6000)])
    if config.db_url:
        with writable(database_of(config)) as conn:
            conn.execute("ALTER TABLE ledger_entry SET (autovacuum_enabled = off)")
            conn.execute("ANALYZE ledger_entry")
    write_entries(service, seller, [(3 * 86400 + n, -2) for n in range(300)])
    reads, reader = [], service.queries.reader
    for day, opening, count in ((0, 0, 5), (3, 10**9 - 6005, 300)):
        when = period(day * 86400, (day + 1) * 86400)
        got = read(service, seller, when, chunk=64)
        assert (got["opening_balance"], got["count"]) == (opening, count)
        statement = statements.Statement(service.database, seller, when, chunk=50)
        (first, last), (start, end) = statement._ends, when.bounds
        order = "seq" if config.db_url else "id"
        reads += [
            (2 * count + 100, statements._SPAN.format(order=order), (seller,) * 4),
            (2 * count + 100, *statements.opening(reader, seller, start, first, order)),
            (2 * count + 100, statements._ENDS.format(order=order), (seller, start, end)),
            (None, statement._sql, (seller, first - 1, last, start, end, 50)),
        ]
        statement.close()
    reader = service.queries.reader
    if config.db_url:
        for fresh in (False, True):
            if fresh:
                with writable(database_of(config)) as conn:  # as autovacuum would, by now
                    conn.execute("ANALYZE ledger_entry")
            for most, sql, params in reads:
                plan = postgresql_plan(reader, sql, params)
                if most is None:  # a chunk: along the ledger order, never the stamps' index
                    assert "ledger_entry_seller_created_at" not in json.dumps(plan), plan
                else:
                    assert rows_read(plan) <= most, (fresh, sql, plan)
        return
    for n, (_, sql, params) in enumerate(reads):
        plan = sqlite_plan(reader, sql, params)
        if n % 4 < 3:
            assert "ledger_entry_seller_id_created_at_amount" in plan, (sql, plan)
        else:
            assert "ledger_entry_seller_id_id" in plan and "created_at" not in plan, plan


def _postgresql_plans(service, config, ran) -> list[dict]:
    """The plan PostgreSQL runs each statement of `ran` by, statistics fresh."""
    with writable(database_of(config)) as conn:
        conn.execute("ANALYZE sale")
    return [postgresql_plan(service.queries.reader, sql, params) for sql, params in ran]


def _sqlite_plans(service, ran) -> list[str]:
    return [sqlite_plan(service.queries.reader, sql, params) for sql, params in ran]


def test_a_search_of_sales_by_time_reads_the_range_not_every_sale_before_it(service, config):
    """Sales by time are found through their blocks of ids (sale_search): 3,000 sales over
    two days, then 5 on a third. The third day's search, and the first page of the second
    day's, everyone's and the seller's, each read the blocks (one statement) and walk from
    the block where the range begins (one more): at most that block's 1,024 sales and the
    page, not the 2,000-3,000 sales before them."""
    seller = credited_seller(service, 10**9, "Busy")["id"]
    write_entries(service, seller, [(n * 57, -1) for n in range(3000)])
    write_entries(service, seller, [(3 * 86400 + n, -2) for n in range(5)])
    third, second = (queries.Search(start=at(day * 86400), end=at((day + 1) * 86400))
                     for day in (3, 1))  # fmt: skip
    sold = [id_ for (id_,) in service.queries.reader.rows("SELECT id FROM sale ORDER BY id")]
    pages = []
    service.queries.sales(queries.Page())  # (PostgreSQL: the top settled, settled.py)

    def search_pages():
        for whose in (None, seller):
            pages.append(
                [sale["id"] for sale in service.queries.sales(queries.Page(5), whose, third)]
            )
            pages.append(
                [sale["id"] for sale in service.queries.sales(queries.Page(100), whose, second)]
            )

    ran = statements_read(service, search_pages)
    begins = 86400 // 57 + 1  # the first sale of the second day: the 1,517th
    assert pages == [sold[-5:], sold[begins : begins + 100]] * 2
    assert len(ran) == 8 and all("FROM sale_block" in sql for sql, _ in ran[::2]), ran
    if config.db_url:
        read = [rows_read(plan) for plan in _postgresql_plans(service, config, ran[1::2])]
        assert max(read) <= 1024 + 100, (read, ran)
        return
    for (sql, params), plan in zip(ran[1::2], _sqlite_plans(service, ran[1::2]), strict=True):
        walks = ("INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
                 "sale_seller_id_id (seller_id=? AND id>? AND id<?)")  # fmt: skip
        assert any(walk in plan for walk in walks), plan
        assert params[0] >= 1023, (sql, params)  # after it: from the range's block (the 2nd) on


def test_a_wide_search_by_time_pages_without_reading_its_whole_range(service, config):
    """A search whose range holds most of the history (a month of sales, page after page):
    3,000 sales in the range, three pages of 100, everyone's and the seller's: two
    statements a page (the blocks, the walk from the page's start), each walk along the
    primary key or the seller's index, not along the stamps."""
    seller = credited_seller(service, 10**9, "Busy")["id"]
    write_entries(service, seller, [(n * 57, -1) for n in range(3000)])
    search = queries.Search(start=at(0), end=at(4 * 86400))
    pages = []
    service.queries.sales(queries.Page())  # (PostgreSQL: the top settled, settled.py)

    def search_pages():
        for whose in (None, seller):
            after = 0
            for _ in range(3):
                page = service.queries.sales(queries.Page(100, after), whose, search)
                pages.append([sale["id"] for sale in page])
                after = page[-1]["id"]

    ran = statements_read(service, search_pages)
    sold = [id_ for (id_,) in service.queries.reader.rows("SELECT id FROM sale ORDER BY id")]
    assert pages == [sold[:100], sold[100:200], sold[200:300]] * 2
    assert len(ran) == 12 and all("FROM sale_block" in sql for sql, _ in ran[::2]), ran
    if config.db_url:
        read = [rows_read(plan) for plan in _postgresql_plans(service, config, ran[1::2])]
        assert max(read) <= 4 * 100, (read, ran)  # (its nodes, each counted: not 3,000)
    else:
        assert not [plan for plan in _sqlite_plans(service, ran) if "created_at" in plan]


def test_a_blocks_span_of_stamps_only_ever_widens_whoever_writes(service, config):
    """sale_block (schema version 7), which a search by time trusts to hold every sale in
    its block's span: the database's own trigger widens the span as each sale is made,
    however it is written, and refuses to narrow, move, delete or replace one, to its
    owner too.
    The PostgreSQL schema blocks ids as schema.BLOCK_BITS says."""
    seller = credited_seller(service, 10**6)["id"]
    made = [service.sell(seller, PHONE, 1_000).record for _ in range(2)]
    far = (5 << schema.BLOCK_BITS) + 3
    with writable(database_of(config)) as conn:
        conn.execute(
            "INSERT INTO sale (id, seller_id, phone, amount, balance_after, created_at)"
            " VALUES (?, ?, ?, 1, 0, ?)", (far, seller, PHONE, at(-100))
        )  # fmt: skip
        spans = "SELECT block, min(first_stamp), max(last_stamp) FROM sale_block GROUP BY block"
        assert conn.execute(f"{spans} ORDER BY block").fetchall() == [
            (0, made[0]["created_at"], made[1]["created_at"]), (5, at(-100), at(-100))
        ]  # fmt: skip
        refused = ["UPDATE sale_block SET first_stamp = last_stamp",
                   "UPDATE sale_block SET last_stamp = first_stamp",
                   "UPDATE sale_block SET block = block + 10",
                   "DELETE FROM sale_block",
                   "INSERT INTO sale_block SELECT block, slot, '9', '9' FROM sale_block"
                   " WHERE block = 0 ON CONFLICT (block, slot) DO UPDATE"
                   " SET first_stamp = excluded.first_stamp"]  # fmt: skip
        if config.db_url:
            refused.append("TRUNCATE sale_block")
        else:  # (a row replaced is deleted unseen by DELETE's trigger: its INSERT is refused)
            refused.append("INSERT OR REPLACE INTO sale_block VALUES (0, 0, '9', '9')")
        for sql in refused:
            with pytest.raises(REFUSED, match="a block of sales only ever widens"):
                conn.execute(sql)
        conn.execute("UPDATE sale_block SET first_stamp = ?", (at(-200),))  # wider: allowed
        assert conn.execute(f"{spans} ORDER BY block").fetchall() == [
            (0, at(-200), made[1]["created_at"]), (5, at(-200), at(-100))
        ]  # fmt: skip
    text = (ROOT / "chargebox" / "schema_postgresql.sql").read_text()
    assert set(re.findall(r"id >> (\d+)", text)) == {str(schema.BLOCK_BITS)}

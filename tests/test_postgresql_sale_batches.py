"""A batch of one seller's sales on PostgreSQL: one statement for them all, each answered
as if it had been sold alone (sale_batches.sell_together, idempotency._Together).

The batch is made as in test_postgresql_group_commit.py: one sale waits inline for a
row held by `gate`, so that the writer is busy while the sales under test queue, one
at a time and in order (counted in the writer's queue); the gate then lets go, and the
writer takes them all in its next transaction. The cases both backends share are in
test_sale_batches.py; here, what is PostgreSQL's own (a key another session records
as the batch writes it, the plan of the keys' look, the metrics).
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import time

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from chargebox import idempotency, metrics, postgresql, sale_batches
from chargebox.errors import NOT_COVERED, InsufficientCredit, SellerSuspended
from tests.support import counted, credited_seller, outcomes
from tests.test_postgresql_group_commit import balance, blocked_by

FUNDS = 10_000
A, B = "09120000001", "09120000002"


def queued_together(service, superuser: str, calls: list, meanwhile=None, then=None) -> list:
    """Run `calls` (each a callable) so that they queue, in order, for one batch; then
    `meanwhile(conn)` (a superuser session), then let the batch go, then `then()`. Each
    call's outcome, or the exception it raised; then how many transactions the writer
    committed."""
    writer = service.database.writer
    blocker = credited_seller(service, FUNDS, "blocker")["id"]
    batches = writer.batches
    with (
        concurrent.futures.ThreadPoolExecutor(len(calls) + 1) as pool,
        psycopg.connect(superuser) as gate,
    ):
        gate.execute("SELECT 1 FROM seller WHERE id = %s FOR UPDATE", (blocker,))
        inline = pool.submit(service.sell, blocker, "09129999999", 1_000)
        blocked_by(superuser, gate.info.backend_pid)
        futures = []
        for n, call in enumerate(calls, start=1):
            futures.append(pool.submit(call))
            deadline = time.monotonic() + 30
            while writer.queued() < n:  # queued, or it failed before it could queue
                assert not futures[-1].done(), futures[-1].exception()
                assert time.monotonic() < deadline, f"call {n} never queued"
                time.sleep(0.01)
        if meanwhile is not None:
            with psycopg.connect(superuser, autocommit=True) as conn:
                meanwhile(conn)
        gate.rollback()
        inline.result(timeout=30)
        if then is not None:
            then()
        answers = outcomes(futures)
    return [*answers, writer.batches - batches]


def test_a_key_another_session_records_as_the_batch_writes_it_is_replayed(pg_group_commit):
    """Another session has recorded the key but not committed when the batch looks: the
    batch's statement waits on the key's UNIQUE and fails when that session commits. The
    batch went side by side (no savepoint): its transaction is rolled back and it goes
    again, its run in a savepoint; the key is then found recorded and its copy replays,
    and the other sale sells, in one batch."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    taken = InsufficientCredit(NOT_COVERED, balance=5, amount=1_000)
    with psycopg.connect(superuser) as other:

        def record(_conn) -> None:
            other.execute(
                "INSERT INTO idempotency_record (seller_id, key, request_hash, error_code,"
                " error_message, created_at) VALUES (%s, 'raced', %s, %s, %s, now()::text)",
                (seller, idempotency.fingerprint(A, 1_000), taken.code, taken.message),
            )

        def commit_once_waited_for() -> None:
            blocked_by(superuser, other.info.backend_pid)
            other.commit()

        before = counted(service)
        other_sale, raced, _ = queued_together(
            service,
            superuser,
            [lambda: service.sell(seller, B, 500), lambda: service.sell(seller, A, 1_000, "raced")],
            meanwhile=record,
            then=commit_once_waited_for,
        )
    assert isinstance(raced, InsufficientCredit) and raced.message == taken.message
    assert other_sale.record["balance_after"] == FUNDS - 500
    # the gate's own sale (alone, side by side), then the two sales, again as a batch
    assert counted(service) == (before[0] + 3, before[1], before[2] + 1)
    assert balance(superuser, seller) == FUNDS - 500
    assert service.audit()["consistent"]


def test_a_copy_of_a_recorded_key_is_answered_while_its_seller_is_held(pg_group_commit):
    """A sale's key does not read its key before it queues; when the write cannot have the
    seller's row (another session holds it past the busy timeout), a copy of a key
    recorded earlier is still answered, from a read, not 503."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    sold = service.sell(seller, A, 1_000, "k")
    with psycopg.connect(superuser) as holder:
        holder.execute("SELECT 1 FROM seller WHERE id = %s FOR UPDATE", (seller,))
        again = service.sell(seller, A, 1_000, "k")
        holder.rollback()
    assert (again.replayed, again.record) == (True, sold.record)
    assert balance(superuser, seller) == FUNDS - 1_000


def test_a_batch_looks_each_key_up_in_the_unique_index_even_with_stale_statistics(
    pg_group_commit,
):
    """The batch's read of its keys (a column of the heads' statement: sale_batches._READ
    in _TOGETHER_HEAD, the statement as sent) stays one index look-up per (seller, key)
    however many keys the seller has, in the plan made for the values (custom) and in the
    one psycopg's prepared statement settles on (generic): statistics taken while the
    table was empty once led the planner to read all of a hot seller's keys and filter
    them (6.5 ms a batch at 7,000 keys under load, growing with the history)."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    wanted = "unnest(CAST(? AS bigint[]), CAST(? AS text[])) AS wanted(seller, key)"  # Write.table
    keys_read = idempotency.RECORDED_KEYS["postgresql"].format(
        wanted=wanted, table="idempotency_record"
    )
    read = sale_batches._READ.format(columns="r.seller, r.key", sql=keys_read)
    numbers = iter(range(1, 10))
    sql = re.sub(
        r"\?", lambda _: f"${next(numbers)}", sale_batches._TOGETHER_HEAD.format(read=read)
    )
    keys = "'{" + ",".join(f"k{n}" for n in range(1, 17)) + "}'"
    sellers = "'{" + ",".join([str(int(seller))] * 16) + "}'"
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute("ANALYZE idempotency_record")  # empty: the seller looks keyless
        conn.execute(
            "INSERT INTO idempotency_record (seller_id, key, request_hash, error_code,"
            " error_message, created_at) SELECT %s, 'k' || n, 'h', 'insufficient_credit',"
            " 'no', '2026-12-01T00:00:00Z' FROM generate_series(1, 5000) AS n",
            (seller,),
        )
        conn.execute(f"PREPARE heads (int, bigint[], text[], bigint[]) AS {sql}")
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn.execute(f"SET plan_cache_mode = {mode}")
            ((plan,),) = conn.execute(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE heads (1, {sellers}, {keys},"
                f" '{{{seller}}}')"
            ).fetchall()
            scans = list(_nodes_on(plan[0]["Plan"], "idempotency_record"))
            assert scans, plan
            for node in scans:  # an index scan on seller_id *and* key, nothing wider
                condition = node.get("Index Cond", "")
                assert "seller_id" in condition and "key" in condition, (mode, node)
                assert node["Actual Loops"] <= 16, (mode, node)  # once, not once a seller


def test_a_key_recorded_by_the_sellers_last_holder_is_read_with_the_heads(pg_group_commit):
    """Another session holds one of three sellers' rows, records a key and commits while
    the batch waits at the hold: the batch's heads statement (its snapshot taken after the
    hold) reads the record with the heads, and the copy replays it; the key's UNIQUE
    never fails the statement, and the batch is not redone run by run. (A reviewer's
    test of the keys read moving into the heads' statement.)"""
    service, superuser = pg_group_commit
    sellers = [credited_seller(service, FUNDS, f"s{n}")["id"] for n in range(3)]
    seller = sellers[1]
    taken = InsufficientCredit(NOT_COVERED, balance=5, amount=1_000)
    with psycopg.connect(superuser) as other:

        def hold_and_record(_conn) -> None:
            other.execute("SELECT 1 FROM seller WHERE id = %s FOR UPDATE", (seller,))
            other.execute(
                "INSERT INTO idempotency_record (seller_id, key, request_hash, error_code,"
                " error_message, created_at) VALUES (%s, 'held', %s, %s, %s, now()::text)",
                (seller, idempotency.fingerprint(A, 1_000), taken.code, taken.message),
            )

        def commit_once_waited_for() -> None:
            blocked_by(superuser, other.info.backend_pid)
            other.commit()

        redone = service.database.writer.redone
        *answers, transactions = queued_together(
            service,
            superuser,
            [
                lambda: service.sell(sellers[0], B, 100, "k0"),
                lambda: service.sell(seller, B, 500),
                lambda: service.sell(seller, A, 1_000, "held"),
                lambda: service.sell(sellers[2], B, 300, "k2"),
            ],
            meanwhile=hold_and_record,
            then=commit_once_waited_for,
        )
    _, other_sale, raced, _ = answers
    assert isinstance(raced, InsufficientCredit) and raced.message == taken.message, raced
    assert other_sale.record["balance_after"] == FUNDS - 500
    assert transactions == 2 and service.database.writer.redone == redone
    assert [balance(superuser, s) for s in sellers] == [FUNDS - 100, FUNDS - 500, FUNDS - 300]
    assert service.audit()["consistent"]


def _nodes_on(node: dict, table: str):
    if node.get("Relation Name") == table:
        yield node
    for child in node.get("Plans", []):
        yield from _nodes_on(child, table)


def test_the_metrics_count_each_run_by_how_it_was_written(pg_group_commit):
    """GET /metrics' `chargebox_write_runs_total`: a run written as one statement counts
    `together`; a run that could not go as one (here its seller was suspended while its
    sales waited) counts `separately`, whatever each of its sales then became; the batch
    it led, rolled back and applied again run by run, counts in
    `chargebox_write_batches_redone_total`."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    before = counted(service)
    metrics.start()
    try:
        queued_together(
            service,
            superuser,
            [lambda: service.sell(seller, A, 1_000), lambda: service.sell(seller, B, 1_000)],
            meanwhile=lambda conn: conn.execute(
                "UPDATE seller SET status = 'suspended', status_changes = status_changes + 1"
                " WHERE id = %s",
                (seller,),
            ),
        )
        text, _ = metrics.exposition({})
    finally:
        metrics.stop()
    samples = [
        sample
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    ]
    runs = {s.labels["written"]: s.value for s in samples if s.name == "chargebox_write_runs_total"}
    redone = [s.value for s in samples if s.name == "chargebox_write_batches_redone_total"]
    # The gate's own sale, inline, was a run of one, written together; the two waiting
    # sales were one run: tried side by side, rolled back, then it went separately.
    assert counted(service) == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert runs == {"together": 1.0, "separately": 1.0}
    assert redone == [1.0]


def test_the_runs_of_several_sellers_go_side_by_side_in_three_round_trips(
    pg_group_commit, monkeypatch
):
    """Sales of four sellers queued for one batch: each seller's run is one statement,
    and the runs go side by side (no savepoints), so the batch waits for PostgreSQL three
    times (the heads, the statements, COMMIT) whatever the number of sellers; run by run
    it would be twice a seller, and once more. It sends six statements: BEGIN, the lock
    timeout with the transaction's id, the hold, the heads with the keys' records, the
    sales, COMMIT (each send waits for the interpreter lock again, under load)."""
    service, superuser = pg_group_commit
    sellers = [credited_seller(service, FUNDS, f"s{n}")["id"] for n in range(4)]
    waits: dict[postgresql.Write, int] = {}  # each transaction's, in order
    sends: dict[postgresql.Write, list[str]] = {}
    checked, sent = postgresql.Write.checked, postgresql.Write._sent

    def counting(write) -> None:
        if write._unchecked:  # a real wait for what was sent: one round trip
            waits[write] = waits.get(write, 0) + 1
        checked(write)

    def listing(write, sql, params=()):
        sends.setdefault(write, []).append(sql.split()[0])
        return sent(write, sql, params)

    monkeypatch.setattr(postgresql.Write, "checked", counting)
    monkeypatch.setattr(postgresql.Write, "_sent", listing)
    writer = service.database.writer
    before = counted(service)
    calls = [
        lambda seller=seller, n=n: service.sell(seller, f"091200000{n:02d}", 100 * (n + 1), f"k{n}")
        for n, seller in enumerate(sellers)
    ]
    *answers, transactions = queued_together(service, superuser, calls)
    assert [answer.record["amount"] for answer in answers] == [100, 200, 300, 400]
    assert transactions == 2  # the gate's own sale, then the four sellers' in one
    assert counted(service) == (before[0] + 5, before[1], before[2])
    # the last two transactions: the gate's sale (a batch of one: three too), the four's
    assert list(waits.values())[-2:] == [3, 3]
    assert list(sends.values())[-1] == ["BEGIN", "SELECT", "SELECT", "WITH", "WITH", "COMMIT"]
    for n, seller in enumerate(sellers):
        assert balance(superuser, seller) == FUNDS - 100 * (n + 1)
    assert writer.side_by_side and service.audit()["consistent"]


def test_a_run_that_cannot_go_side_by_side_sends_the_batch_run_by_run(pg_group_commit):
    """Three sellers' sales queued for one batch; the middle one is suspended meanwhile:
    its run is `Separately`, so the batch side by side is rolled back and goes again, run
    by run: the others sell in one statement each, the suspended seller's sale is
    refused, and nothing else of the first attempt remains."""
    service, superuser = pg_group_commit
    sellers = [credited_seller(service, FUNDS, f"s{n}")["id"] for n in range(3)]
    before = counted(service)
    first, refused, last, transactions = queued_together(
        service,
        superuser,
        [lambda seller=seller: service.sell(seller, A, 1_000) for seller in sellers],
        meanwhile=lambda conn: conn.execute(
            "UPDATE seller SET status = 'suspended', status_changes = status_changes + 1"
            " WHERE id = %s",
            (sellers[1],),
        ),
    )
    assert first.record["balance_after"] == last.record["balance_after"] == FUNDS - 1_000
    assert isinstance(refused, SellerSuspended)
    assert transactions == 2
    # the gate's sale, then the two runs that went together; the middle one separately
    assert counted(service) == (before[0] + 3, before[1] + 1, before[2] + 1)
    assert [balance(superuser, seller) for seller in sellers] == [
        FUNDS - 1_000,
        FUNDS,
        FUNDS - 1_000,
    ]
    assert service.audit()["consistent"]


def test_a_batch_statement_that_leaves_a_seller_unmoved_fails_in_the_database(
    pg_group_commit, monkeypatch, caplog
):
    """Were a seller's balance no longer the one its sales were worked out from (the
    guarded UPDATE then moves nobody; here, made to miss), its sales and entries are still
    written, and the database itself fails the statement (I2), not only the check in
    Python after it. The batch is rolled back, goes run by run, fails again in its
    savepoint, and each sale goes alone: sold once, and the books agree."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    missing = sale_batches._TOGETHER.replace(
        "seller.balance = m.before", "seller.balance = m.before + 1"
    )
    assert missing != sale_batches._TOGETHER
    monkeypatch.setattr(sale_batches, "_TOGETHER", missing)
    writer, before = service.database.writer, counted(service)
    redone = writer.redone
    with caplog.at_level(logging.WARNING, logger="chargebox.writer"):
        sold = service.sell(seller, A, 1_000)
    assert sold.record["balance_after"] == balance(superuser, seller) == FUNDS - 1_000
    assert writer.redone == redone + 1
    assert "a batch of 1 runs goes run by run: IntegrityViolation" in caplog.text
    assert "a batch of 1 writes goes one at a time: IntegrityViolation" in caplog.text
    assert counted(service) == (before[0], before[1] + 1, before[2] + 1)  # the sale alone
    assert service.audit()["consistent"]

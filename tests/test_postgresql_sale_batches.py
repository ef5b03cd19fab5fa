"""A batch of one seller's sales on PostgreSQL: one statement for them all, each answered
as if it had been sold alone (sale_batches.sell_together, idempotency._Together).

The batch is made as in test_postgresql_group_commit.py: one sale waits inline for a
row held by `gate`, so that the writer is busy while the sales under test queue, one
at a time and in order (counted in the writer's queue); the gate then lets go, and the
writer takes them all in its next transaction. What a batch cannot sell as one (a
suspended seller, two copies of one key, a key another session recorded meanwhile)
goes one write at a time, as before batches; the writer counts both ways.
"""

from __future__ import annotations

import concurrent.futures
import time

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chargebox import idempotency, metrics
from chargebox.errors import (
    NOT_COVERED,
    IdempotencyKeyReused,
    InsufficientCredit,
    SellerSuspended,
)
from tests.support import credited_seller
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
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=30))
            except Exception as exc:
                outcomes.append(exc)
    return [*outcomes, writer.batches - batches]


def counted(service) -> tuple[int, int]:
    writer = service.database.writer
    return writer.together, writer.separately


def test_a_sellers_queued_sales_are_sold_in_one_statement_each_as_if_alone(pg_group_commit):
    """Five sales of one seller (as many as the service's write slots let wait), keyed and
    not, two refused for want of credit, one phone twice: one batch sells them in order;
    each answer, each key's record and replay, the phones' totals, the seals (the
    audit) are what five sales one at a time would leave."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    before = counted(service)
    *outcomes, transactions = queued_together(service, superuser, [
        lambda: service.sell(seller, A, 1_000),
        lambda: service.sell(seller, B, 2_000, "k1"),
        lambda: service.sell(seller, A, 8_000),  # 7,000 left: refused
        lambda: service.sell(seller, B, 9_000, "k2"),  # refused, and the key records it
        lambda: service.sell(seller, A, 7_000, "k3"),  # the last toman
    ])  # fmt: skip
    assert counted(service) == (before[0] + 5 + 1, before[1])  # the inline one went alone too
    assert transactions == 2
    sold = [outcome for outcome in outcomes if isinstance(outcome, idempotency.Outcome)]
    assert [o.record["balance_after"] for o in sold] == [9_000, 7_000, 0]
    assert [o.replayed for o in sold] == [False] * 3
    assert all(o.record["refunded_at"] is None for o in sold)
    ids = [o.record["id"] for o in sold]
    assert ids == sorted(ids)
    refusals = [outcomes[2], outcomes[3]]
    assert all(isinstance(r, InsufficientCredit) for r in refusals)
    assert (
        refusals[0].message == InsufficientCredit(NOT_COVERED, balance=7_000, amount=8_000).message
    )
    assert (
        refusals[1].message == InsufficientCredit(NOT_COVERED, balance=7_000, amount=9_000).message
    )
    # Every copy of a key gets the first outcome: the sale, or the refusal, again.
    again = service.sell(seller, B, 2_000, "k1")
    assert (again.replayed, again.record) == (True, sold[1].record)
    with pytest.raises(InsufficientCredit) as replayed:
        service.sell(seller, B, 9_000, "k2")
    assert replayed.value.message == refusals[1].message
    assert balance(superuser, seller) == 0
    with psycopg.connect(superuser) as conn:
        phones = dict(conn.execute("SELECT number, total_charged FROM phone").fetchall())
        seqs = conn.execute(
            "SELECT seq FROM ledger_entry WHERE seller_id = %s ORDER BY id", (seller,)
        ).fetchall()
    assert (phones[A], phones[B]) == (8_000, 2_000)
    assert [seq for (seq,) in seqs] == [1, 2, 3, 4]
    audit = service.audit(full=True)
    assert audit["consistent"], audit


def test_a_seller_suspended_while_its_sales_wait_refuses_each_of_them(pg_group_commit):
    """The batch finds the seller suspended: it goes one sale at a time, and each is
    refused as alone (no key records a suspension); nothing moves."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    before = counted(service)
    *outcomes, _ = queued_together(
        service,
        superuser,
        [lambda: service.sell(seller, A, 1_000), lambda: service.sell(seller, B, 1_000, "k")],
        meanwhile=lambda conn: conn.execute(
            "UPDATE seller SET status = 'suspended' WHERE id = %s", (seller,)
        ),
    )
    assert all(isinstance(outcome, SellerSuspended) for outcome in outcomes)
    assert counted(service) == (before[0] + 1, before[1] + 1)
    assert balance(superuser, seller) == FUNDS
    with psycopg.connect(superuser) as conn:
        assert conn.execute("SELECT count(*) FROM idempotency_record").fetchone() == (0,)


def test_two_copies_of_one_key_in_a_batch_sell_once(pg_group_commit):
    """Both copies queue before either is recorded (a copy looks for its key in the
    batch, not before): the first sells, the second replays it after COMMIT."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    before = counted(service)
    first, second, _ = queued_together(
        service, superuser, [lambda: service.sell(seller, A, 1_000, "twice")] * 2
    )
    assert first.record == second.record
    assert [first.replayed, second.replayed] == [False, True]
    assert counted(service) == (before[0] + 1 + 2, before[1])
    assert balance(superuser, seller) == FUNDS - 1_000
    assert service.audit()["consistent"]


def test_a_key_recorded_by_another_session_while_queued_gets_that_outcome(pg_group_commit):
    """Another server's copy records the key after this copy was queued: the batch finds
    it once the seller is held, sells the other sale, and this copy replays the
    recorded refusal."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    taken = InsufficientCredit(NOT_COVERED, balance=5, amount=1_000)

    def record(conn) -> None:
        conn.execute(
            "INSERT INTO idempotency_record (seller_id, key, request_hash, error_code,"
            " error_message, created_at) VALUES (%s, 'raced', %s, %s, %s, now()::text)",
            (seller, idempotency.fingerprint(A, 1_000), taken.code, taken.message),
        )

    before = counted(service)
    raced, other, _ = queued_together(
        service,
        superuser,
        [lambda: service.sell(seller, A, 1_000, "raced"), lambda: service.sell(seller, B, 500)],
        meanwhile=record,
    )
    assert isinstance(raced, InsufficientCredit) and raced.message == taken.message
    assert other.record["balance_after"] == FUNDS - 500
    assert counted(service) == (before[0] + 1 + 2, before[1])
    assert balance(superuser, seller) == FUNDS - 500
    assert service.audit()["consistent"]


def test_a_sellers_other_writes_between_its_sales_go_alone_and_split_the_batch(
    pg_group_commit,
):
    """A credit request queued between two sales of its seller: the three keep their
    order; each sale is a batch of its own (the writer never mixes kinds in one)."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    before = counted(service)
    first, request, second, transactions = queued_together(
        service,
        superuser,
        [
            lambda: service.sell(seller, A, 1_000),
            lambda: service.request_credit(seller, 5_000, "asked"),
            lambda: service.sell(seller, B, 2_000),
        ],
    )
    assert [first.record["balance_after"], second.record["balance_after"]] == [9_000, 7_000]
    assert request.record["status"] == "pending"
    assert counted(service) == (before[0] + 1 + 2, before[1])
    assert transactions == 2
    assert service.audit()["consistent"]


def test_a_key_another_session_records_as_the_batch_writes_it_is_replayed(pg_group_commit):
    """Another session has recorded the key but not committed when the batch looks: the
    batch's statement waits on the key's UNIQUE, fails when that session commits, and is
    undone; its sales then go one at a time: the copy replays, the other sale sells."""
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
    assert counted(service) == (before[0] + 1, before[1] + 1)
    assert balance(superuser, seller) == FUNDS - 500
    assert service.audit()["consistent"]


def test_a_second_copy_of_a_key_with_another_body_in_the_batch_is_refused(pg_group_commit):
    """Two requests with one key and different bodies in one batch: the first sells, the
    second is idempotency_key_reused (its body is not the key's first), as alone."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    first, second, _ = queued_together(
        service,
        superuser,
        [lambda: service.sell(seller, A, 1_000, "k"), lambda: service.sell(seller, A, 2_000, "k")],
    )
    assert first.record["balance_after"] == FUNDS - 1_000
    assert isinstance(second, IdempotencyKeyReused)
    assert balance(superuser, seller) == FUNDS - 1_000


def test_a_batch_that_sells_nothing_records_its_keys_refusals(pg_group_commit):
    """Every sale of the batch is refused for want of credit: nothing moves, and each key
    records its refusal, replayed to a later copy."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, 500)["id"]
    first, second, _ = queued_together(
        service,
        superuser,
        [lambda: service.sell(seller, A, 1_000, "a"), lambda: service.sell(seller, B, 2_000, "b")],
    )
    assert isinstance(first, InsufficientCredit) and isinstance(second, InsufficientCredit)
    with pytest.raises(InsufficientCredit) as again:
        service.sell(seller, B, 2_000, "b")
    assert again.value.message == second.message
    assert balance(superuser, seller) == 500
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
    """The batch's read of its keys stays one index look-up per key however many keys the
    seller has, in the plan made for the values (custom) and in the one psycopg's prepared
    statement settles on (generic): statistics taken while the table was empty once led
    the planner to read all of a hot seller's keys and filter them (6.5 ms a batch at
    7,000 keys under load, growing with the history)."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    wanted = "unnest(CAST(? AS text[])) AS wanted(key)"  # as Write.table makes it
    sql = idempotency.RECORDED_KEYS["postgresql"].format(wanted=wanted, table="idempotency_record")
    sql = sql.replace("?", "$%d")
    keys = "'{" + ",".join(f"k{n}" for n in range(1, 17)) + "}'"
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute("ANALYZE idempotency_record")  # empty: the seller looks keyless
        conn.execute(
            "INSERT INTO idempotency_record (seller_id, key, request_hash, error_code,"
            " error_message, created_at) SELECT %s, 'k' || n, 'h', 'insufficient_credit',"
            " 'no', '2026-12-01T00:00:00Z' FROM generate_series(1, 5000) AS n",
            (seller,),
        )
        conn.execute(f"PREPARE recorded (text[], bigint) AS {sql % (1, 2)}")
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn.execute(f"SET plan_cache_mode = {mode}")
            ((plan,),) = conn.execute(
                f"EXPLAIN (FORMAT JSON) EXECUTE recorded ({keys}, {int(seller)})"
            ).fetchall()
            scans = list(_nodes_on(plan[0]["Plan"], "idempotency_record"))
            assert scans, plan
            for node in scans:  # an index scan on seller_id *and* key, nothing wider
                assert "key" in node.get("Index Cond", ""), (mode, node)
                # the generic plan's condition names the parameter, the custom one the value
                assert ("$2" in node["Index Cond"]) == (mode == "force_generic_plan"), node


def _nodes_on(node: dict, table: str):
    if node.get("Relation Name") == table:
        yield node
    for child in node.get("Plans", []):
        yield from _nodes_on(child, table)


def test_the_metrics_count_each_run_by_how_it_was_written(pg_group_commit):
    """GET /metrics' `chargebox_write_runs_total`: a run written as one statement counts
    `together`; a run that could not go as one (here its seller was suspended while its
    sales waited) counts `separately`, whatever each of its sales then became."""
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
                "UPDATE seller SET status = 'suspended' WHERE id = %s", (seller,)
            ),
        )
        text, _ = metrics.exposition({})
    finally:
        metrics.stop()
    runs = {
        sample.labels["written"]: sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == "chargebox_write_runs_total"
    }
    # The gate's own sale, inline, was a run of one, written together; the two waiting
    # sales were one run, which went separately.
    assert counted(service) == (before[0] + 1, before[1] + 1)
    assert runs == {"together": 1.0, "separately": 1.0}

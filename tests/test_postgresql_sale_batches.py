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
import time

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from chargebox import idempotency, metrics
from chargebox.errors import NOT_COVERED, InsufficientCredit
from tests.support import credited_seller, outcomes
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


def counted(service) -> tuple[int, int]:
    writer = service.database.writer
    return writer.together, writer.separately


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

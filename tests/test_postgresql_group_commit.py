"""Group commit on PostgreSQL: a batch that meets a deadlock, and a batch that loses its server.

A batch is made deterministically: one sale waits inline for a seller's row held by
another connection (`gate`), so the writer is busy and two more sales queue for its
next batch (counted in the writer's queue); the gate then lets the first sale commit.
The batch takes the lower seller's row first (sorted), then waits for the higher one,
held by `holder`, a superuser session whose own deadlock check comes last. Waits are
polled in pg_stat_activity (`pg_blocking_pids`), never slept on and hoped.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import psycopg
import pytest

from chargebox import ledger, metrics
from chargebox.clock import now
from chargebox.errors import IntegrityViolation, Unavailable
from tests.support import credited_seller

FUNDS = 10_000


def blocked_by(url: str, pid: int) -> list[int]:
    """Until some session waits for `pid`'s locks: their pids (polled; the test's timeout
    bounds it)."""
    with psycopg.connect(url, autocommit=True) as watcher:
        while True:
            found = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)
            ).fetchall()
            if found:
                return [row[0] for row in found]
            time.sleep(0.02)


def balance(url: str, seller_id: int) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT balance FROM seller WHERE id = %s", (seller_id,)).fetchone()[0]


def batch_waiting_for_holder(service, superuser: str, pool, holder, gate):
    """Sales for sellers `low` and `high` in one batch, holding low's row and waiting for
    high's (held by `holder`); returns (low, high, the three sales' futures, the writer's
    count of transactions before them)."""
    blocker, low, high = (credited_seller(service, FUNDS)["id"] for _ in range(3))
    assert blocker < low < high
    holder.execute("SELECT 1 FROM seller WHERE id = %s FOR UPDATE", (high,))
    gate.execute("SELECT 1 FROM seller WHERE id = %s FOR UPDATE", (blocker,))
    before = service.database.writer.batches
    inline = pool.submit(service.sell, blocker, "09120000001", 1_000)
    blocked_by(superuser, gate.info.backend_pid)
    # Submitted high first: the batch still takes low's row first (ordered by seller).
    queued = [pool.submit(service.sell, high, "09120000003", 1_000)]
    while service.database.writer.queued() < 1:
        time.sleep(0.01)
    queued.append(pool.submit(service.sell, low, "09120000002", 1_000))
    while service.database.writer.queued() < 2:
        time.sleep(0.01)
    gate.rollback()  # the inline sale commits; the writer takes both as one batch
    inline.result(timeout=30)
    blocked_by(superuser, holder.info.backend_pid)
    assert balance(superuser, low) == FUNDS  # taken in the open batch, not committed
    return low, high, [inline, *queued], before


@pytest.mark.parametrize("side_by_side", [False, True], ids=["run by run", "side by side"])
def test_a_batch_chosen_as_a_deadlocks_victim_commits_what_it_can_and_retries_the_rest(
    pg_group_commit, side_by_side, monkeypatch
):
    """The holder asks for low's row: a deadlock, which the batch's session finds first.
    Run by run (each in its savepoint: what a batch that could not go side by side does),
    only its sale for high is undone; low's commits, and high's is tried again once the
    holder lets go. Side by side (no savepoints, the default), the whole transaction is
    undone, the holder is granted low's row with nothing of the batch committed, and the
    batch goes again run by run once the holder lets go. Either way every sale is
    answered 201, none 503, and the books add up.

    Side by side, the redo is held (at its count, between the rollback and the redo)
    until the balances are read: a row's waiter can be overtaken by a new locker once
    the holding transaction ends (PostgreSQL takes the tuple's lock only to wait), so
    the redo, sent at once, may take low's row before the holder is granted it, and
    commit low's sale in a second deadlock (seen in CI)."""
    service, superuser = pg_group_commit
    writer = service.database.writer
    writer.side_by_side = side_by_side
    read = threading.Event()
    counted = metrics.batch_redone
    monkeypatch.setattr(metrics, "batch_redone", lambda: (read.wait(30), counted()))
    with (
        concurrent.futures.ThreadPoolExecutor(4) as pool,
        psycopg.connect(superuser) as holder,
        psycopg.connect(superuser) as gate,
    ):
        holder.execute("SET deadlock_timeout = '60s'")
        low, high, sales, before = batch_waiting_for_holder(service, superuser, pool, holder, gate)
        redone = writer.redone
        closing = pool.submit(
            holder.execute, "SELECT 1 FROM seller WHERE id = %s FOR UPDATE", (low,)
        )
        closing.result(timeout=30)  # granted: the batch committed without its victim, or none
        low_meanwhile = FUNDS if side_by_side else FUNDS - 1_000
        assert (balance(superuser, low), balance(superuser, high)) == (low_meanwhile, FUNDS)
        read.set()
        holder.rollback()
        outcomes = [sale.result(timeout=30) for sale in sales]
    assert all(outcome.record["amount"] == 1_000 for outcome in outcomes)
    assert (balance(superuser, low), balance(superuser, high)) == (FUNDS - 1_000,) * 2
    assert writer.redone == redone + (1 if side_by_side else 0)
    # run by run: the inline sale, the batch that lost its victim, and the victim's own;
    # side by side: the inline sale, and the batch once it went again
    assert writer.batches - before == (2 if side_by_side else 3)
    assert service.audit()["consistent"]


def test_a_batch_that_loses_its_server_is_503_for_every_sale_in_it(pg_group_commit):
    """The batch's session is terminated while it waits: both sales of the batch are 503,
    neither is in the books (nothing was answered before COMMIT), and the next sale
    opens a new connection and sells."""
    service, superuser = pg_group_commit
    with (
        concurrent.futures.ThreadPoolExecutor(4) as pool,
        psycopg.connect(superuser) as holder,
        psycopg.connect(superuser) as gate,
    ):
        low, high, sales, _ = batch_waiting_for_holder(service, superuser, pool, holder, gate)
        (batch_pid,) = blocked_by(superuser, holder.info.backend_pid)
        with psycopg.connect(superuser, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (batch_pid,))
        for sale in sales[1:]:
            with pytest.raises(Unavailable):
                sale.result(timeout=30)
        holder.rollback()
    assert (balance(superuser, low), balance(superuser, high)) == (FUNDS, FUNDS)
    assert service.sell(low, "09120000002", 1_000).record["balance_after"] == FUNDS - 1_000
    assert service.audit()["consistent"]


def test_a_statement_sent_down_the_pipeline_fails_its_own_write_not_the_next(pg_group_commit):
    """A batch's statements go down one pipeline and most are not waited for (Write.send):
    a write whose sent statement is refused learns it at the end of its own savepoint,
    and only it is undone; a write that fails in Python while a refusal is still on its
    way is undone too, and the pipeline takes the next write; both sales commit."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    refused = "INSERT INTO phone (number, total_charged, created_at) VALUES (?, 0, ?)"
    outcomes = []
    with service.database.transaction() as write:
        for part in ("refused", "sale", "python", "sale"):
            try:
                with write.savepoint():
                    if part == "refused":
                        write.send(refused, ("not a number", now()))  # its CHECK refuses
                    elif part == "python":  # before its refusal has come back
                        write.send(refused, ("not a number either", now()))
                        raise LookupError("after sending")
                    else:
                        outcomes.append(ledger.sell(write, seller, "09120000001", 1_000, now()))
            except (IntegrityViolation, LookupError) as failed:
                outcomes.append(type(failed).__name__)
    assert [o if isinstance(o, str) else o["balance_after"] for o in outcomes] == [
        "IntegrityViolation", FUNDS - 1_000, "LookupError", FUNDS - 2_000,
    ]  # fmt: skip
    with psycopg.connect(superuser) as conn:
        phones = conn.execute("SELECT number FROM phone ORDER BY number").fetchall()
    assert phones == [("09120000001",)]
    assert balance(superuser, seller) == FUNDS - 2_000
    assert service.audit()["consistent"]

"""The use cases on PostgreSQL, with the app role's rights, on a real cluster.

The same `Chargebox` as on SQLite, given `--db postgresql://...`: the customer's
scenario, keys, approvals and overspending races from threads that each hold
their own connection (as several app servers would), and a real server process
answering over HTTP. The books are re-added afterwards from a fresh connection.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import threading
import time

import psycopg
import pytest
import requests

from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.errors import (
    IdempotencyKeyReused,
    InsufficientCredit,
    NotPending,
    TooManyPendingRequests,
    Unavailable,
)
from chargebox.queries import Page
from chargebox.services import Chargebox
from tests import pg_cluster
from tests.support import ADMIN_TOKEN, credited_seller

PHONE = "09121234567"
_names = itertools.count()


@pytest.fixture
def database(postgresql_cluster, tmp_path):
    """A database made by `init-db --grant-to` as its owner: (app URL, data dir, owner URL)."""
    data = tmp_path / "data"
    made = pg_cluster.initialised(postgresql_cluster, "svc", data)
    return made.app_url, data, made.owner_url


@pytest.fixture
def config(database):
    app_url, data, _ = database
    return prepare(Config(db_url=app_url, data_dir=data, admin_token=ADMIN_TOKEN, threads=32))


@pytest.fixture
def service(config):
    made = Chargebox(config)
    yield made
    made.close()


def books(url: str) -> dict[int, int]:
    """Every seller's balance, checked against its re-added ledger, from a fresh connection."""
    with psycopg.connect(url) as conn:
        balances = dict(conn.execute("SELECT id, balance FROM seller").fetchall())
        for seller_id, balance in balances.items():
            entries = conn.execute(
                "SELECT seq, amount, balance_after FROM ledger_entry WHERE seller_id = %s"
                " ORDER BY seq",
                (seller_id,),
            ).fetchall()
            running = 0
            for number, (seq, amount, after) in enumerate(entries, 1):
                running += amount
                assert (seq, after) == (number, running), (seller_id, seq)
            assert balance == running >= 0
    return balances


def in_threads(count: int, job) -> list:
    """`job(n)` in `count` threads started together; what each returned or raised."""
    barrier = threading.Barrier(count)

    def run(n):
        barrier.wait()
        try:
            return job(n)
        except Exception as exc:  # the outcome under test
            return exc

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_the_customers_scenario_reconciles_on_postgresql(service, config):
    """2 sellers, 10 credits of 100,000, 1,000 sales: the balances are what they must be."""
    sellers = [service.create_seller(name)[0]["id"] for name in ("Ali", "Sara")]
    for n in range(10):
        request = service.request_credit(sellers[n % 2], 100_000).record
        service.approve_credit_request(request["id"])
    for n in range(1_000):
        service.sell(sellers[n % 2], PHONE, 900 if n % 2 else 700)
    assert books(config.db_url) == {
        sellers[0]: 500_000 - 500 * 700,
        sellers[1]: 500_000 - 500 * 900,
    }
    report = service.audit()
    assert report["consistent"], report["problems"]
    assert report["totals"]["sales"] == 1_000 and service.database.missing_triggers() == []


def test_a_key_replays_its_first_outcome_and_refuses_another_body(service):
    seller = credited_seller(service, 5_000)
    first = service.sell(seller["id"], PHONE, 3_000, "k-1")
    again = service.sell(seller["id"], PHONE, 3_000, "k-1")
    assert (again.record, again.replayed) == (first.record, True)
    with pytest.raises(IdempotencyKeyReused):
        service.sell(seller["id"], PHONE, 1_000, "k-1")
    with pytest.raises(InsufficientCredit):
        service.sell(seller["id"], PHONE, 3_000, "k-2")
    with pytest.raises(InsufficientCredit) as replayed:
        service.sell(seller["id"], PHONE, 3_000, "k-2")
    assert replayed.value.replayed is True


def test_sixteen_racing_approvals_credit_once(service, config):
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 70_000).record
    outcomes = in_threads(16, lambda n: service.approve_credit_request(request["id"]))
    assert sum(isinstance(o, dict) for o in outcomes) == 1
    assert all(isinstance(o, (dict, NotPending)) for o in outcomes), outcomes
    assert books(config.db_url) == {seller["id"]: 70_000}


def test_racing_sales_sell_exactly_what_the_balance_covers(service, config):
    seller = credited_seller(service, 50_000)

    def sell_ten(n):
        sold = 0
        for _ in range(10):
            try:
                service.sell(seller["id"], PHONE, 1_000)
                sold += 1
            except InsufficientCredit:
                pass
        return sold

    assert sum(in_threads(16, sell_ten)) == 50
    assert books(config.db_url)[seller["id"]] == 0


@pytest.mark.parametrize("group_commit", [False, True], ids=["own-transactions", "group-commit"])
def test_twenty_racing_copies_of_one_key_sell_once(config, database, group_commit):
    """Copies meet in PostgreSQL, not in a lock of this process: the key's UNIQUE decides.

    The seller's row is held from another connection until every copy waits: in its own
    transaction for the row (counted in pg_locks), or, with group commit, one copy there
    and the 19 others queued for the writer's next batch, which meets the first's key.
    """
    racing = Chargebox(dataclasses.replace(config, group_commit=group_commit))
    try:
        seller = credited_seller(racing, 100_000)
        with psycopg.connect(database[2]) as holder:
            holder.execute("SELECT 1 FROM seller WHERE id = %s FOR UPDATE", (seller["id"],))
            with concurrent.futures.ThreadPoolExecutor(20) as pool:
                copies = [
                    pool.submit(racing.sell, seller["id"], PHONE, 1_000, "one-order")
                    for _ in range(20)
                ]
                waiting_for_the_row(database[2], 1 if group_commit else 20)
                while group_commit and racing.database.writer.queued() < 19:
                    time.sleep(0.02)  # polled, bounded by the test's timeout
                holder.rollback()
                outcomes = [copy.result() for copy in copies]
    finally:
        racing.close()
    assert len({o.record["id"] for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    assert books(config.db_url)[seller["id"]] == 99_000


def waiting_for_the_row(url: str, count: int) -> None:
    """Until `count` sessions wait for a lock (polled, bounded by the test's timeout)."""
    with psycopg.connect(url, autocommit=True) as watcher:
        while True:
            (waiting,) = watcher.execute(
                "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted"
            ).fetchone()
            if waiting >= count:
                return
            time.sleep(0.02)


def test_racing_credit_requests_stop_at_the_cap(config):
    capped = Chargebox(dataclasses.replace(config, max_pending_requests=5))
    try:
        seller, _ = capped.create_seller("Ali")
        outcomes = in_threads(20, lambda n: capped.request_credit(seller["id"], 1_000 + n))
        assert sum(isinstance(o, TooManyPendingRequests) for o in outcomes) == 15
        with psycopg.connect(config.db_url) as conn:
            assert conn.execute("SELECT count(*) FROM credit_request").fetchone() == (5,)
    finally:
        capped.close()


def test_a_row_lock_held_elsewhere_is_503_at_the_busy_timeout(config, database):
    quick = Chargebox(dataclasses.replace(config, busy_timeout_ms=500))
    try:
        seller = credited_seller(quick, 10_000)
        with psycopg.connect(database[2]) as holder:
            holder.execute("SELECT 1 FROM seller WHERE id = %s FOR UPDATE", (seller["id"],))
            with pytest.raises(Unavailable):
                quick.sell(seller["id"], PHONE, 1_000)
        assert quick.sell(seller["id"], PHONE, 1_000).record["balance_after"] == 9_000
    finally:
        quick.close()


def test_a_write_started_inside_a_write_fails_at_once(service):
    with pytest.raises(AssertionError, match="inside a write"):
        service.database.write(lambda write: service.database.write(lambda inner: None))


def test_a_server_process_on_postgresql_sells_over_http(database, tmp_path):
    app_url, data, _ = database
    with pg_cluster.serving(app_url, data, tmp_path / "server.log", ADMIN_TOKEN, processes=2) as (
        url,
        _,
        line,
    ):
        assert "-secret" not in line and ":***@" in line, "the password reached the log"
        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        made = admin.post(url + "/api/sellers", json={"name": "Ali"}, timeout=10).json()
        shop = requests.Session()
        shop.headers["Authorization"] = f"Bearer {made['api_key']}"
        asked = shop.post(url + "/api/credit-requests", json={"amount": 10_000}, timeout=10)
        admin.post(url + f"/api/credit-requests/{asked.json()['id']}/approve", timeout=10)
        sold = shop.post(
            url + "/api/sales",
            json={"phone": "۰۹۱۲۱۲۳۴۵۶۷", "amount": 4_000},
            headers={"Idempotency-Key": "web-1"},
            timeout=10,
        )
        assert sold.status_code == 201 and sold.json()["balance_after"] == 6_000, sold.text
        assert admin.get(url + "/api/audit", timeout=30).json()["consistent"] is True
    assert books(app_url) == {made["id"]: 6_000}


def test_closing_the_database_closes_the_connections_of_every_thread(config, database):
    """Threads each open a connection; close() must end them all, not only its own."""
    used = Chargebox(config)
    in_threads(8, lambda n: used.queries.sellers(Page()))
    with psycopg.connect(database[2], autocommit=True) as watch:  # a fresh view per query
        role = config.db_url.split("://")[1].split(":")[0]

        def sessions() -> int:
            query = "SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
            return watch.execute(query, (role,)).fetchone()[0]

        assert sessions() >= 8
        used.close()
        deadline = time.monotonic() + 10
        while sessions() and time.monotonic() < deadline:
            time.sleep(0.05)  # the server notices closed sockets a moment later: polled
        assert sessions() == 0


def test_a_connection_found_closed_is_forgotten_as_it_is_replaced(service):
    """A connection lost on a path that does not drop it (a snapshot's) is replaced at its
    thread's next use, and no longer kept among those `close()` closes: each one lost was
    kept for the process's life."""
    database = service.database
    lost = database.connection()
    lost.close()  # as a lost server leaves it
    replaced = database.connection()
    assert replaced is not lost and not replaced.closed
    assert lost not in database._opened and replaced in database._opened

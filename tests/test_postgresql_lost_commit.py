"""A COMMIT whose answer is lost (postgresql.Database.transaction, lost_commit.py).

A 503 says that nothing changed. Here the app server's connection breaks after its
COMMIT was sent, while PostgreSQL is still committing: a deferred trigger added for
the test makes COMMIT wait for an advisory lock the test holds, and the test shuts
the service's socket down under it. What the transaction then did is read from a new
connection before the client is answered: committed, the sale is answered as sold;
rolled back (its backend terminated, or stopped by the service once the write's
deadline has passed), 503, and nothing was sold. Waits are polled in
pg_stat_activity, never slept on and hoped.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import time

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chargebox import metrics
from chargebox.errors import Unavailable
from tests.support import credited_seller
from tests.test_postgresql_group_commit import balance

FUNDS = 10_000
LOCK = 4242
COMMIT_WAITS = (
    "CREATE FUNCTION test_commit_waits() RETURNS trigger LANGUAGE plpgsql AS $$"
    f" BEGIN PERFORM pg_advisory_xact_lock({LOCK}); RETURN NULL; END; $$",
    "CREATE CONSTRAINT TRIGGER test_commit_waits AFTER INSERT ON sale"
    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_commit_waits()",
)


@pytest.fixture
def commit_waits(pg_group_commit):
    """The service, a superuser URL, the seller, and a session holding the lock that
    a COMMIT which made a sale waits for."""
    service, superuser = pg_group_commit
    seller = credited_seller(service, FUNDS)["id"]
    with psycopg.connect(superuser, autocommit=True) as conn:
        for statement in COMMIT_WAITS:
            conn.execute(statement)
    metrics.start()
    try:
        with psycopg.connect(superuser, autocommit=True) as gate:
            gate.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
            yield service, superuser, seller, gate
    finally:
        metrics.stop()


def lost_commits() -> dict[str, float]:
    """`chargebox_lost_commits_total` by outcome, from this process's scrape."""
    text, _ = metrics.exposition({})
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == "chargebox_lost_commits_total"
    }


def committing(superuser: str, sold: concurrent.futures.Future) -> int:
    """The pid of the backend whose COMMIT waits for the test's lock or sleeps (polled,
    while the sale has not been answered otherwise)."""
    with psycopg.connect(superuser, autocommit=True) as watcher:
        while True:
            found = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE query = 'COMMIT'"
                " AND wait_event IN ('advisory', 'PgSleep')"
            ).fetchall()
            if found:
                return found[0][0]
            assert not sold.done(), sold.exception()
            time.sleep(0.02)


def cut(service, pid: int) -> None:
    """Shut down the service's socket to backend `pid`, as a network cut would."""
    (conn,) = [c for c in service.database._opened if c.info.backend_pid == pid]
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()


def sales_of(superuser: str, seller: int) -> int:
    with psycopg.connect(superuser) as conn:
        return conn.execute("SELECT count(*) FROM sale WHERE seller_id = %s", (seller,)).fetchone()[
            0
        ]


def audited_without_the_tests_trigger(service, superuser: str) -> bool:
    """Whether the books are clean: the audit names the test's own trigger (I5: the schema
    does not make it) and nothing else, and nothing once it is dropped."""
    named = [problem["message"] for problem in service.audit()["problems"]]
    assert len(named) == 1 and named[0].startswith("trigger sale.test_commit_waits is not"), named
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute("DROP TRIGGER test_commit_waits ON sale")
    return service.audit()["consistent"]


def lost_while(service, superuser: str, seller: int, then) -> concurrent.futures.Future:
    """A sale whose COMMIT's answer is lost; `then(pid)` once the socket is cut."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sold = pool.submit(service.sell, seller, "09120000001", 1_000)
        pid = committing(superuser, sold)
        cut(service, pid)
        then(pid)
        concurrent.futures.wait([sold], timeout=60)
    return sold


def test_a_commit_that_went_through_is_answered_as_done(commit_waits, caplog):
    service, superuser, seller, gate = commit_waits
    sold = lost_while(service, superuser, seller,
                      lambda _: gate.execute("SELECT pg_advisory_unlock(%s)", (LOCK,)))  # fmt: skip
    assert sold.result().record["balance_after"] == FUNDS - 1_000
    assert balance(superuser, seller) == FUNDS - 1_000 and sales_of(superuser, seller) == 1
    assert "a COMMIT's answer was lost; transaction" in caplog.text and "committed" in caplog.text
    assert lost_commits() == {"committed": 1.0}
    assert service.sell(seller, "09120000002", 500).record["balance_after"] == FUNDS - 1_500
    assert audited_without_the_tests_trigger(service, superuser)


def test_a_commit_that_was_rolled_back_is_answered_503_and_sold_nothing(commit_waits, caplog):
    service, superuser, seller, gate = commit_waits
    stop = "SELECT pg_terminate_backend(%s)"
    sold = lost_while(service, superuser, seller, lambda pid: gate.execute(stop, (pid,)))
    with pytest.raises(Unavailable):
        sold.result()
    assert balance(superuser, seller) == FUNDS and sales_of(superuser, seller) == 0
    assert lost_commits() == {"aborted": 1.0} and "aborted" in caplog.text
    assert audited_without_the_tests_trigger(service, superuser)


def test_a_commit_still_running_at_the_deadline_is_stopped_and_answered_503(commit_waits, caplog):
    """Its backend still runs the COMMIT at the write's deadline (it sleeps, which no
    lock_timeout ends): the service stops it, reads that it rolled back, and answers
    503; nothing was sold."""
    service, superuser, seller, _ = commit_waits
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION test_commit_waits() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END; $$"
        )
    service.database.timeout = 2.0  # the write's deadline
    sold = lost_while(service, superuser, seller, lambda _: None)
    with pytest.raises(Unavailable):
        sold.result()
    assert balance(superuser, seller) == FUNDS and sales_of(superuser, seller) == 0
    assert lost_commits() == {"aborted": 1.0} and "aborted" in caplog.text

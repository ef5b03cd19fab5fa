"""PostgreSQL: a page never passes a row still to come (chargebox/settled.py).

Two app servers on one database: server A's sale takes its ids, then waits for a
phone's row held by `gate` (so its transaction stays open with the lower ids);
server B's sale, for another seller, takes higher ids and commits. A page read now
must not show B's sale without A's: a client would pass B's id as its next
`after_id` and never see A's. So the page waits for A's transaction to end: it is
503 while A cannot end (the gate held past the reader's busy timeout), and both
sales, in id order, once it has.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses

import psycopg
import pytest

from chargebox.errors import LockTimeout
from chargebox.queries import Page
from chargebox.services import Chargebox
from tests.support import credited_seller
from tests.test_postgresql_group_commit import FUNDS, blocked_by

A_NUMBER, B_NUMBER = "09120000001", "09120000002"


def test_a_page_waits_for_a_lower_id_still_in_flight_on_another_server(pg_group_commit):
    a, superuser = pg_group_commit
    b = Chargebox(dataclasses.replace(a.config, busy_timeout_ms=500))
    try:
        low, high = (credited_seller(a, FUNDS)["id"] for _ in range(2))
        first = a.sell(low, A_NUMBER, 1_000).record["id"]  # the phone's row now exists
        entries = b.queries.ledger(Page(limit=1000))[-1]["id"]
        with (
            concurrent.futures.ThreadPoolExecutor(1) as pool,
            psycopg.connect(superuser) as gate,
        ):
            gate.execute("SELECT 1 FROM phone WHERE number = %s FOR UPDATE", (A_NUMBER,))
            in_flight = pool.submit(a.sell, low, A_NUMBER, 1_000)
            blocked_by(superuser, gate.info.backend_pid)  # A holds its ids, not committed
            later = b.sell(high, B_NUMBER, 1_000).record["id"]
            assert later > first + 1  # A's sale took the id between
            for read in (
                lambda: b.queries.sales(Page(after_id=first)),
                lambda: b.queries.sales(Page(after_id=first), seller_id=high),
                lambda: b.queries.ledger(Page(after_id=entries)),
            ):
                with pytest.raises(LockTimeout):
                    read()
            gate.rollback()
            middle = in_flight.result(timeout=30).record["id"]
        assert [s["id"] for s in b.queries.sales(Page(after_id=first))] == [middle, later]
        assert [e["kind"] for e in b.queries.ledger(Page(after_id=entries))] == ["sale"] * 2
    finally:
        b.close()


def test_a_page_with_nothing_in_flight_shows_every_committed_row(pg_group_commit):
    """The cap is the sequence's last id: rows up to it are all there (none held back),
    on a fresh database and after sales."""
    service, _ = pg_group_commit
    assert service.queries.sales(Page()) == []
    seller = credited_seller(service, FUNDS)["id"]
    sold = [service.sell(seller, A_NUMBER, 100).record["id"] for _ in range(3)]
    assert [s["id"] for s in service.queries.sales(Page())] == sold
    assert [s["id"] for s in service.queries.sales(Page(after_id=sold[0]))] == sold[1:]

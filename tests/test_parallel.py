"""Concurrency against a real server process, from threads and from processes.

Each test starts its workers on a barrier so the requests really overlap, then
checks the books from a fresh sqlite3 connection (`reconciled_balances`), through
`/api/audit`, and with `chargebox audit` on the database file.
"""

from __future__ import annotations

import pytest

from tests.support import ADMIN_TOKEN, cli_audit, new_seller, reconciled_balances
from tests.workloads import (
    THREADS_FOR_HELD_COPIES,
    approve_once,
    keyed_post,
    mixed,
    run_parallel,
    sell_repeatedly,
    write_lock_held_until_sent,
)

MODES = ("threads", "processes")
pytestmark = pytest.mark.parallel


@pytest.fixture(scope="module")
def server(tmp_path_factory, new_server):
    """This module's own server (conftest's `admin` follows it), so its totals stay apart."""
    home = tmp_path_factory.mktemp("parallel")
    with new_server(home, threads=THREADS_FOR_HELD_COPIES) as process:
        yield process


def assert_books_reconcile(server, admin) -> dict[int, int]:
    balances = reconciled_balances(server.db_path)
    report = admin.get("/api/audit").json()
    assert report["consistent"], report["problems"]
    audited = cli_audit(server.db_path, server.data_dir)
    assert audited.returncode == 0, audited.stderr
    return balances


@pytest.mark.parametrize("mode", MODES)
def test_64_concurrent_approvals_of_one_request_credit_exactly_once(server, admin, mode):
    """64 workers approve the same pending request at once: one 200, 63 not_pending, one credit."""
    seller, key = new_seller(admin, f"approvals-{mode}")
    request = server.seller(key).post("/api/credit-requests", {"amount": 250_000}).json()

    results = run_parallel(mode, 64, approve_once, server.url, ADMIN_TOKEN, request["id"])

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * 63
    assert all(body["error"]["code"] == "not_pending" for status, body in results if status == 409)
    assert assert_books_reconcile(server, admin)[seller["id"]] == 250_000
    credits = admin.get(f"/api/ledger?seller_id={seller['id']}").json()["items"]
    assert [(e["kind"], e["amount"]) for e in credits] == [("credit", 250_000)]


@pytest.mark.parametrize("mode", MODES)
def test_overspend_race_sells_exactly_what_the_balance_covers(server, admin, mode):
    """32 workers try 320 sales of 5,000 against 500,000: exactly 100 succeed, balance ends at 0."""
    seller, key = new_seller(admin, f"overspend-{mode}", credit=500_000)

    results = run_parallel(mode, 32, sell_repeatedly, server.url, key, 10, 5_000)

    statuses = [status for worker_statuses, *_ in results for status in worker_statuses]
    assert statuses.count(201) == 500_000 // 5_000
    assert statuses.count(409) == 320 - 100
    assert sum(sold for _, sold, _, _ in results) == 500_000
    assert assert_books_reconcile(server, admin)[seller["id"]] == 0
    elapsed = max(seconds for _, _, seconds, _ in results)
    refused = sum(retries for *_, retries in results)
    print(
        f"\noverspend race ({mode}): {len(statuses)} sales in {elapsed:.2f} s "
        f"= {len(statuses) / elapsed:.0f} requests/s, {refused} sent again after a 503"
    )


@pytest.mark.parametrize("mode", MODES)
def test_20_concurrent_copies_of_one_idempotent_sale_sell_once(server, admin, mode):
    """20 copies of one keyed sale race: all get the original 201 and body; one sale exists.

    The write lock is held until every copy is sent, so the copies meet inside the write.
    """
    seller, key = new_seller(admin, f"idempotent-{mode}", credit=100_000)
    sale = {"phone": "0912 000 1111", "amount": 7_000}
    with write_lock_held_until_sent(server.db_path, 20) as sent:
        args = (server.url, key, "/api/sales", sale, f"order-{mode}", sent)
        results = run_parallel(mode, 20, keyed_post, *args)

    assert {status for status, _, _ in results} == {201}
    assert len({repr(body) for _, body, _ in results}) == 1
    assert sum(not replayed for _, _, replayed in results) == 1
    sales = server.seller(key).get("/api/sales").json()["items"]
    assert [(s["phone"], s["amount"]) for s in sales] == [("09120001111", 7_000)]
    assert assert_books_reconcile(server, admin)[seller["id"]] == 93_000


@pytest.mark.parametrize("mode", MODES)
def test_mixed_load_over_several_sellers_keeps_every_balance_exact(server, admin, mode):
    """Sales (with replays and overspends), credits and adjustments on 4 sellers from 16 workers.

    The expected balance of each seller is rebuilt from what the server acknowledged
    to the workers; it must equal the balance and the ledger sum in the database.
    """
    funded = [new_seller(admin, f"mixed-{mode}-{n}", credit=300_000) for n in range(4)]
    sellers = [(seller["id"], key) for seller, key in funded]

    results = run_parallel(mode, 16, mixed, server.url, ADMIN_TOKEN, sellers, 40, 1234)

    balances = assert_books_reconcile(server, admin)
    for seller, _ in funded:
        expected = 300_000 + sum(delta[seller["id"]] for delta, _ in results)
        assert balances[seller["id"]] == expected
    assert sum(sales for _, sales in results) > 0


@pytest.mark.parametrize("mode", MODES)
def test_two_server_processes_on_one_port_still_sell_exactly_the_balance(
    tmp_path, new_server, mode
):
    """`--processes 2`: two forked servers share the socket and the database; the locks
    still hold."""
    with new_server(tmp_path, env={"CHARGEBOX_PROCESSES": "2"}) as two:
        admin = two.admin()
        seller, key = new_seller(admin, f"two-procs-{mode}", credit=300_000)

        results = run_parallel(mode, 24, sell_repeatedly, two.url, key, 5, 5_000)

        statuses = [status for worker_statuses, *_ in results for status in worker_statuses]
        assert statuses.count(201) == 60 and statuses.count(409) == 120 - 60
        assert assert_books_reconcile(two, admin)[seller["id"]] == 0
        admin.close()

"""Two app servers on one PostgreSQL database, raced by client processes; one is killed.

What makes a guarantee hold here cannot be a lock of one host: the servers share
nothing but the database. Client processes (spawned, started on a barrier) send
copies of the same Idempotency-Keys to both servers at once, and spend one
seller's balance through both; then a server is killed with SIGKILL under keyed
load and every unanswered key is retried on the other. The books are re-added
from a fresh connection afterwards, and the audit must be clean.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from tests import pg_cluster
from tests.support import ADMIN_TOKEN
from tests.test_postgresql_service import books

pytestmark = pytest.mark.parallel
PHONE = "09121234567"
AMOUNT = 1_000


@pytest.fixture
def two_servers(postgresql_cluster, tmp_path):
    """Two `serve` processes (B with 2 children) on one database, with the app role."""
    data = tmp_path / "data"
    made = pg_cluster.initialised(postgresql_cluster, "two", data)
    with (
        pg_cluster.serving(made.app_url, data, tmp_path / "a.log", ADMIN_TOKEN) as (a, _, _),
        pg_cluster.serving(made.app_url, data, tmp_path / "b.log", ADMIN_TOKEN, 2) as (b, pb, _),
    ):
        yield a, b, made.app_url, pb


def funded_seller(url: str, credit: int) -> tuple[int, str]:
    admin = requests.Session()
    admin.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    made = admin.post(url + "/api/sellers", json={"name": "shared"}, timeout=10).json()
    shop = requests.Session()
    shop.headers["Authorization"] = f"Bearer {made['api_key']}"
    asked = shop.post(url + "/api/credit-requests", json={"amount": credit}, timeout=10).json()
    assert admin.post(url + f"/api/credit-requests/{asked['id']}/approve", timeout=10).ok
    return made["id"], made["api_key"]


RETRIES_AFTER_503 = 20  # a keyed sale answered 503 (busy: a loaded box) is sent again


# Past the longest a write may take (docs/api.md, Limits: the busy timeout, 10 s, plus
# 0.5 s, and up to 6 s more while a COMMIT whose answer was lost is looked up): at 15 s,
# a sale whose COMMIT was lost in PostgreSQL's restart, answered 503 at 15.02 s, was no
# answer (status 0) to the client.
CLIENT_TIMEOUT = 30


def sell(url: str, key: str, keys: list[str | None], barrier) -> list[tuple]:
    """In a client process: a sale per entry of `keys` (None: unkeyed), after the barrier.
    Each answer as (key, status, sale id or None); a connection error as status 0. A keyed
    sale answered 503 is sent again with its key, as docs/api.md tells a client to."""
    shop = requests.Session()
    shop.headers["Authorization"] = f"Bearer {key}"
    barrier.wait()
    answers = []
    for idempotency_key in keys:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        for _ in range(RETRIES_AFTER_503 if idempotency_key else 1):
            try:
                answer = shop.post(url + "/api/sales", json={"phone": PHONE, "amount": AMOUNT},
                                   headers=headers, timeout=CLIENT_TIMEOUT)  # fmt: skip
                status = answer.status_code
                sale = answer.json().get("id") if status == 201 else None
            except requests.RequestException:
                status, sale = 0, None
            if status != 503:
                break
        answers.append((idempotency_key, status, sale))
    return answers


def in_processes(jobs: list[tuple]) -> list[list[tuple]]:
    """`sell(*job)` for each job, each in a spawned process, all started on one barrier."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(len(jobs))
        with context.Pool(len(jobs)) as pool:
            return pool.starmap(sell, [(*job, barrier) for job in jobs])


def audit_is_clean(url: str) -> bool:
    answer = requests.get(
        url + "/api/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    )
    report = answer.json()
    if report["consistent"] is not True:
        print("audit:", report.get("problems"))  # shown with the failing test
    return report["consistent"] is True


def test_copies_of_each_key_sent_to_both_servers_sell_once(two_servers):
    a, b, app_url, _ = two_servers
    seller_id, key = funded_seller(a, 1_000_000)
    keys = [f"order-{n}" for n in range(60)]
    answers = in_processes([(a, key, keys), (b, key, keys), (a, key, keys), (b, key, keys)])
    by_key: dict[str, set] = {}
    for process in answers:
        for idempotency_key, status, sale in process:
            assert status == 201, (idempotency_key, status)
            by_key.setdefault(idempotency_key, set()).add(sale)
    assert all(len(sales) == 1 for sales in by_key.values()), "a key sold twice"
    assert books(app_url) == {seller_id: 1_000_000 - AMOUNT * len(keys)}
    assert audit_is_clean(b)


def test_a_balance_spent_through_both_servers_sells_exactly_what_it_covers(two_servers):
    a, b, app_url, _ = two_servers
    seller_id, key = funded_seller(a, 50 * AMOUNT)
    tries = [None] * 25
    answers = in_processes([(a, key, tries), (b, key, tries), (a, key, tries), (b, key, tries)])
    statuses = [status for process in answers for _, status, _ in process]
    assert statuses.count(201) == 50 and statuses.count(409) == 50, statuses
    assert books(app_url) == {seller_id: 0}
    assert audit_is_clean(a)


def keyed_load_disrupted(url: str, key: str, keys: list[str], app_url: str, after: int,
                         disrupt) -> list[tuple]:  # fmt: skip
    """`keys` sold by a spawned client process; `disrupt()` once `after` sales are in.
    The client's answers, each (key, status, sale id); status 0: no answer."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(2)
        with context.Pool(1) as pool:
            load = pool.apply_async(sell, (url, key, keys, barrier))
            barrier.wait()
            with psycopg.connect(app_url, autocommit=True) as watch:
                while watch.execute("SELECT count(*) FROM sale").fetchone()[0] < after:
                    time.sleep(0.01)  # polling the database, bounded by the test's timeout
            disrupt()
            return load.get(timeout=120)


def retried_once(url: str, key: str, keys: list[str], first: list[tuple]) -> dict:
    """Every key retried on `url` sells, and what was acknowledged before is what it was."""
    acknowledged = {k: sale for k, status, sale in first if status == 201}
    retried = sell(url, key, keys, _NoBarrier())
    assert all(status == 201 for _, status, _ in retried), retried
    for idempotency_key, _, sale in retried:
        if idempotency_key in acknowledged:
            assert sale == acknowledged[idempotency_key]
    return acknowledged


def test_a_server_killed_under_keyed_load_loses_nothing_and_retries_sell_once(two_servers):
    a, b, app_url, b_process = two_servers
    seller_id, key = funded_seller(a, 1_000_000)
    keys = [f"crash-{n}" for n in range(200)]

    def kill_b() -> None:
        for child in pg_cluster_children(b_process.pid):
            os.kill(child, signal.SIGKILL)
        os.kill(b_process.pid, signal.SIGKILL)
        b_process.wait(timeout=30)

    first = keyed_load_disrupted(b, key, keys, app_url, 20, kill_b)
    acknowledged = retried_once(a, key, keys, first)
    with psycopg.connect(app_url) as conn:
        assert conn.execute("SELECT count(*) FROM sale").fetchone() == (len(keys),)
    assert books(app_url) == {seller_id: 1_000_000 - AMOUNT * len(keys)}
    assert audit_is_clean(a)
    print(f"\nkilled server B after {len(acknowledged)} acknowledged sales; all 200 keys sold once")


def pg_cluster_children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(n) for n in open(path).read().split()] if os.path.exists(path) else []


class _NoBarrier:
    def wait(self) -> None:
        return None


def test_after_a_restart_of_postgresql_every_thread_answers_at_once(tmp_path):
    """Each app thread keeps its connection; one idle through a restart of PostgreSQL
    failed its next use, so every thread answered one 503, minutes later (26 of 80
    requests in helper-120's run). A connection whose server has ended the session is
    seen as the thread takes it up, and replaced: after the restart, every read and the
    writer's first sale answer at once."""
    with pg_cluster.running() as cluster:  # its own: the session's cluster is not restarted
        data = tmp_path / "data"
        made = pg_cluster.initialised(cluster, "restarted", data)
        with pg_cluster.serving(made.app_url, data, tmp_path / "s.log", ADMIN_TOKEN) as (
            url, _, _
        ):  # fmt: skip
            _, key = funded_seller(url, 1_000_000)
            shop = {"Authorization": f"Bearer {key}"}
            with ThreadPoolExecutor(32) as pool:  # every app thread opens its connection
                warm = list(
                    pool.map(
                        lambda _: (
                            requests.get(url + "/api/me", headers=shop, timeout=30).status_code
                        ),
                        range(96),
                    )
                )
            assert set(warm) == {200}, warm
            restarted = cluster.run(
                "pg_ctl",
                "-D",
                str(cluster.data),
                "-m",
                "fast",
                "-w",
                "restart",
                "-l",
                str(cluster.home / "server.log"),
            )
            assert restarted.returncode == 0, restarted.stderr
            after = [requests.get(url + "/api/me", headers=shop, timeout=30).status_code
                     for _ in range(80)]  # fmt: skip
            assert after == [200] * 80, after
            sold = requests.post(
                url + "/api/sales",
                json={"phone": "09121234567", "amount": 1_000},
                headers={**shop, "Idempotency-Key": "after"},
                timeout=30,
            )
            assert sold.status_code == 201, sold.text


def test_an_immediate_restart_of_postgresql_under_load_answers_503s_and_loses_nothing(tmp_path):
    """PostgreSQL itself goes down (`pg_ctl restart -m immediate`: no clean shutdown)
    while a client process sells with keys. Every answer is a 201 or a JSON 503 (never a
    500), nothing acknowledged is lost, and every key retried afterwards sells once."""
    with pg_cluster.running() as cluster:  # its own: the session's cluster is not restarted
        data = tmp_path / "data"
        made = pg_cluster.initialised(cluster, "restart", data)
        log = tmp_path / "s.log"
        with pg_cluster.serving(made.app_url, data, log, ADMIN_TOKEN) as (url, _, _):
            seller_id, key = funded_seller(url, 1_000_000)
            keys = [f"restart-{n}" for n in range(300)]

            def restart() -> None:
                restarted = cluster.run(
                    "pg_ctl", "-D", str(cluster.data), "-m", "immediate", "-w", "restart",
                    "-l", str(cluster.home / "server.log"),
                )  # fmt: skip
                assert restarted.returncode == 0, restarted.stderr

            first = keyed_load_disrupted(url, key, keys, made.app_url, 30, restart)
            statuses = {status for _, status, _ in first}
            assert statuses <= {201, 503}, statuses
            acknowledged = retried_once(url, key, keys, first)
            assert audit_is_clean(url)
        assert books(made.app_url) == {seller_id: 1_000_000 - AMOUNT * len(keys)}
        print(
            f"\nPostgreSQL restarted under load: {len(acknowledged)} acknowledged, "
            f"{sum(s == 503 for _, s, _ in first)} answered 503; all 300 keys sold once after"
        )

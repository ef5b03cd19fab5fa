"""Crash safety: kill -9 at random moments under keyed load; SIGTERM with requests in flight.

`test_cli.py` shows that sequential sales survive one kill -9 and that SIGTERM
under plain load loses no answer. Here eight workers sell with Idempotency-Keys
while the server is killed several times on one file, and every key's fate is
reconciled afterwards: what was acknowledged is there, what was refused stays
refused, what got no answer either committed whole or not at all, and retrying
it with its key gives exactly one sale. The SIGTERM tests prove the other side
of a graceful stop: a request whose connection broke never took effect, and one
the server had read (each serving process counts them as it begins to stop) is
answered, even one that waits in the app for the write lock.

CHARGEBOX_CRASH_ROUNDS (default 5) and CHARGEBOX_CRASH_SEED (default: fresh,
printed) repeat a run or make it longer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import random
import re
import signal
import sqlite3
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from tests.support import (
    Api,
    ServerProcess,
    alive,
    cli_audit,
    new_seller,
    reconciled_balances,
    rows_on_disk,
    socket_queues,
    wait_until,
)

ROUNDS = int(os.environ.get("CHARGEBOX_CRASH_ROUNDS", "5"))
WORKERS = 8
CREDIT = 900_000_000
AMOUNTS = (1_000, 2_000, 5_000)
REFUSED_AMOUNT = 1_000_000_000  # above any balance this seller ever has: always 409
ROUND_SECONDS = 20  # a worker gives up after this, so a round cannot hang
LOCK_HELD_INTO_DRAIN = 2.0  # seconds: the scenario's slow write, not a wait for an outcome


@dataclasses.dataclass
class Attempt:
    """One keyed sale as the client saw it; status None = no answer (connection broke)."""

    key: str
    body: dict
    sent_at: float
    status: int | None = None
    answered_at: float | None = None
    sale_id: int | None = None
    code: str | None = None
    replayed: bool = False


def keyed_sale(api: Api, key: str, body: dict) -> Attempt:
    """POST one sale with its Idempotency-Key; a broken connection is recorded, not raised."""
    return sent(api, Attempt(key, body, time.monotonic()))


def sent(api: Api, attempt: Attempt) -> Attempt:
    """`attempt` POSTed, and filled in with what came back (nothing, if the connection broke)."""
    try:
        response = api.post("/api/sales", attempt.body, headers={"Idempotency-Key": attempt.key})
    except requests.RequestException:
        return attempt
    attempt.status, attempt.answered_at = response.status_code, time.monotonic()
    attempt.replayed = response.headers.get("Idempotent-Replayed") == "true"
    payload = response.json()
    if response.status_code == 201:
        attempt.sale_id = payload["id"]
        body = attempt.body
        assert (payload["phone"], payload["amount"]) == (body["phone"], body["amount"]), payload
    elif "error" in payload:
        attempt.code = payload["error"]["code"]
    return attempt


def sell_until_stopped(url, seller_key, prefix, seed, stop, attempts, first_answer):
    """Send keyed sales back to back until `stop` is set or the connection breaks."""
    rng = random.Random(seed)
    api = Api(url, seller_key)
    deadline = time.monotonic() + ROUND_SECONDS
    try:
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            amount = REFUSED_AMOUNT if rng.random() < 0.08 else rng.choice(AMOUNTS)
            phone = f"0912{rng.randrange(10**7):07d}"
            attempt = Attempt(f"{prefix}-{n}", {"phone": phone, "amount": amount},
                              time.monotonic())  # fmt: skip
            attempts.append(attempt)  # listed as it is sent: in flight until answered
            sent(api, attempt)
            n += 1
            if attempt.status is None:
                return  # the server is gone (killed or stopped): this worker is done
            first_answer.set()
    finally:
        api.close()


def run_load(url, seller_key, prefix, seed, stop) -> tuple[list[threading.Thread], list]:
    """WORKERS threads selling until `stop`; returns the threads and their attempt lists."""
    first_answer = threading.Event()
    per_worker: list[list[Attempt]] = [[] for _ in range(WORKERS)]
    threads = [
        threading.Thread(
            target=sell_until_stopped,
            args=(url, seller_key, f"{prefix}-w{w}", seed * 100 + w, stop, per_worker[w]),
            kwargs={"first_answer": first_answer},
            daemon=True,
        )
        for w in range(WORKERS)
    ]
    for thread in threads:
        thread.start()
    assert first_answer.wait(30), "the load never got a first answer"
    return threads, per_worker


def waiting_since(per_worker: list[list[Attempt]], quiet: float, deadline: float) -> None:
    """Until no attempt was answered for `quiet` seconds and one is out (polled)."""
    answered, since = -1, time.monotonic()
    while True:
        attempts = [a for worker in per_worker for a in list(worker)]
        now = sum(a.status is not None for a in attempts)
        if now != answered:
            answered, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet and any(a.status is None for a in attempts):
            return
        assert time.monotonic() < deadline, "the workers' sales were never held"
        time.sleep(0.01)


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(ROUND_SECONDS + 10)
    assert not any(thread.is_alive() for thread in threads), "a worker never finished"


def records(db_path: Path, seller_id: int) -> dict[str, tuple[int | None, str | None]]:
    """{Idempotency-Key: (sale_id, error_code)} straight from the file."""
    sql = "SELECT key, sale_id, error_code FROM idempotency_record WHERE seller_id = ?"
    return {key: (sale_id, code) for key, sale_id, code in rows_on_disk(db_path, sql, (seller_id,))}


def sale_rows(db_path: Path) -> dict[int, tuple[str, int]]:
    sql = "SELECT id, phone, amount FROM sale"
    return {i: (phone, amount) for i, phone, amount in rows_on_disk(db_path, sql)}


def listed_sales(api: Api) -> list[dict]:
    """Every sale of the seller through GET /api/sales, page by page."""
    items, after = [], 0
    while True:
        response = api.get(f"/api/sales?limit=1000&after_id={after}")
        assert response.status_code == 200, response.text
        page = response.json()["items"]
        if not page:
            return items
        items += page
        after = page[-1]["id"]


def check_the_file_after_a_kill(db_path, seller_id, attempts, sold: dict) -> dict[str, bool]:
    """Offline, before restarting: the books, and every answered key's fate in the rows.

    Returns {key: committed?} for the attempts that got no answer.
    """
    audit = cli_audit(db_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    reconciled_balances(db_path)
    stored, sales = records(db_path, seller_id), sale_rows(db_path)
    # Every sale of this seller was keyed: one record per sale, one sale per record.
    recorded_sales = [sale_id for sale_id, _ in stored.values() if sale_id is not None]
    assert len(recorded_sales) == len(set(recorded_sales))
    assert set(recorded_sales) == set(sales), "a sale without its key, or a key without its sale"
    unknown = {}
    for attempt in attempts:
        if attempt.status == 201:
            assert stored.get(attempt.key) == (attempt.sale_id, None), attempt
            assert sales[attempt.sale_id] == (attempt.body["phone"], attempt.body["amount"])
            sold[attempt.key] = (attempt.sale_id, attempt.body["amount"])
        elif attempt.status == 409:
            assert attempt.code == "insufficient_credit", attempt
            assert stored.get(attempt.key) == (None, "insufficient_credit"), attempt
        elif attempt.status is None:
            unknown[attempt.key] = attempt.key in stored
        else:
            raise AssertionError(f"unexpected answer while the server was up: {attempt}")
    return unknown


def processes_for(round_no: int) -> int:
    """Odd rounds run two forked servers on the file: the crash then hits both at once."""
    return 2 if round_no % 2 else 1


@pytest.fixture
def start_server():
    """start_server(db_path, processes) -> a running server; none outlives its test."""
    started: list[tuple[ServerProcess, list[int]]] = []

    def start(db_path: Path, processes: int = 1) -> ServerProcess:
        env = {"CHARGEBOX_PROCESSES": str(processes)}
        server = ServerProcess(db_path, env=env).start()
        started.append((server, server_pids(server)))
        return server

    yield start
    for server, pids in started:  # a failed test must not leave servers behind
        for pid in pids:
            with contextlib.suppress(OSError):
                if alive(pid) and str(server.db_path) in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(pid, signal.SIGKILL)
        server.stop()


def server_pids(server: ServerProcess) -> list[int]:
    """The forked servers first, then their supervisor (the PID we started)."""
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [*map(int, children), pid]


def serving(server: ServerProcess) -> list[int]:
    """The processes that answer requests: the forked servers, or the one process."""
    return server_pids(server)[:-1] or [server.proc.pid]


STOPPING = re.compile(r"server process (\d+) stopping: answering the (\d+) requests in flight")


def in_flight_at_stop(server: ServerProcess) -> dict[int, int]:
    """{pid: the requests it had read and not yet answered as it began to stop}, as each
    serving process logged it (server._drain)."""
    return {int(pid): int(n) for pid, n in STOPPING.findall(server.log_path.read_text())}


def unread(port: int) -> int:
    """Bytes sent to `port` that its server has not read yet: what waits in the server
    ends' receive queues and in the clients' send queues."""
    return sum(recv_q if server else send_q for server, recv_q, send_q in socket_queues(port))


def kill_9(server: ServerProcess) -> None:
    """SIGKILL every process of the server at once, as the OOM killer or a power cut would."""
    pids = server_pids(server)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert server.stop() == -signal.SIGKILL, "the server died before it was killed"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)  # the kernel tears the processes down; not a wait for an outcome
    assert not any(alive(pid) for pid in pids), "a server process survived kill -9"


def test_kill_9_at_random_moments_under_keyed_load_loses_no_sale_and_retries_sell_once(
    tmp_path, start_server
):
    seed = int(os.environ.get("CHARGEBOX_CRASH_SEED") or random.SystemRandom().randrange(10**6))
    print(f"\ncrash safety: seed {seed} (CHARGEBOX_CRASH_SEED), {ROUNDS} rounds")
    rng = random.Random(seed)
    db_path = tmp_path / "cb.db"
    server = start_server(db_path, processes_for(0))
    try:
        seller, key = new_seller(server.admin(), "crash", credit=CREDIT)
        sold: dict[str, tuple[int, int]] = {}  # key -> (sale id, amount), every 201 ever
        kills = answered = unknown_total = committed_total = 0
        for round_no in range(ROUNDS):
            stop = threading.Event()
            threads, per_worker = run_load(server.url, key, f"r{round_no}", seed + round_no, stop)
            delay = rng.uniform(0.2, 1.5)
            time.sleep(delay)  # the random moment of the crash, not a wait for an outcome
            kill_9(server)
            stop.set()
            kills += 1
            join_all(threads)
            attempts = [a for worker in per_worker for a in worker]
            answered += sum(a.status is not None for a in attempts)

            unknown = check_the_file_after_a_kill(db_path, seller["id"], attempts, sold)
            before = records(db_path, seller["id"])
            server = start_server(db_path, processes_for(round_no + 1))
            own = server.seller(key)
            # A client that lost its answer retries with the same key: one sale at most.
            for attempt in attempts:
                if attempt.status is not None:
                    continue
                retry = keyed_sale(own, attempt.key, attempt.body)
                refusal = attempt.body["amount"] == REFUSED_AMOUNT
                assert retry.status == (409 if refusal else 201), retry
                assert retry.replayed == unknown[attempt.key], (retry, unknown)
                if unknown[attempt.key]:
                    assert retry.sale_id == before[attempt.key][0], (retry, before[attempt.key])
                if retry.status == 201:
                    sold[attempt.key] = (retry.sale_id, attempt.body["amount"])
            # An answered key keeps its first outcome.
            for attempt in rng.sample(attempts, min(20, len(attempts))):
                if attempt.status is not None:
                    again = keyed_sale(own, attempt.key, attempt.body)
                    assert (again.status, again.sale_id, again.replayed) == (
                        attempt.status,
                        attempt.sale_id,
                        True,
                    ), (attempt, again)

            listed = listed_sales(own)
            assert sorted(s["id"] for s in listed) == sorted(i for i, _ in sold.values())
            assert len(listed) == len(sold), "a key sold more than once"
            expected = CREDIT - sum(amount for _, amount in sold.values())
            assert own.get("/api/me").json()["balance"] == expected
            assert reconciled_balances(db_path)[seller["id"]] == expected
            own.close()
            unknown_total += len(unknown)
            committed_total += sum(unknown.values())
            print(
                f"round {round_no} ({processes_for(round_no)} process(es)): kill -9 after "
                f"{delay:.2f}s, {len(attempts)} sent, "
                f"{len(unknown)} unanswered ({sum(unknown.values())} had committed)"
            )
        audit = server.admin().get("/api/audit")
        assert audit.status_code == 200 and audit.json()["consistent"] is True, audit.text
    finally:
        code = server.stop()
    assert code == 0
    assert cli_audit(db_path).returncode == 0
    print(
        f"crash safety: {kills} kill -9 rounds, {answered} answered, {len(sold)} sold, "
        f"{unknown_total} unanswered of which {committed_total} had committed"
    )
    assert kills == ROUNDS


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_under_keyed_load_answers_every_request_that_reached_the_app(
    tmp_path, processes, start_server
):
    """A broken connection after SIGTERM is fine only if its key never executed."""
    db_path = tmp_path / "cb.db"
    server = start_server(db_path, processes)
    seller, key = new_seller(server.admin(), "drain", credit=CREDIT)
    draining = serving(server)
    stop = threading.Event()
    threads, per_worker = run_load(server.url, key, "t", processes, stop)
    deadline = time.monotonic() + 30
    while sum(map(len, per_worker)) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the load is really running, not waiting for an outcome
    # The file's write lock held here, every sale that reaches the app waits in it: once no
    # answer came for a while and a sale is out, sales are surely in flight at SIGTERM, and
    # the drain must answer them when the lock is let go (well within the busy timeout).
    # Before, a fast server could answer all 8 workers' sales just before the signal.
    holder = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    try:
        holder.execute("BEGIN IMMEDIATE")
        waiting_since(per_worker, quiet=0.2, deadline=time.monotonic() + 30)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
    finally:
        holder.close()  # its transaction rolls back: the waiting sales go on
    code = server.proc.wait(timeout=15)
    stopped = time.monotonic() - signalled
    server.stop()
    stop.set()
    join_all(threads)

    assert code == 0
    assert stopped < 10, f"took {stopped:.1f}s to stop"
    attempts = [a for worker in per_worker for a in worker]
    assert [a for a in attempts if a.status is not None and a.status >= 500] == []
    assert {a.status for a in attempts} <= {201, 409, None}
    stored = records(db_path, seller["id"])
    broken = [a for a in attempts if a.status is None]
    assert [a.key for a in broken if a.key in stored] == [], "executed, but never answered"
    # Each serving process said how many requests it had read and not answered as it
    # began to stop: none of those may go unanswered. Those were sent before the signal
    # (every worker waited behind the held lock) and answered after it.
    at_stop = in_flight_at_stop(server)
    assert set(at_stop) == set(draining), at_stop
    answered_after = [a for a in attempts if a.sent_at < signalled and a.status is not None
                      and a.answered_at > signalled]  # fmt: skip
    assert len(answered_after) >= sum(at_stop.values()), "dropped in flight"
    acknowledged = sorted(a.sale_id for a in attempts if a.status == 201)
    assert acknowledged == sorted(sale_rows(db_path))
    in_flight = [a for a in attempts if a.sent_at < signalled < (a.answered_at or 0)]
    assert in_flight, "no request was in flight when SIGTERM arrived"
    sold = sum(a.body["amount"] for a in attempts if a.status == 201)
    assert reconciled_balances(db_path)[seller["id"]] == CREDIT - sold
    assert cli_audit(db_path).returncode == 0
    print(
        f"\nSIGTERM with {processes} process(es): {len(acknowledged)} sold, "
        f"{len(in_flight)} in flight finished, {len(broken)} refused after, {stopped:.2f}s"
    )


@pytest.mark.parametrize("processes", [1, 2])
def test_sales_stuck_behind_a_locked_database_at_sigterm_still_finish_before_exit(
    tmp_path, processes, start_server
):
    """Requests provably inside the app at SIGTERM (waiting for the write lock) are answered:
    read by the server before the signal (nothing sent to its port waits unread), and
    counted by each serving process as it began to stop."""
    db_path = tmp_path / "cb.db"
    server = start_server(db_path, processes)
    seller, key = new_seller(server.admin(), "stuck", credit=CREDIT)
    draining = serving(server)
    port = urllib.parse.urlsplit(server.url).port
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    sales = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(6)]
    body = json.dumps({"phone": "09121234567", "amount": 1_000})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        for n, conn in enumerate(sales):  # each in the kernel once request() returns
            conn.request("POST", "/api/sales", body, {**headers, "Idempotency-Key": f"s{n}"})
        wait_until(lambda: unread(port) == 0, "the six sales read by the server")
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: set(in_flight_at_stop(server)) == set(draining), "each draining")
        assert sum(in_flight_at_stop(server).values()) == len(sales), in_flight_at_stop(server)
        # The write that holds the lock lasts LOCK_HELD_INTO_DRAIN more: longer than waitress
        # waits for its workers as it shuts down (1 s), well inside the drain's grace.
        time.sleep(LOCK_HELD_INTO_DRAIN)
        assert server.proc.poll() is None, "the server exited with sales in flight"
    finally:
        holder.rollback()
        holder.close()
    answers = []
    for conn in sales:
        response = conn.getresponse()
        answers.append((response.status, json.loads(response.read())))
        conn.close()
    code = server.proc.wait(timeout=15)
    stopped = time.monotonic() - signalled
    server.stop()

    assert code == 0
    assert stopped < 10
    assert [status for status, _ in answers] == [201] * len(sales), answers
    assert sorted(sale["id"] for _, sale in answers) == sorted(sale_rows(db_path))
    assert reconciled_balances(db_path)[seller["id"]] == CREDIT - 1_000 * len(sales)

"""Parallel workers for the concurrency tests: the same task run by threads or by processes.

Every worker has its own HTTP connection and waits on a barrier before its
first request, so the requests really overlap. Process workers are started
with `spawn` (no inherited sockets or locks) and may run several threads each.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import queue
import random
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.support import Api, is_postgresql, owner_url

JOIN_TIMEOUT = 120
# A copy sent while `write_lock_held_until_sent` holds the lock waits in one of the
# server's write slots (threads - max(2, threads // 8): 14 of the default 16); a copy
# past them is refused with 503 at once when the held lock looks stalled, which on a
# busy box, where 20 copies take more than a moment to send, it does. A server for
# these tests has a slot for every copy, however slowly the box sends them.
THREADS_FOR_HELD_COPIES = 32
# How many 503s in a row a worker takes (each after its Retry-After) before it fails.
RETRIES = 30


def run_parallel(mode: str, workers: int, task, *args, processes: int = 8) -> list:
    """Run task(index, barrier, *args) in `workers` workers; return their results in index order."""
    if mode == "threads":
        barrier = threading.Barrier(workers)
        results: list = [None] * workers
        errors: list = []

        def body(index: int) -> None:
            try:
                results[index] = task(index, barrier, *args)
            except BaseException as exc:  # surfaced below, not lost in a thread
                errors.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=body, args=(i,)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        if errors:
            raise errors[0]
        return results
    if mode != "processes":
        raise ValueError(mode)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    outbox = context.Queue()
    per_process = [list(range(i, workers, processes)) for i in range(min(processes, workers))]
    children = [
        context.Process(target=_process_main, args=(indices, task, barrier, outbox, args))
        for indices in per_process
    ]
    for child in children:
        child.start()
    collected: dict = {}
    try:
        while len(collected) < workers:
            index, ok, value = outbox.get(timeout=JOIN_TIMEOUT)
            if not ok:
                raise AssertionError(f"worker {index} failed: {value}")
            collected[index] = value
    except queue.Empty as exc:
        raise AssertionError("process workers did not finish in time") from exc
    finally:
        for child in children:
            child.join(JOIN_TIMEOUT)
            if child.is_alive():
                child.kill()
    return [collected[i] for i in range(workers)]


def _process_main(indices, task, barrier, outbox, args) -> None:
    def body(index: int) -> None:
        try:
            outbox.put((index, True, task(index, barrier, *args)))
        except BaseException as exc:
            outbox.put((index, False, repr(exc)))
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in indices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextlib.contextmanager
def write_lock_held_until_sent(db_path: Path | str, copies: int) -> Iterator[object]:
    """Hold the database's write lock until `copies` workers have sent their requests
    (to a server of THREADS_FOR_HELD_COPIES threads, so that no copy finds the slots full).

    Yields the barrier each copy waits on after sending (before reading its answer).
    While the lock is held, the copies find no outcome yet and queue for the write,
    where all but the first must find the first one's outcome: without the lock, most
    copies arrive after the first has committed and only the fast path is exercised.
    On PostgreSQL the lock is the seller table's, EXCLUSIVE: every write moves or names
    a seller row, while plain reads go on.
    """
    sent = multiprocessing.get_context("spawn").Barrier(copies + 1)  # and the releaser
    if is_postgresql(db_path):
        holder = psycopg.connect(owner_url(str(db_path)), autocommit=True)
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE seller IN EXCLUSIVE MODE")
    else:
        holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")

    def release_when_sent() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            sent.wait(30)
        holder.execute("ROLLBACK")

    releaser = threading.Thread(target=release_when_sent)
    releaser.start()
    try:
        yield sent
    finally:
        sent.abort()  # frees the releaser at once if some copy was never sent
        releaser.join(60)
        holder.close()


# --- tasks ------------------------------------------------------------------------------


def keyed_post(index, barrier, url, token, path, body, idempotency_key, sent):
    """One copy of a keyed POST: sent when all copies are ready, read when all are sent
    (see write_lock_held_until_sent). Returns (status, body, replayed?)."""
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=60)
    conn.connect()
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": idempotency_key}
    barrier.wait()
    conn.request("POST", path, json.dumps(body), headers)
    sent.wait(30)
    response = conn.getresponse()
    answer = (
        response.status,
        json.loads(response.read()),
        response.getheader("Idempotent-Replayed") == "true",
    )
    conn.close()
    return answer


def approve_once(index, barrier, url, token, request_id):
    api = Api(url, token)
    api.get("/health")  # open the keep-alive connection before the race
    barrier.wait()
    response, _ = posted_as_documented(api, f"/api/credit-requests/{request_id}/approve")
    api.close()
    return response.status_code, response.json()


def sell_repeatedly(index, barrier, url, key, attempts, amount):
    """Sell `attempts` charges, each sent again after a 503 as a client should; odd
    workers send each under its own Idempotency-Key, even ones send none (both ways of
    selling race). Return the final status codes, the acknowledged amount, the seconds
    taken and how many 503s were answered on the way."""
    api = Api(url, key)
    api.get("/api/me")
    barrier.wait()
    statuses, sold, refused = [], 0, 0
    started = time.perf_counter()
    for n in range(attempts):
        sale = {"phone": f"0912{index:03d}{n:04d}", "amount": amount}
        idempotency_key = f"worker-{index}-{n}" if index % 2 else None
        response, retries = posted_as_documented(api, "/api/sales", sale, idempotency_key)
        statuses.append(response.status_code)
        refused += retries
        if response.status_code == 201:
            sold += amount
    elapsed = time.perf_counter() - started
    api.close()
    return statuses, sold, elapsed, refused


def posted_as_documented(api: Api, path: str, body=None, key: str | None = None):
    """POST as docs/api.md tells a client to: a 503 changed nothing, so wait its
    Retry-After and send the same request again, with the same Idempotency-Key.

    A busy box can make the server shed writes (its write slots all waited on longer
    than SLOT_WAIT); the books must come out exact all the same. Returns the first
    answer that is not a 503 and how many 503s came before it; fails after RETRIES.
    """
    headers = {"Idempotency-Key": key} if key else None
    for refused in range(RETRIES):
        response = api.post(path, body, headers=headers)
        if response.status_code != 503:
            return response, refused
        assert response.json()["error"]["code"] == "unavailable", response.text
        time.sleep(int(response.headers["Retry-After"]))
    raise AssertionError(f"POST {path}: {RETRIES} answers of 503 in a row")


def mixed(index, barrier, url, admin_token, sellers, operations, seed):
    """A random mix of sales (some overspending, some with replays), credits and adjustments.

    Returns what the server acknowledged per seller, so the caller can compute
    the expected balances independently of the server.
    """
    rng = random.Random(seed + index)
    admin = Api(url, admin_token)
    apis = {seller_id: Api(url, key) for seller_id, key in sellers}
    delta = {seller_id: 0 for seller_id, _ in sellers}
    sales = 0
    admin.get("/health")
    barrier.wait()
    for n in range(operations):
        seller_id = rng.choice(list(apis))
        own = apis[seller_id]
        roll = rng.random()
        if roll < 0.70:
            amount = rng.choice((1_000, 5_000, 20_000, 150_000))
            key = f"w{index}-op{n}" if rng.random() < 0.5 else None
            headers = {"Idempotency-Key": key} if key else None
            body = {"phone": f"0935{rng.randrange(10**7):07d}", "amount": amount}
            response = own.post("/api/sales", body, headers=headers)
            assert response.status_code in (201, 409), response.text
            if response.status_code == 201:
                delta[seller_id] -= amount
                sales += 1
            if key:  # a client retry after a lost answer: must never charge again
                replay = own.post("/api/sales", body, headers=headers)
                assert replay.status_code == response.status_code
                assert replay.headers.get("Idempotent-Replayed") == "true"
        elif roll < 0.85:
            amount = rng.randrange(1, 200) * 1_000
            request = own.post("/api/credit-requests", {"amount": amount})
            assert request.status_code == 201, request.text
            decision = rng.choice(("approve", "reject"))
            decided = admin.post(f"/api/credit-requests/{request.json()['id']}/{decision}")
            assert decided.status_code == 200, decided.text
            if decision == "approve":
                delta[seller_id] += amount
        else:
            amount = rng.choice((-50_000, -5_000, 5_000, 50_000))
            response = admin.post(
                f"/api/sellers/{seller_id}/adjustments",
                {"amount": amount, "reason": f"worker {index} op {n}"},
            )
            assert response.status_code in (201, 409), response.text
            if response.status_code == 201:
                delta[seller_id] += amount
    for api in (admin, *apis.values()):
        api.close()
    return delta, sales

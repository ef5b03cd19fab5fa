"""Parallel workers for the concurrency tests: the same task run by threads or by processes.

Every worker has its own HTTP connection and waits on a barrier before its
first request, so the requests really overlap. Process workers are started
with `spawn` (no inherited sockets or locks) and may run several threads each.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time

from tests.support import Api

JOIN_TIMEOUT = 120


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


# --- tasks ------------------------------------------------------------------------------


def approve_once(index, barrier, url, token, request_id):
    api = Api(url, token)
    api.get("/health")  # open the keep-alive connection before the race
    barrier.wait()
    response = api.post(f"/api/credit-requests/{request_id}/approve")
    api.close()
    return response.status_code, response.json()


def sell_repeatedly(index, barrier, url, key, attempts, amount):
    """Sell `attempts` charges; return the status codes and acknowledged amounts."""
    api = Api(url, key)
    api.get("/api/me")
    barrier.wait()
    statuses, sold = [], 0
    started = time.perf_counter()
    for n in range(attempts):
        response = api.post("/api/sales", {"phone": f"0912{index:03d}{n:04d}", "amount": amount})
        statuses.append(response.status_code)
        if response.status_code == 201:
            sold += amount
    elapsed = time.perf_counter() - started
    api.close()
    return statuses, sold, elapsed


def sell_with_key(index, barrier, url, key, idempotency_key, phone, amount):
    api = Api(url, key)
    api.get("/api/me")
    barrier.wait()
    response = api.post(
        "/api/sales",
        {"phone": phone, "amount": amount},
        headers={"Idempotency-Key": idempotency_key},
    )
    api.close()
    return (
        response.status_code,
        response.json(),
        response.headers.get("Idempotent-Replayed") == "true",
    )


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

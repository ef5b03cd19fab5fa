"""Firing a sales plan at the server from W workers, as threads or as processes.

The same worker function runs in both modes: one keep-alive connection each,
a barrier before the first request so start-up is not timed, a shared counter
for the live progress line. Processes are started with `spawn`, so each has
its own interpreter, GIL and sockets, and nothing is inherited by accident.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue
import sys
import threading
import time
from collections.abc import Callable

from stress.client import Client

JOIN_TIMEOUT = 600


@dataclasses.dataclass(frozen=True)
class Sale:
    seller: int  # index into the sellers list
    phone: str
    amount: int
    key: str | None  # Idempotency-Key, or None
    replay: bool  # send a second copy right after the first


@dataclasses.dataclass
class WorkerResult:
    """What one worker saw; compact, because process workers send it back pickled."""

    statuses: list[int] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    acked: dict[int, int] = dataclasses.field(default_factory=dict)  # seller -> toman
    acked_sales: int = 0
    replays: int = 0
    bad_replays: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


def sell_plan(url: str, tokens: list[str], plan: list[Sale], barrier, counter) -> WorkerResult:
    """One worker: send its sales in order over one connection and record every answer."""
    result = WorkerResult()
    client = Client(url)
    client.get("/health")  # open the connection before the clock starts
    barrier.wait()
    for sale in plan:
        headers = {"Authorization": f"Bearer {tokens[sale.seller]}"}
        if sale.key:
            headers["Idempotency-Key"] = sale.key
        body = {"phone": sale.phone, "amount": sale.amount}
        try:
            reply = client.post("/api/sales", body, headers)
        except OSError as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}")
            continue
        result.statuses.append(reply.status)
        result.latencies.append(reply.seconds)
        if reply.status == 201:
            result.acked[sale.seller] = result.acked.get(sale.seller, 0) + sale.amount
            result.acked_sales += 1
        if sale.replay:
            _replay(client, body, headers, reply, result)
        _tick(counter)
    client.close()
    return result


def _replay(client: Client, body: dict, headers: dict, first, result: WorkerResult) -> None:
    """A client retry after a lost answer: it must get the first answer back, charge nothing."""
    result.replays += 1
    again = client.post("/api/sales", body, headers)
    if again.status != first.status or again.body != first.body or not again.replayed:
        result.bad_replays.append(
            f"key {headers.get('Idempotency-Key')}: first {first.status}, replay {again.status} "
            f"(replayed header: {again.replayed})"
        )


def _tick(counter) -> None:
    if isinstance(counter, list):  # threads: list.append is atomic under the GIL
        counter.append(1)
    else:
        with counter.get_lock():
            counter.value += 1


def _progress(counter) -> int:
    return len(counter) if isinstance(counter, list) else counter.value


def run_workers(
    mode: str,
    url_for: Callable[[int], str],
    tokens: list[str],
    plans: list[list[Sale]],
    label: str,
    quiet: bool = False,
) -> tuple[list[WorkerResult], float]:
    """Run one plan per worker; return the results and the wall time from the barrier."""
    runner = {"threads": _run_threads, "processes": _run_processes}[mode]
    return runner(url_for, tokens, plans, _Progress(sum(map(len, plans)), label, quiet))


def _run_threads(url_for, tokens, plans, progress) -> tuple[list[WorkerResult], float]:
    barrier, counter = threading.Barrier(len(plans) + 1), []
    results: list = [WorkerResult(errors=["worker did not finish"])] * len(plans)

    def body(i: int) -> None:
        results[i] = sell_plan(url_for(i), tokens, plans[i], barrier, counter)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(plans))]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=JOIN_TIMEOUT)
    started = time.perf_counter()
    progress.watch(lambda: not any(t.is_alive() for t in threads), counter, started)
    return results, time.perf_counter() - started


def _run_processes(url_for, tokens, plans, progress) -> tuple[list[WorkerResult], float]:
    context = multiprocessing.get_context("spawn")
    barrier, counter = context.Barrier(len(plans) + 1), context.Value("i", 0)
    outbox = context.Queue()
    processes = [
        context.Process(
            target=_process_main,
            daemon=True,
            args=(i, url_for(i), tokens, plans[i], barrier, counter, outbox),
        )
        for i in range(len(plans))
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=JOIN_TIMEOUT)
    started = time.perf_counter()
    gathered: dict[int, WorkerResult] = {}

    def finished() -> bool:
        while len(gathered) < len(plans):
            try:
                index, value = outbox.get(timeout=0.05)
            except queue.Empty:
                return _all_dead(processes)
            gathered[index] = value
        return True

    progress.watch(finished, counter, started)
    seconds = time.perf_counter() - started
    for process in processes:
        process.join(JOIN_TIMEOUT)
    missing = WorkerResult(errors=["worker process died"])
    return [gathered.get(i, missing) for i in range(len(plans))], seconds


def _process_main(index, url, tokens, plan, barrier, counter, outbox) -> None:
    outbox.put((index, sell_plan(url, tokens, plan, barrier, counter)))


def _all_dead(processes) -> bool:
    return all(not p.is_alive() for p in processes)


@dataclasses.dataclass
class _Progress:
    """The live progress line (stderr), refreshed twice a second until the workers finish."""

    total: int
    label: str
    quiet: bool

    def watch(self, finished: Callable[[], bool], counter, started: float) -> None:
        last = 0.0
        while not finished() and time.perf_counter() < started + JOIN_TIMEOUT:
            time.sleep(0.05)  # polling a progress counter, not waiting for an outcome
            now = time.perf_counter()
            if not self.quiet and now - last >= 0.5:
                done = _progress(counter)
                rate = done / max(now - started, 1e-9)
                print(
                    f"\r  {self.label}: {done:,}/{self.total:,} sales, {rate:,.0f}/s ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                last = now
        if not self.quiet:
            print(
                f"\r  {self.label}: {_progress(counter):,}/{self.total:,} sales done" + " " * 12,
                file=sys.stderr,
                flush=True,
            )

"""`serve --processes K`: a child that dies is logged and replaced, with back-off.

Before, a child killed by SIGKILL (or the OOM killer, or a crash) was neither
logged nor replaced: the service ran on fewer processes, and the last death
stopped it. Here children are killed under keyed sale load; the parent must
log each death and start a replacement, every key retried afterwards must sell
exactly once, and the books must reconcile.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import requests

from tests.support import Api, ServerProcess, cli_audit, new_seller, reconciled_balances

CREDIT = 100_000_000
AMOUNT = 1_000
REPLACED_WITHIN = 30  # seconds; the back-off after four quick deaths is 4 s


def children_of(pid: int) -> set[int]:
    return {int(n) for n in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def wait_for_children(pid: int, count: int, gone: set[int]) -> set[int]:
    """The parent's children once there are `count` of them and none of `gone` (polled)."""
    deadline = time.monotonic() + REPLACED_WITHIN
    while time.monotonic() < deadline:
        now = children_of(pid)
        if len(now) == count and not now & gone:
            return now
        time.sleep(0.05)  # polling for the replacement, bounded by the deadline
    raise AssertionError(f"children {children_of(pid)} after {REPLACED_WITHIN}s, gone {gone}")


class KeyedLoad:
    """Threads selling with fresh keys until stopped; keys not answered 201 are kept."""

    def __init__(self, url: str, seller_key: str, workers: int = 6) -> None:
        self.url, self.key = url, seller_key
        self.stop = threading.Event()
        self.sold: list[str] = []
        self.unanswered: list[str] = []
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._sell, args=(n,), daemon=True) for n in range(workers)
        ]

    def __enter__(self) -> KeyedLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _sell(self, worker: int) -> None:
        api = Api(self.url, self.key)
        for n in range(100_000):  # bounded; the test stops it long before
            if self.stop.is_set():
                break
            key = f"w{worker}-{n}"
            try:
                answer = api.session.post(
                    self.url + "/api/sales",
                    json={"phone": "09121234567", "amount": AMOUNT},
                    headers={"Idempotency-Key": key},
                    timeout=10,
                )
                ok = answer.status_code == 201
            except requests.RequestException:
                ok = False
                api.close()
                api = Api(self.url, self.key)
            with self.lock:
                (self.sold if ok else self.unanswered).append(key)
        api.close()


def test_killed_children_are_logged_and_replaced_and_every_key_sells_once(tmp_path):
    db_path = tmp_path / "cb.db"
    server = ServerProcess(db_path, env={"CHARGEBOX_PROCESSES": "2"}).start()
    try:
        admin = server.admin()
        seller, key = new_seller(admin, "forked", credit=CREDIT)
        admin.close()
        parent = server.proc.pid
        first = wait_for_children(parent, 2, set())
        with KeyedLoad(server.url, key) as load:
            killed: set[int] = set()
            for victim in sorted(first):  # one, then the other original
                os.kill(victim, signal.SIGKILL)
                killed.add(victim)
                wait_for_children(parent, 2, killed)
            both = children_of(parent)
            for victim in both:  # and both at once: for a while nobody serves
                os.kill(victim, signal.SIGKILL)
            killed |= both
            wait_for_children(parent, 2, killed)
            sold_before_the_end = len(load.sold)
            while len(load.sold) < sold_before_the_end + 20:
                time.sleep(0.05)  # the replacements sell: polled, bounded by the test timeout
        retry = Api(server.url, key)
        for unanswered in load.unanswered:
            answer = retry.post(
                "/api/sales",
                {"phone": "09121234567", "amount": AMOUNT},
                headers={"Idempotency-Key": unanswered},
            )
            assert answer.status_code == 201, answer.text
        retry.close()
    finally:
        assert server.stop() == 0, server.log_path.read_text()[-3000:]
    log = server.log_path.read_text()
    deaths = re.findall(
        r"server process (\d+) was killed by SIGKILL .* replacement in ([\d.]+) s", log
    )
    assert {int(pid) for pid, _ in deaths} == killed, log[-3000:]
    delays = [float(delay) for _, delay in deaths]
    assert delays == sorted(delays) and delays[-1] > delays[0], f"no back-off: {delays}"
    keys = len(load.sold) + len(load.unanswered)
    print(
        f"\n4 children killed and replaced (back-off {delays} s); {len(load.sold)} sales "
        f"answered under load, {len(load.unanswered)} unanswered and retried"
    )
    assert reconciled_balances(db_path)[seller["id"]] == CREDIT - AMOUNT * keys
    audit = cli_audit(db_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr

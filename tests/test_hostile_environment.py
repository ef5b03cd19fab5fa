"""A hostile environment: a read-only database, a full disk, a writer holding the lock.

Each test starts a real server on its own database file, funds a seller, then
makes the environment hostile while the server runs. Every write must be
refused with 503 `unavailable` (JSON, Retry-After) and change nothing, reads
must go on, and once the condition clears the same Idempotency-Keys must sell
(a 503 never uses a key) and the books must reconcile.

As root, chmod stops nobody, and an open file descriptor ignores permissions
anyway; so "read-only" is the immutable attribute (`chattr +i`, refused even to
root, even on open files), and "disk full" is a tiny tmpfs. Both need root;
these tests fail, never skip, where it is missing.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import re
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests

from tests.support import (
    ADMIN_TOKEN,
    Api,
    ServerProcess,
    cli_audit,
    needs_root,
    new_seller,
    reconciled_balances,
    rows_on_disk,
    write_lock_held,
)

CREDIT = 10_000_000
AMOUNT = 1_000
REQUEST_TIMEOUT = 10  # an answer slower than this is a hang


def run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"`{' '.join(command)}` failed here ({result.stderr.strip()}): this test needs root "
        "and a filesystem that supports it"
    )


@contextlib.contextmanager
def serving(db_path: Path, threads: int = 16, **env: str):
    """A server with a funded seller: (server, seller id, the seller's key); must exit 0."""
    server = ServerProcess(db_path, threads=threads, env=env).start()
    try:
        admin = server.admin()
        seller, key = new_seller(admin, "hostile", credit=CREDIT)
        admin.close()
        yield server, seller["id"], key
    finally:
        code = server.stop()
        if code != 0:
            pytest.fail(f"server exit status {code}: {server.log_path.read_text()[-2000:]}")


def body(key: str) -> dict:
    return {"phone": f"0912{zlib.crc32(key.encode()) % 10**7:07d}", "amount": AMOUNT}


def sell_all(url: str, seller_key: str, keys: list[str], workers: int = 8) -> dict:
    """The keyed sales from `workers` concurrent clients: {key: (response, seconds)}."""
    local, opened = threading.local(), []

    def one(key: str):
        if not hasattr(local, "api"):
            local.api = Api(url, seller_key)
            opened.append(local.api)
        started = time.monotonic()
        try:
            response = local.api.session.post(
                url + "/api/sales",
                json=body(key),
                headers={"Idempotency-Key": key},
                timeout=REQUEST_TIMEOUT,
            )
        except requests.Timeout:
            return key, (None, time.monotonic() - started)
        return key, (response, time.monotonic() - started)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = dict(pool.map(one, keys))
    for api in opened:
        api.close()
    hung = [key for key, (response, _) in results.items() if response is None]
    assert hung == [], f"no answer within {REQUEST_TIMEOUT}s for {len(hung)} sales"
    return results


def assert_unavailable(response: requests.Response) -> None:
    """503 with the error shape of every refusal, and a Retry-After the client can obey."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "unavailable" and error["message"], error
    assert int(response.headers["Retry-After"]) >= 1


def assert_made_or_unavailable(admin, db_path: Path) -> None:
    """A seller made while sales are refused for want of space: its rows may still fit
    where a batch of sales did not (a page with room, the WAL reused once a checkpoint let
    it restart), so it is made or refused with 503 (1 run in ~8 made it), never half
    made, never a 500."""
    answer = admin.post("/api/sellers", {"name": "not now"})
    if answer.status_code != 201:
        assert_unavailable(answer)
    made = rows_on_disk(db_path, "SELECT count(*) FROM seller WHERE name = 'not now'")
    assert made == [(int(answer.status_code == 201),)], (answer.status_code, made)


def assert_sold(results: dict, replayed: bool = False) -> None:
    for key, (response, _) in results.items():
        assert response.status_code == 201, (key, response.status_code, response.text)
        assert (response.headers.get("Idempotent-Replayed") == "true") == replayed, key


def stored_keys(db_path: Path) -> set[str]:
    return {key for (key,) in rows_on_disk(db_path, "SELECT key FROM idempotency_record")}


def assert_books(db_path: Path, seller_id: int, sold: int) -> None:
    """The file is intact, the books reconcile, and exactly `sold` sales were made."""
    assert rows_on_disk(db_path, "PRAGMA integrity_check") == [("ok",)]
    assert rows_on_disk(db_path, "SELECT COUNT(*) FROM sale") == [(sold,)]
    assert reconciled_balances(db_path)[seller_id] == CREDIT - AMOUNT * sold
    audit = cli_audit(db_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def assert_reads_work(server: ServerProcess, seller_key: str, balance: int) -> None:
    own, admin = server.seller(seller_key), Api(server.url, ADMIN_TOKEN)
    try:
        me = own.get("/api/me")
        assert me.status_code == 200 and me.json()["balance"] == balance, me.text
        assert own.get("/api/sales?limit=1000").status_code == 200
        audit = admin.get("/api/audit")
        assert audit.status_code == 200 and audit.json()["consistent"] is True, audit.text
    finally:
        own.close()
        admin.close()


def keys(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n}" for n in range(count)]


@contextlib.contextmanager
def immutable(paths: list[Path]):
    """chattr +i: no write, even by root and through descriptors opened before."""
    needs_root("chattr +i")
    done = []
    try:
        for path in paths:
            run("chattr", "+i", str(path))
            done.append(path)
        yield
    finally:
        for path in reversed(done):
            run("chattr", "-i", str(path))


def test_a_database_made_read_only_under_the_server_refuses_writes_with_503_and_recovers(
    tmp_path,
):
    """Writes 503 and change nothing, reads go on; once writable again, every sale succeeds.

    While the file is read-only, server threads that had not used the database yet
    (64 threads, reading) open their connections: SQLite then opens them
    read-only, for good. Once the file is writable, such a connection's first
    write fails (nothing changed); it is replaced and the write goes once more, so
    no client sees it. (Each of them answered one 503 before: a test that counted on
    reaching every thread in turn to flush them out failed when a busy box skipped
    one.)
    """
    db_path = tmp_path / "cb.db"
    with serving(db_path, threads=64) as (server, seller_id, key):
        assert_sold(sell_all(server.url, key, keys("warm", 20), workers=1))
        wal = Path(f"{db_path}-wal")
        assert wal.exists()
        refused = keys("ro", 48)
        # The -shm index stays writable: it is mapped memory, and a real read-only
        # filesystem would not let SQLite map it writable in the first place.
        with immutable([db_path, wal, tmp_path]):
            with pytest.raises(PermissionError), open(wal, "r+b"):
                pass  # the condition really holds, even for root
            with concurrent.futures.ThreadPoolExecutor(1) as reader:
                reads = reader.submit(read_all, server.url, key, 256, 32)
                for response, _ in sell_all(server.url, key, refused, workers=32).values():
                    assert_unavailable(response)
                assert reads.result() == [200] * 256
            admin = server.admin()
            assert_made_or_unavailable(admin, db_path)
            admin.close()
            assert_reads_work(server, key, CREDIT - 20 * AMOUNT)
            assert stored_keys(db_path).isdisjoint(refused), "a 503 changed something"
            assert reconciled_balances(db_path)[seller_id] == CREDIT - 20 * AMOUNT
        # The log says why, once a minute each reason (read-only; an I/O error as the WAL
        # cannot be written), not a line a refused batch (helper-125)
        said = server.log_path.read_text()
        told = [line.partition(" (503): ")[2] for line in said.splitlines()
                if " WARNING chargebox.db the database takes no write (503): " in line]  # fmt: skip
        assert "attempt to write a readonly database" in told, said[-3000:]
        assert len(told) == len(set(told)) <= 2, told
        assert "goes run by run" not in said, said[-3000:]
        # Cleared: every write succeeds at once, sequential ones (on every server thread
        # in turn, mostly) and concurrent ones (the group writer), the refused keys once.
        assert_sold(sell_all(server.url, key, refused + keys("after", 80), workers=1))
        assert_sold(sell_all(server.url, key, keys("after-many", 128), workers=64))
        assert_sold(sell_all(server.url, key, keys("again", 128), workers=1))
        sold = 20 + 48 + 80 + 128 + 128
        assert_reads_work(server, key, CREDIT - sold * AMOUNT)
    assert_books(db_path, seller_id, sold)


def read_all(url: str, seller_key: str, count: int, workers: int) -> list[int]:
    """GET /api/me `count` times from `workers` concurrent clients; the status codes."""
    local, opened = threading.local(), []

    def one(_: int) -> int:
        if not hasattr(local, "api"):
            local.api = Api(url, seller_key)
            opened.append(local.api)
        return local.api.session.get(url + "/api/me", timeout=REQUEST_TIMEOUT).status_code

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        statuses = list(pool.map(one, range(count)))
    for api in opened:
        api.close()
    return statuses


def fill(path: Path) -> int:
    """Write zeros to `path` until the filesystem is full; return the bytes written."""
    written, chunk = 0, b"\0" * 65536
    with open(path, "wb", buffering=0) as filler:
        while True:
            try:
                written += filler.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        with contextlib.suppress(OSError):
            while filler.write(b"\0" * 512):  # the last partial blocks
                pass
    return written


@contextlib.contextmanager
def tiny_filesystem(where: Path, size: str):
    needs_root("mounting a tmpfs")
    where.mkdir()
    run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)]).returncode != 0:
            run("umount", "--lazy", str(where))  # still detach it, then say so
            pytest.fail(f"{where} was still busy at unmount")


def test_a_full_disk_refuses_writes_with_503_changes_nothing_and_recovers_when_space_frees(
    tmp_path,
):
    """The database (and the server's log) on an 8 MB tmpfs that a filler file fills up."""
    with tiny_filesystem(tmp_path / "disk", "8m") as disk:
        db_path = disk / "cb.db"
        with serving(db_path) as (server, seller_id, key):
            assert_sold(sell_all(server.url, key, keys("warm", 20)))
            filler = disk / "filler"
            assert fill(filler) > 0
            # Room SQLite allocated earlier may take a few more sales; then it must refuse.
            sold, refused = 20, []
            for batch in range(40):
                results = sell_all(server.url, key, keys(f"full{batch}", 32), workers=16)
                for key_, (response, _) in results.items():
                    if response.status_code == 201:
                        sold += 1
                    else:
                        assert_unavailable(response)
                        refused.append(key_)
                if all(response.status_code == 503 for response, _ in results.values()):
                    break
            else:
                pytest.fail("the full disk never refused a whole batch of sales")
            assert_reads_work(server, key, CREDIT - sold * AMOUNT)
            assert stored_keys(db_path).isdisjoint(refused), "a 503 changed something"
            assert reconciled_balances(db_path)[seller_id] == CREDIT - sold * AMOUNT
            admin = server.admin()
            assert_made_or_unavailable(admin, db_path)
            admin.close()

            filler.unlink()
            assert_sold(sell_all(server.url, key, refused, workers=16))
            assert_sold(sell_all(server.url, key, keys("after", 64), workers=16))
            sold += len(refused) + 64
            assert_reads_work(server, key, CREDIT - sold * AMOUNT)
            print(f"\ndisk full: {len(refused)} sales refused with 503, all sold after")
        assert_books(db_path, seller_id, sold)


def test_a_writer_holding_the_lock_makes_sales_503_after_the_busy_timeout_then_they_resume(
    tmp_path,
):
    """Another process sits in BEGIN IMMEDIATE; the server's busy timeout is 0.5 s."""
    db_path = tmp_path / "cb.db"
    with serving(db_path, CHARGEBOX_BUSY_TIMEOUT_MS="500") as (server, seller_id, key):
        assert_sold(sell_all(server.url, key, keys("warm", 10)))
        blocked = keys("locked", 24)
        with write_lock_held(db_path):
            first = sell_all(server.url, key, blocked[:1])[blocked[0]]
            assert_unavailable(first[0])
            assert 0.4 <= first[1] < 3, f"answered after {first[1]:.2f}s, busy timeout is 0.5s"
            for response, seconds in sell_all(server.url, key, blocked[1:]).values():
                assert_unavailable(response)
                assert seconds < 5, f"a queued sale waited {seconds:.1f}s"
            # Reads answered while the other process still holds the write lock (until the
            # block ends) needed no lock: a read that waited for it would have got a 503.
            assert_reads_work(server, key, CREDIT - 10 * AMOUNT)
            assert stored_keys(db_path).isdisjoint(blocked), "a 503 changed something"
        assert_sold(sell_all(server.url, key, blocked))
        assert_sold(sell_all(server.url, key, blocked), replayed=True)
    assert_books(db_path, seller_id, 10 + 24)


def test_a_chargebox_process_stopped_mid_write_makes_sales_503_instead_of_hanging(tmp_path):
    """Like `chargebox create-seller` suspended inside its write: it holds the gate too."""
    db_path = tmp_path / "cb.db"
    with serving(db_path, CHARGEBOX_BUSY_TIMEOUT_MS="500") as (server, seller_id, key):
        assert_sold(sell_all(server.url, key, keys("warm", 4)))
        with write_lock_held(db_path, gate=True):
            for response, seconds in sell_all(server.url, key, keys("gated", 4)).values():
                assert_unavailable(response)
                assert seconds < 5, f"a sale waited {seconds:.1f}s for the gate"
        # Whatever happened above, the same keys sell exactly once now.
        results = sell_all(server.url, key, keys("gated", 4))
        assert all(response.status_code == 201 for response, _ in results.values())
    assert_books(db_path, seller_id, 4 + 4)


BUSY_TIMEOUT = 2.0
# What docs promise on top of the busy timeout (README, Durability): one transaction's
# time and SQLite's last busy-handler sleep.
PROMISED_MARGIN = 0.5
# A refused sale's time inside the server (its access log's duration_ms, so no client
# thread's scheduling is in it) must stay below halfway between the promise (one busy
# timeout) and the old double wait (two): a bound about a second away from either.
WAITED_ONCE = BUSY_TIMEOUT * 1.5 + PROMISED_MARGIN
# What a client waits for one, loosely (its wait for a worker thread included, which
# the server's duration leaves out): the old double wait plus the promise's margin.
QUEUED_TOO = BUSY_TIMEOUT * 2 + PROMISED_MARGIN
REFUSED_SALE = re.compile(r"method=POST path=/api/sales status=503 duration_ms=([\d.]+)")


def health_while(busy: threading.Event, url: str) -> list[float]:
    """Ask /health again and again until `busy` clears; how long each answer took."""
    took = []
    client = Api(url)
    try:
        while not busy.is_set():
            started = time.monotonic()
            assert client.get("/health").status_code == 200
            took.append(time.monotonic() - started)
    finally:
        client.close()
    return took


@pytest.mark.parametrize("group_commit", ["on", "off"])
def test_writes_waiting_on_a_held_lock_are_answered_within_the_busy_timeout_and_health_answers(
    tmp_path, group_commit
):
    """80 sales race 16 server threads while another process holds the write lock.

    Before, a write queued for group commit waited for the lock once behind the
    batch in progress and once more in its own batch (about twice the busy
    timeout), and with every thread waiting /health went unanswered. Now each
    write is answered by its own deadline, 503 if the lock never came, and some
    threads stay free for reads.
    """
    db_path = tmp_path / "cb.db"
    env = {"CHARGEBOX_BUSY_TIMEOUT_MS": str(int(BUSY_TIMEOUT * 1000))}
    env["CHARGEBOX_GROUP_COMMIT"] = group_commit
    with serving(db_path, threads=16, **env) as (server, seller_id, key):
        assert_sold(sell_all(server.url, key, keys("warm", 8)))
        blocked = keys("held", 80)
        done = threading.Event()
        with write_lock_held(db_path), concurrent.futures.ThreadPoolExecutor(1) as watcher:
            health = watcher.submit(health_while, done, server.url)
            try:
                results = sell_all(server.url, key, blocked, workers=80)
            finally:
                done.set()
            took = health.result()
            assert stored_keys(db_path).isdisjoint(blocked), "a 503 changed something"
        slowest = max(seconds for _, seconds in results.values())
        print(
            f"\nlock held: {len(results)} sales answered 503 within {slowest:.2f}s "
            f"(busy timeout {BUSY_TIMEOUT}s); /health answered {len(took)} times, "
            f"slowest {max(took):.3f}s"
        )
        for response, seconds in results.values():
            assert_unavailable(response)
            # and as the client waits (its queue in waitress too): loosely, two busy timeouts
            assert seconds < QUEUED_TOO, seconds
        inside = [float(ms) / 1000 for ms in REFUSED_SALE.findall(server.log_path.read_text())]
        print(f"inside the server: slowest 503 {max(inside, default=0):.2f}s")
        assert len(inside) == len(blocked) and max(inside) < WAITED_ONCE, sorted(inside)[-5:]
        assert len(took) >= 2 and max(took) < BUSY_TIMEOUT, "/health waited for the writers"
        assert_sold(sell_all(server.url, key, blocked, workers=16))
    assert_books(db_path, seller_id, 8 + 80)

"""Rollback detection: an older genuine copy of the database, put back, is noticed.

The sealed heads are anchored outside the file (`<db>.anchors`) by the running
server, by backups and by clean audits. Each test makes the copy an operator could
have (a file copied while the server was stopped, or a backup), sells on, puts the
copy back, and expects `chargebox audit` and start-up to say so, until the restore is
accepted. Anchoring runs beside the sales and must never hold one up or fail one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from chargebox import anchors
from tests.support import (
    cannot,
    credited_seller,
    new_seller,
    reconciled_balances,
    running_server,
    wait_until,
)
from tests.test_backup import chargebox, key_env

pytestmark = pytest.mark.timeout(300)
FAST = {"CHARGEBOX_ANCHOR_SECONDS": "1"}
SALE = {"phone": "09121234567", "amount": 1_000}


def anchored_entries(db: Path, seller_id: int) -> int:
    """What the anchors file holds for a seller (0 if nothing yet), read as the check does."""
    key = (db.parent / "ledger_key").read_text().strip().encode()
    held = anchors.read(db.with_name(db.name + ".anchors"), key).heads
    return held[seller_id].head.entries if seller_id in held else 0


def put_back(copy: Path, live: Path) -> None:
    """The operator's mistake (or an intruder's move): an older file where the live one was."""
    for end in ("", "-wal", "-shm"):
        Path(f"{live}{end}").unlink(missing_ok=True)
    shutil.copy2(copy, live)


def serve_refused(live: Path) -> str:
    """`chargebox serve` on the file: it must refuse at once (and not start serving)."""
    result = chargebox("serve", "--db", str(live), "--port", "0", env=key_env(live), timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    return result.stderr


def refused_then_accepted(live: Path, refused: str, checked: str) -> str:
    """Start-up refuses the file (saying `refused`), `anchors check` finds it (`checked`),
    and `anchors accept-restore` accepts it: what that said."""
    refusal = serve_refused(live)
    assert refused in refusal and "accept-restore" in refusal
    check = chargebox("anchors", "check", "--db", str(live), env=key_env(live))
    assert check.returncode == 1 and checked in check.stderr
    accepted = chargebox("anchors", "accept-restore", "--db", str(live), env=key_env(live))
    assert accepted.returncode == 0, accepted.stderr
    return accepted.stderr


@pytest.mark.sqlite_only
def test_an_older_copy_put_back_is_found_by_the_audit_and_refused_at_start_up(tmp_path):
    """The copy is the file itself, copied while the server was stopped; the server then
    sells on and is killed with SIGKILL (no last anchoring at stop): its periodic
    anchoring alone (every second here) has put the later heads outside the file."""
    live, copy = tmp_path / "chargebox.db", tmp_path / "old.db"
    with running_server(live, env=FAST) as server:
        seller, key = new_seller(server.admin(), "shop", credit=100_000)
        shop = server.seller(key)
        assert shop.post("/api/sales", SALE).status_code == 201
    shutil.copy2(live, copy)  # a clean stop checkpointed the WAL: the file is all of it
    server = running_server(live, env=FAST)
    with server as process:
        shop = process.seller(key)
        for _ in range(3):
            assert shop.post("/api/sales", SALE).status_code == 201
        wait_until(lambda: anchored_entries(live, seller["id"]) == 5, "the new head anchored")
        process.stop(signal.SIGKILL)
        process.proc = None  # already stopped: running_server's own stop has nothing to do
    put_back(copy, live)
    audited = chargebox("audit", "--db", str(live), env=key_env(live))
    assert audited.returncode == 1
    assert f"anchor: seller {seller['id']}" in audited.stderr and "rolled back" in audited.stderr
    accepted = refused_then_accepted(live, "older than its anchors", "rolled back")
    assert "1 seller(s) were behind" in accepted
    assert chargebox("audit", "--db", str(live), env=key_env(live)).returncode == 0
    with running_server(live) as server:
        shop = server.seller(key)
        sold = shop.post("/api/sales", SALE)
        assert sold.status_code == 201 and sold.json()["balance_after"] == 98_000, sold.text
    assert reconciled_balances(live) == {seller["id"]: 98_000}


@pytest.mark.sqlite_only
def test_anchors_check_without_its_file_says_nothing_was_checked(tmp_path):
    """A deleted anchors file (or a wrong CHARGEBOX_ANCHORS) passed as a clean check; the
    audit, which then anchors afresh, says what it could not compare (helper-130);
    accept-restore refuses: there is nothing to accept against (helper-133)."""
    live = tmp_path / "chargebox.db"
    fresh = chargebox("init-db", "--db", str(live))
    assert fresh.returncode == 0, fresh.stderr
    empty = chargebox("anchors", "check", "--db", str(live), env=key_env(live))
    assert empty.returncode == 0 and "nothing checked" in empty.stderr, empty.stderr
    with running_server(live) as server:
        new_seller(server.admin(), "shop", credit=1_000)
    Path(f"{live}.anchors").unlink()
    gone = chargebox("anchors", "check", "--db", str(live), env=key_env(live))
    assert gone.returncode == 1, gone.stderr
    assert "no anchors file" in gone.stderr and "1 seller(s) have sealed entries" in gone.stderr
    accepted = chargebox("anchors", "accept-restore", "--db", str(live), env=key_env(live))
    assert accepted.returncode == 2 and "no anchors file" in accepted.stderr, accepted.stderr
    assert not Path(f"{live}.anchors").exists()  # nothing accepted, no new file (helper-133)
    audited = chargebox("audit", "--db", str(live), env=key_env(live))  # clean, and says so
    assert audited.returncode == 0, audited.stderr
    assert f"no anchors file at {live}.anchors when it began" in audited.stderr
    again = chargebox("audit", "--db", str(live), env=key_env(live))  # the clean one made it
    assert again.returncode == 0 and "no anchors file" not in again.stderr, again.stderr


@pytest.mark.sqlite_only
def test_a_copy_that_was_written_on_after_the_anchors_is_another_history(tmp_path):
    """Put back, then sold on elsewhere (anchors left behind): more entries than were
    anchored, but not the anchored ones. The audit tells it apart from an older copy."""
    live, copy = tmp_path / "chargebox.db", tmp_path / "old.db"
    with running_server(live) as server:
        seller, key = new_seller(server.admin(), "shop", credit=100_000)
    shutil.copy2(live, copy)
    with running_server(live) as server:
        assert server.seller(key).post("/api/sales", SALE).status_code == 201
    anchors_file = live.with_name(live.name + ".anchors")
    assert anchored_entries(live, seller["id"]) == 2  # the last anchoring, at the clean stop
    aside = tmp_path / "anchors.aside"
    anchors_file.rename(aside)
    put_back(copy, live)
    with running_server(live) as server:  # no anchors here: it serves, and sells on twice
        shop = server.seller(key)
        for _ in range(2):
            assert shop.post("/api/sales", {**SALE, "amount": 2_000}).status_code == 201
    aside.replace(anchors_file)
    audited = chargebox("audit", "--db", str(live), env=key_env(live))
    assert audited.returncode == 1 and "another history" in audited.stderr
    assert "another history" in serve_refused(live)


@pytest.mark.sqlite_only
def test_a_forged_anchor_line_is_reported_and_changes_nothing(tmp_path):
    """A line written without the ledger key (here: claiming far more entries than the
    seller has) does not verify: the audit reports it, start-up ignores it and serves."""
    live = tmp_path / "chargebox.db"
    with running_server(live) as server:
        seller, key = new_seller(server.admin(), "shop", credit=100_000)
    anchors_file = live.with_name(live.name + ".anchors")
    genuine = json.loads(anchors_file.read_text().splitlines()[-1])
    forged = {**genuine, "heads": [[seller["id"], 999, 999, "0" * 64]]}
    with anchors_file.open("a") as handle:
        handle.write(json.dumps(forged) + "\n")
    audited = chargebox("audit", "--db", str(live), env=key_env(live))
    assert audited.returncode == 1
    assert "does not match its seal" in audited.stderr and "rolled back" not in audited.stderr
    with running_server(live) as server:
        assert server.seller(key).post("/api/sales", SALE).status_code == 201
    accepted = chargebox("anchors", "accept-restore", "--db", str(live), env=key_env(live))
    assert accepted.returncode == 0, accepted.stderr  # the operator looked: the line goes
    assert chargebox("audit", "--db", str(live), env=key_env(live)).returncode == 0


@pytest.mark.sqlite_only
def test_a_backup_anchors_what_it_copied(tmp_path):
    """Even with the server's anchoring far off (an hour), a backup anchors the heads it
    copied: the live file can never go back behind its own last backup unnoticed."""
    live, copy = tmp_path / "chargebox.db", tmp_path / "old.db"
    slow = {"CHARGEBOX_ANCHOR_SECONDS": "3600"}
    with running_server(live, env=slow) as server:
        seller, key = new_seller(server.admin(), "shop", credit=100_000)
        shutil.copy2(live, copy)  # an unclean copy of the file alone: its WAL is elsewhere
        for _ in range(2):
            assert server.seller(key).post("/api/sales", SALE).status_code == 201
        made = chargebox("backup", "--db", str(live), str(tmp_path / "backup.db"))
        assert made.returncode == 0, made.stderr
        assert anchored_entries(live, seller["id"]) == 3
        server.stop(signal.SIGKILL)
        server.proc = None
    put_back(copy, live)
    assert "older than its anchors" in serve_refused(live)


@pytest.mark.sqlite_only
def test_anchoring_that_cannot_write_never_holds_up_or_fails_a_sale(tmp_path):
    """Threads sell for ~3 s while the anchors' append lock is held by someone else (the
    server's anchoring thread waits on it), then with the anchors file unwritable
    (CHARGEBOX_ANCHORS in /proc): every sale is answered 201, and the server stops
    cleanly in time. The anchoring resumes once the lock is free."""
    live = tmp_path / "chargebox.db"
    with running_server(live, env=FAST) as server:
        seller, key = new_seller(server.admin(), "shop", credit=10_000_000)
        lock = os.open(f"{live}.anchors.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            statuses = sell_for(server, key, seconds=3)
        finally:
            os.close(lock)
        assert statuses and set(statuses) == {201}, statuses
        sold = len(statuses) + 1  # and the credit
        wait_until(lambda: anchored_entries(live, seller["id"]) == sold, "anchoring resumes")
    with running_server(live, env={**FAST, "CHARGEBOX_ANCHORS": "/proc/self/no-anchors"}) as s:
        statuses = sell_for(s, key, seconds=2)
        assert statuses and set(statuses) == {201}, statuses
        assert "anchoring failed" in wait_for_log(s, "anchoring failed")


def wait_for_log(server, text: str) -> str:
    wait_until(lambda: text in server.log_path.read_text(), f"{text!r} in the server's log")
    return server.log_path.read_text()


def sell_for(server, key: str, seconds: float) -> list[int]:
    """Four threads selling back to back for `seconds`; every status answered."""
    statuses: list[int] = []
    stop = time.monotonic() + seconds

    def sell() -> None:
        shop = server.seller(key)
        while time.monotonic() < stop:
            statuses.append(shop.post("/api/sales", SALE).status_code)
        shop.close()

    threads = [threading.Thread(target=sell) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def test_start_up_and_the_audit_anchor_on_either_backend(new_server, tmp_path, backend):
    """Nothing breaks on PostgreSQL (anchors in --data-dir) or SQLite: a clean stop and a
    clean audit leave anchors that the next start-up and audit agree with."""
    with new_server(tmp_path) as server:
        _seller, key = new_seller(server.admin(), "shop", credit=10_000)
        assert server.seller(key).post("/api/sales", SALE).status_code == 201
        assert server.admin().get("/api/audit").json()["consistent"] is True
        db, data = server.db_path, server.data_dir
    anchors_file = (data / "anchors") if data else Path(f"{db}.anchors")
    assert anchors_file.exists()
    with running_server(db, data_dir=data) as server:
        assert server.seller(key).post("/api/sales", SALE).status_code == 201
        assert server.admin().get("/api/audit").json()["consistent"] is True


@pytest.mark.sqlite_only
def test_with_two_server_processes_one_of_them_anchors(tmp_path):
    """`--processes 2`: each process's anchoring thread sees the shared heads move, but
    every line the servers anchor comes from one process, the holder of the writer flock
    (without it, both would write each round)."""
    live = tmp_path / "chargebox.db"
    with running_server(live, env={**FAST, "CHARGEBOX_PROCESSES": "2"}) as server:
        seller, key = new_seller(server.admin(), "shop", credit=10_000_000)
        statuses = sell_for(server, key, seconds=3)
        assert statuses and set(statuses) == {201}, statuses
        wait_until(
            lambda: anchored_entries(live, seller["id"]) == len(statuses) + 1, "all anchored"
        )
    lines = [json.loads(text) for text in Path(f"{live}.anchors").read_text().splitlines()]
    writers = {line["by"] for line in lines if line["by"].startswith("server")}
    assert len(writers) == 1 and len([ln for ln in lines if ln["by"] in writers]) >= 2, lines


def test_heads_anchored_while_an_audit_runs_are_not_taken_for_a_rollback(service):
    """A server anchors heads beside the sales, so while an audit walks its snapshot a
    head committed after that snapshot may be anchored. The audit reads the anchors file
    before its snapshot: what it compares holds only heads its snapshot holds. (Read
    after, under an hour of load every audit that took seconds saw every seller
    "rolled back", and no checkpoint was recorded any more.)"""
    seller = credited_seller(service, 100_000)["id"]
    service.sell(seller, SALE["phone"], SALE["amount"])
    meanwhile = []

    def sell_and_anchor_once(what: str, done: int, of: int) -> None:
        if not meanwhile:  # the audit's snapshot is taken: sell after it, and anchor
            with ThreadPoolExecutor(1) as other:  # another thread: its own connection
                meanwhile.append(other.submit(sell_and_anchor, service, seller).result(60))

    audit = service.audit(full=True, progress=sell_and_anchor_once)
    assert meanwhile == [3], "the audit never walked: the test tested nothing"
    assert audit["consistent"], audit["problems"]
    assert service.audit(full=True)["consistent"]  # and the next one sees the new head


def sell_and_anchor(service, seller_id: int) -> int:
    """A sale committed now, then every head anchored, as the server's keeper does."""
    service.sell(seller_id, SALE["phone"], SALE["amount"])
    database = service.database
    heads = anchors.heads(database)
    anchors.record(database.config, database.ledger_key, heads, "server (test)")
    return max(head.entries for head in heads)


def appended(path: Path, key: bytes, sellers: range, rounds: int) -> None:
    """`rounds` appends, each anchoring `sellers` one entry further."""
    for n in range(rounds):
        heads = [anchors.Head(s, 10 + n, 10 + n, f"{s:064x}") for s in sellers]
        anchors.append(path, key, anchors.line(key, heads, "server"))


def chattr(flag: str, path: Path) -> None:
    """`chattr`, which needs root, e2fsprogs and a filesystem that keeps the flag: without
    them the test skips and says why, unless CI is set (README)."""
    why = "no chattr here"
    if shutil.which("chattr"):
        done = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        why = done.stderr.strip()
    cannot(f"chattr {flag} failed ({why}): this test needs root and e2fsprogs")


@pytest.fixture
def small_files(monkeypatch):
    """Compaction past 600 bytes, and no threshold remembered from another test."""
    monkeypatch.setattr(anchors, "COMPACT_AT", 600)
    monkeypatch.setattr(anchors, "_COMPACT_PAST", {}, raising=False)


def test_an_append_only_anchors_file_takes_every_line_and_is_rewritten_no_more(
    tmp_path, small_files, caplog
):
    """`chattr +a` (README): the compaction's rename is refused. That refusal used to fail
    the append that set it off (the round's heads then counted as not anchored, so every
    later round wrote them all again), and each round read and rewrote the whole file
    to be refused again, leaving its temporary copy. Now each line is kept, the refusal
    is logged once, and nothing is tried again or left behind."""
    path, key = tmp_path / "anchors", b"k" * 32
    appended(path, key, range(1, 3), rounds=1)
    chattr("+a", path)
    try:
        appended(path, key, range(1, 3), rounds=30)  # ~5 KB: past 600 bytes many times
        assert len(path.read_text().splitlines()) == 31
        assert anchors.read(path, key).heads[2].head.entry_id == 39
        assert [r.message for r in caplog.records].count(
            f"{path} was not compacted (it grows until whoever rotates it compacts it): "
            "PermissionError: [Errno 1] Operation not permitted: "
            f"'{path.parent}/.anchors.{os.getpid()}.compacting' -> '{path}'"
        ) == 1  # fmt: skip
        assert sorted(p.name for p in tmp_path.iterdir()) == ["anchors", "anchors.lock"]
    finally:
        chattr("-a", path)


def test_a_file_whose_newest_anchors_pass_the_threshold_is_not_rewritten_each_append(
    tmp_path, small_files, monkeypatch
):
    """Many sellers: what a compaction keeps is itself past COMPACT_AT. The next compaction
    waits for twice that, instead of rewriting the whole file at every round."""
    path, key = tmp_path / "anchors", b"k" * 32
    compactions = []
    real = anchors._compact
    monkeypatch.setattr(anchors, "_compact", lambda *a: compactions.append(real(*a)))
    appended(path, key, range(1, 9), rounds=20)  # 8 sellers: ~1 KB a line
    kept = len(path.read_text().splitlines())
    assert 2 <= len(compactions) <= 7, compactions  # each third append (19 of 20 before)
    assert kept <= 3 and anchors.read(path, key).heads[8].head.entry_id == 29


def test_a_compaction_that_failed_otherwise_is_tried_again_once_the_file_doubled(
    tmp_path, small_files, monkeypatch
):
    """A full disk is not an append-only file: compaction is not given up for good (the
    file would then grow until a restart), only put off until the file has doubled."""
    path, key = tmp_path / "anchors", b"k" * 32
    compactions = []
    real = anchors._compact

    def full_disk_once(*args) -> None:
        compactions.append(len(path.read_bytes()))
        if len(compactions) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*args)

    monkeypatch.setattr(anchors, "_compact", full_disk_once)
    appended(path, key, range(1, 3), rounds=40)
    assert len(compactions) >= 3, compactions  # tried again, and again after that
    assert compactions[1] >= 2 * compactions[0] - 300  # once it had about doubled
    assert len(path.read_text().splitlines()) < 10


def test_a_compactions_copy_left_by_a_dead_process_is_swept_by_the_next(tmp_path):
    """Only its own file's: another anchors file's copy in the same directory is written
    under that file's lock, not this one's."""
    path, key = tmp_path / "anchors", b"k" * 32
    appended(path, key, range(1, 3), rounds=2)
    left = tmp_path / ".anchors.999999.compacting"
    left.write_text("half a compaction")
    others = tmp_path / ".anchors.b.999999.compacting"
    others.write_text("another file's compaction, in flight")
    anchors.compact(path, key)
    assert not left.exists() and len(path.read_text().splitlines()) == 1
    assert others.exists()

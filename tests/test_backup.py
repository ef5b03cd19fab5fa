"""`chargebox backup DEST` under sale load, and a restore that serves and reconciles.

A real server sells, hammered by threads of this process and by spawned
processes (keyed sales, back to back), while `chargebox backup` runs again and
again as an operator types it. Every backup must succeed; every copy must be one
consistent moment (`chargebox audit` clean on it, each balance equal to its ledger
re-added from a fresh connection) lying between the sales before and after it.
Then a copy is restored as README says (stop, put it in place, serve) and sells on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chargebox import backup, keeping
from chargebox.config import Config
from chargebox.pg_driver import find_pg_dump
from tests import pg_cluster
from tests.support import (
    ROOT,
    Api,
    cli_audit,
    credited_seller,
    new_seller,
    reconciled_balances,
    rows_on_disk,
    running_server,
)

pytestmark = pytest.mark.timeout(600)

LOAD_SECONDS_MAX = 120  # the load stops long before; a bound in case the test hangs
SELLERS = 3
CREDIT = 50_000_000


def chargebox(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m chargebox.cli ARGS`, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "chargebox.cli", *args],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CHARGEBOX_")},
            **(env or {}),
        },  # fmt: skip
        capture_output=True,
        text=True,
        timeout=timeout,  # a `serve` expected to refuse that serves instead fails here
    )


def sell_until(url: str, keys: list[str], prefix: str, stop, answered) -> None:
    """Keyed sales over `keys`, back to back, until `stop` is set; counts each 201."""
    sessions = [Api(url, key) for key in keys]
    deadline = time.monotonic() + LOAD_SECONDS_MAX
    n = 0
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            answer = sessions[n % len(keys)].post(
                "/api/sales",
                {"phone": f"0912{n % 9973:07d}", "amount": 1_000 + n % 9},
                headers={"Idempotency-Key": f"{prefix}-{n}"},
            )
            assert answer.status_code == 201, answer.text
            with answered.get_lock():
                answered.value += 1
            n += 1
    finally:
        for session in sessions:
            session.close()


@dataclasses.dataclass
class Load:
    """Threads here and spawned processes selling until stopped."""

    url: str
    keys: list[str]
    threads: int = 4
    processes: int = 2

    def __post_init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.answered = context.Value("q", 0)
        self.errors: list[BaseException] = []
        self.workers: list = []

    def _thread(self, prefix: str) -> None:
        try:
            sell_until(self.url, self.keys, prefix, self.stop, self.answered)
        except BaseException as exc:  # surfaced by finish()
            self.errors.append(exc)

    def start(self) -> Load:
        context = multiprocessing.get_context("spawn")
        for n in range(self.processes):
            args = (self.url, self.keys, f"p{n}", self.stop, self.answered)
            self.workers.append(context.Process(target=sell_until, args=args))
        for n in range(self.threads):
            self.workers.append(threading.Thread(target=self._thread, args=(f"t{n}",)))
        for worker in self.workers:
            worker.start()
        self.wait_for(50)
        return self

    def wait_for(self, more: int) -> None:
        """Until `more` further sales were answered (or fail the test at a deadline)."""
        target = self.answered.value + more
        deadline = time.monotonic() + 60
        while self.answered.value < target:
            assert time.monotonic() < deadline, "the load stopped selling"
            assert all(w.is_alive() for w in self.workers), f"a load worker died {self.errors}"
            time.sleep(0.01)

    def finish(self) -> int:
        self.stop.set()
        for worker in self.workers:
            worker.join(60)
        assert not self.errors, self.errors[0]
        codes = [w.exitcode for w in self.workers if hasattr(w, "exitcode")]
        assert codes == [0] * self.processes, f"a load process failed: {codes}"
        return self.answered.value


def sale_count(db) -> int:
    return rows_on_disk(db, "SELECT COUNT(*) FROM sale")[0][0]


def funded_sellers(server) -> list[str]:
    admin = server.admin()
    keys = [new_seller(admin, f"shop {n}", credit=CREDIT)[1] for n in range(SELLERS)]
    admin.close()
    return keys


def key_env(db: Path) -> dict:
    return {"CHARGEBOX_LEDGER_KEY": (db.parent / "ledger_key").read_text().strip()}


@pytest.mark.sqlite_only
def test_backups_under_threads_and_processes_selling_are_each_one_consistent_moment(tmp_path):
    """Five backups while 4 threads and 2 processes sell without pause: each succeeds,
    each copy audits clean with the ledger key and reconciles from a fresh connection,
    holds at least the sales answered before it began and at most those answered by
    its end, and is a single file (no -wal beside it). The live file audits clean."""
    live = tmp_path / "live" / "chargebox.db"
    live.parent.mkdir()
    (tmp_path / "copies").mkdir()
    with running_server(live, threads=32) as server:
        load = Load(server.url, funded_sellers(server)).start()
        try:
            for n in range(5):
                before = load.answered.value
                copy = tmp_path / "copies" / f"copy-{n}.db"
                made = chargebox("backup", "--db", str(live), str(copy))
                after = load.answered.value
                assert made.returncode == 0, made.stderr
                assert "backed up to" in made.stderr and "ledger key" in made.stderr
                sold = sale_count(copy)
                assert before <= sold <= after + 6, (before, sold, after)  # 6 in flight at most
                load.wait_for(30)  # sales between two backups
        finally:
            answered = load.finish()
    assert sorted(p.name for p in (tmp_path / "copies").iterdir()) == [
        f"copy-{n}.db" for n in range(5)
    ]  # no partial file, no -wal, no -journal left beside the copies
    counts = []
    for n in range(5):
        copy = tmp_path / "copies" / f"copy-{n}.db"
        audited = chargebox("audit", "--db", str(copy), env=key_env(live))
        assert audited.returncode == 0, audited.stderr
        assert "books reconcile" in audited.stderr
        balances = reconciled_balances(copy)
        assert sum(balances.values()) == SELLERS * CREDIT - sum(
            amount for (amount,) in rows_on_disk(copy, "SELECT amount FROM sale")
        )
        with sqlite3.connect(copy) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        counts.append(sale_count(copy))
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert sale_count(live) == answered
    assert cli_audit(live).returncode == 0


@pytest.mark.sqlite_only
def test_a_restored_copy_serves_sells_and_reconciles(tmp_path):
    """The README's restore: stop the server, put the copy in place of the file (start-up
    refuses it: it is older than its anchors), accept the restore, start. The sales made
    after the backup are gone (that is what a restore means); the copy's balances are
    where it left them, it sells on, and the books reconcile."""
    live = tmp_path / "chargebox.db"
    copy = tmp_path / "backup.db"
    with running_server(live) as server:
        admin = server.admin()
        seller, key = new_seller(admin, "shop", credit=1_000_000)
        shop = server.seller(key)
        for _ in range(20):
            assert shop.post("/api/sales", {"phone": "09121234567", "amount": 10_000}).ok
        made = chargebox("backup", "--db", str(live), str(copy))
        assert made.returncode == 0, made.stderr
        for _ in range(5):  # sold after the backup: not in the copy
            assert shop.post("/api/sales", {"phone": "09121234567", "amount": 10_000}).ok
        shop.close()
        admin.close()
    assert reconciled_balances(live)[seller["id"]] == 750_000
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in ("chargebox.db", "chargebox.db-wal", "chargebox.db-shm"):
        if (tmp_path / name).exists():
            shutil.move(tmp_path / name, aside / name)
    shutil.copy2(copy, live)
    refused = chargebox("serve", "--db", str(live), "--port", "0", env=key_env(live), timeout=30)
    assert refused.returncode == 2 and "older than its anchors" in refused.stderr
    accepted = chargebox("anchors", "accept-restore", "--db", str(live), env=key_env(live))
    assert accepted.returncode == 0, accepted.stderr
    with running_server(live) as server:
        shop = server.seller(key)
        assert shop.get("/api/me").json()["balance"] == 800_000
        sold = shop.post("/api/sales", {"phone": "09121234567", "amount": 30_000})
        assert sold.status_code == 201, sold.text
        assert sold.json()["balance_after"] == 770_000
        shop.close()
    assert reconciled_balances(live)[seller["id"]] == 770_000
    assert cli_audit(live).returncode == 0


@pytest.mark.sqlite_only
def test_a_backup_never_replaces_a_file_unless_forced_and_leaves_no_partial_copy(tmp_path):
    live = tmp_path / "chargebox.db"
    with running_server(live) as server:
        new_seller(server.admin(), "shop", credit=1_000)
    taken = tmp_path / "taken.db"
    taken.write_bytes(b"an earlier backup")
    refused = chargebox("backup", "--db", str(live), str(taken))
    assert refused.returncode == 2
    assert "exists" in refused.stderr and "--force" in refused.stderr
    assert taken.read_bytes() == b"an earlier backup"
    forced = chargebox("backup", "--db", str(live), str(taken), "--force")
    assert forced.returncode == 0, forced.stderr
    assert rows_on_disk(taken, "SELECT COUNT(*) FROM seller") == [(1,)]
    itself = chargebox("backup", "--db", str(live), str(live), "--force")
    assert itself.returncode == 2 and "the database itself" in itself.stderr
    nowhere = chargebox("backup", "--db", str(live), str(tmp_path / "no" / "such" / "x.db"))
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr
    slashed = chargebox("backup", "--db", str(live), f"{tmp_path / 'nightly'}/")  # a typo'd dir
    assert slashed.returncode == 2 and "no such directory" in slashed.stderr, slashed.stderr
    assert not (tmp_path / "nightly").exists()  # not a file of its name
    missing = chargebox("backup", "--db", str(tmp_path / "none.db"), str(tmp_path / "x.db"))
    assert missing.returncode == 2 and "no database there" in missing.stderr
    (tmp_path / "daily").mkdir()
    stamped = chargebox("backup", "--db", str(live), str(tmp_path / "daily"))
    assert stamped.returncode == 0, stamped.stderr
    (made,) = (tmp_path / "daily").iterdir()
    assert made.name.startswith("chargebox-") and made.name.endswith("Z.db")
    vacuumed = chargebox("backup", "--db", str(live), str(tmp_path / "v.db"), "--vacuum")
    assert vacuumed.returncode == 0 and "vacuum-into" in vacuumed.stderr
    assert cli_audit(tmp_path / "v.db").returncode == 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert not leftovers


def test_backups_in_one_second_into_a_folder_each_take_a_second_of_their_own(tmp_path, monkeypatch):
    """A daily and a weekly timer firing together: the second backup's stamped name was
    taken (refused, "exists"); it waits for the next second's. So does one whose name
    appears while it copies (another backup placed first). The stamps stay what --keep
    matches; a name that stays taken is still refused, after RESTAMPS tries."""
    live = tmp_path / "chargebox.db"
    with running_server(live) as server:
        new_seller(server.admin(), "shop", credit=1_000)
    daily = tmp_path / "daily"
    daily.mkdir()
    clock = iter([f"2026-12-07T03:00:0{second}.{n}00000Z" for second, n in
                  [(0, 1), (0, 5), (1, 0), (2, 0), (2, 5), (3, 0)]])  # fmt: skip
    monkeypatch.setattr(backup, "now", lambda: next(clock))
    waits = []
    monkeypatch.setattr(backup.time, "sleep", waits.append)
    config = Config(db_path=live)
    first = backup.backup(config, daily)
    second = backup.backup(config, daily)  # 03:00:00 again: it waits, takes 03:00:01
    assert (first.path.name, second.path.name) == (
        "chargebox-20261207T030000Z.db",
        "chargebox-20261207T030001Z.db",
    )
    assert len(waits) == 1 and 0 < waits[0] <= 1.01

    def place_another_first(*args):
        (daily / "chargebox-20261207T030002Z.db").write_bytes(b"another backup's")

    third = backup.backup(config, daily, after_snapshot=place_another_first)
    # 03:00:02 appeared meanwhile, and the clock still said 03:00:02 after one wait
    assert third.path.name == "chargebox-20261207T030003Z.db" and len(waits) == 3
    assert rows_on_disk(third.path, "SELECT COUNT(*) FROM seller") == [(1,)]
    deleted, left = keeping.past_keeping(third.path, 2)  # 030002Z is no database: left
    assert deleted == [daily / "chargebox-20261207T030000Z.db"]
    assert left == [f"left {daily / 'chargebox-20261207T030002Z.db'}: not a chargebox database"
                    " that can be read (file is not a database)"]  # fmt: skip
    monkeypatch.setattr(backup, "now", lambda: "2026-12-07T03:00:03.500000Z")  # a stuck clock
    for force in (False, True):  # a stamped name is never replaced, --force or not
        with pytest.raises(ValueError, match="exists, as each later second's name did"):
            backup.backup(config, daily, overwrite=force)
    assert len(waits) == 3 + 2 * backup.RESTAMPS
    assert rows_on_disk(third.path, "SELECT COUNT(*) FROM seller") == [(1,)]


def test_a_pg_dump_into_a_folder_takes_the_next_seconds_name_too(tmp_path, monkeypatch):
    """The same on PostgreSQL (pg_dump writes the copy; here a stand-in that writes its
    --file and, as another backup placed first would, the name it was to take)."""
    daily = tmp_path / "daily"
    daily.mkdir()
    taken = daily / "chargebox-20261207T030000Z.dump"
    taken.write_bytes(b"an earlier backup's")
    appears = daily / "chargebox-20261207T030001Z.dump"
    fake = tmp_path / "bin" / "pg_dump"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do\n"
        '  if [ "$1" = --file ]; then echo dump > "$2"; fi; shift\ndone\n'
        f"echo another > {appears}\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    clock = iter(f"2026-12-07T03:00:0{second}.500000Z" for second in (0, 1, 2))
    monkeypatch.setattr(backup, "now", lambda: next(clock))
    monkeypatch.setattr(backup.time, "sleep", lambda seconds: None)
    made = backup.backup(Config(db_url="postgresql://owner@127.0.0.1:1/db"), daily)
    assert made.path == daily / "chargebox-20261207T030002Z.dump"
    assert made.path.read_text() == "dump\n" and appears.read_text() == "another\n"
    assert taken.read_bytes() == b"an earlier backup's"


def test_a_vacuumed_copy_is_owner_only_from_its_first_byte(tmp_path):
    """VACUUM INTO makes the file itself, under the process's umask: it was 0644 while it
    was written (and left so by a backup killed then), until the copy was placed."""
    from chargebox.backup import _copy

    live = tmp_path / "chargebox.db"
    with running_server(live) as server:
        new_seller(server.admin(), "shop", credit=1_000)
    (tmp_path / "copy.partial").touch()  # as partial.making makes it
    mask = os.umask(0o022)
    try:
        _copy(live, tmp_path / "copy.partial", vacuum=True)
        after = os.umask(0o022)
    finally:
        os.umask(mask)
    assert (tmp_path / "copy.partial").stat().st_mode & 0o777 == 0o600
    assert after == 0o022  # the process's own umask is put back


def test_keep_deletes_all_but_the_newest_stamped_copies_by_count_whatever_the_clock(tmp_path):
    """`--keep 3`: of this database's stamped copies the newest 3 by name stay, the one
    just made always among them; a copy named a year ahead (a clock that jumped) holds
    its place; other names and other files are not touched."""
    live = tmp_path / "chargebox.db"
    with running_server(live) as server:
        new_seller(server.admin(), "shop", credit=1_000)
    daily = tmp_path / "daily"
    daily.mkdir()
    first = backup.backup(Config(db_path=live), tmp_path / "first.db")
    older = [daily / f"chargebox-202611{day:02d}T030000Z.db" for day in (1, 2, 3, 4)]
    ahead = daily / "chargebox-99991204T030000Z.db"  # ahead of any clock this test meets
    others = [daily / "shop-20261101T030000Z.db", daily / "chargebox-notes.db",
              daily / "chargebox-20261101T030000Z.db.txt"]  # fmt: skip
    audited = [Path(f"{older[0]}.anchors{end}") for end in ("", ".lock", ".writer")]
    for path in (*older, ahead):
        shutil.copyfile(first.path, path)
    for path in (*others, *audited):
        path.write_bytes(b"an earlier copy")
    kept = chargebox("backup", "--db", str(live), str(daily), "--keep", "3")
    assert kept.returncode == 0, kept.stderr
    (made,) = set(daily.iterdir()) - {*older, ahead, *others}
    assert sorted(daily.iterdir()) == sorted([made, ahead, older[3], *others])
    assert kept.stderr.count("deleted ") == 3 and "(--keep 3)" in kept.stderr
    assert "left " not in kept.stderr, kept.stderr
    assert rows_on_disk(made, "SELECT COUNT(*) FROM seller") == [(1,)]
    again = chargebox("backup", "--db", str(live), str(daily), "--keep", "1", "--force")
    assert again.returncode == 0, again.stderr
    assert ahead.exists() and len(list(daily.glob("chargebox-*Z.db"))) == 2  # it and ahead
    into_a_file = chargebox("backup", "--db", str(live), str(tmp_path / "one.db"), "--keep", "2")
    assert into_a_file.returncode == 2 and "--keep is for a directory" in into_a_file.stderr
    assert not (tmp_path / "one.db").exists()
    for wrong in ("0", "-1", "two"):
        refused = chargebox("backup", "--db", str(live), str(daily), "--keep", wrong)
        assert refused.returncode == 2 and "--keep" in refused.stderr, refused.stderr


def test_keep_leaves_another_databases_copies_and_a_copy_in_use(tmp_path):
    """Two deployments' `chargebox.db` backed up into one directory share their copies'
    names; `--keep 1` deleted the other's (helper-110), and a copy served where it lay,
    its `-wal` orphaned. Only this database's copies count and go; the others are named."""
    prod, staging = tmp_path / "prod" / "chargebox.db", tmp_path / "staging" / "chargebox.db"
    for live, name in ((prod, "prod-shop"), (staging, "staging-shop")):
        live.parent.mkdir()
        with running_server(live) as server:
            new_seller(server.admin(), name, credit=1_000)
    empty = tmp_path / "empty" / "chargebox.db"  # no seller, no entry yet: anyone's
    empty.parent.mkdir()
    assert chargebox("init-db", "--db", str(empty)).returncode == 0
    backups = tmp_path / "backups"
    backups.mkdir()
    names = iter(f"2026-11-0{day}T03:00:00.000000Z" for day in range(1, 10))
    made = {}
    for label, live in (("prod", prod), ("staging", staging), ("empty", empty), ("served", prod)):
        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(backup, "now", lambda: next(names))
            made[label] = backup.backup(Config(db_path=live), backups).path
    served = made["served"]
    Path(f"{served}-wal").write_bytes(b"")  # as a server serving it where it lies leaves it
    in_wal_mode = made["empty"].with_name("chargebox-20261101T000000Z.db")  # served once
    shutil.copyfile(made["prod"], in_wal_mode)
    with contextlib.closing(sqlite3.connect(in_wal_mode)) as conn:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    kept = chargebox("backup", "--db", str(prod), str(backups), "--keep", "1")
    assert kept.returncode == 0, kept.stderr
    assert not made["prod"].exists() and not made["empty"].exists(), kept.stderr
    assert made["staging"].exists() and served.exists(), kept.stderr
    assert f"left {made['staging']}: a copy of another database" in kept.stderr
    assert f"left {served}: in use (a -wal or -shm beside it" in kept.stderr
    assert kept.stderr.count("deleted ") == 3 and not in_wal_mode.exists(), kept.stderr
    assert not Path(f"{in_wal_mode}-wal").exists() and not Path(f"{in_wal_mode}-shm").exists()
    again = chargebox("backup", "--db", str(staging), str(backups), "--keep", "1")
    assert again.returncode == 0 and not made["staging"].exists(), again.stderr
    assert len(list(backups.glob("chargebox-*Z.db"))) == 3  # prod's, staging's, the served


def test_a_backup_into_a_folder_it_cannot_write_in_is_one_line(tmp_path):
    """A cron job run as a user who may not write in the backups' folder: a traceback
    and exit 1 (operator's review, s36); one line naming the folder, exit 2, now."""
    from tests.test_startup_mistakes import assert_refused, immutable

    live, folder = tmp_path / "chargebox.db", tmp_path / "backups"
    with running_server(live) as server:
        new_seller(server.admin(), "shop", credit=1_000)
    folder.mkdir()
    with immutable(folder):
        for dest in (folder, folder / "one.db"):
            refused = chargebox("backup", "--db", str(live), str(dest))
            assert_refused(refused, str(folder), "cannot create files", "Operation not permitted")
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("options", ["size=16k", "size=4m,nr_inodes=3"])
def test_a_backup_onto_a_full_disk_names_that_disk_in_one_line(tmp_path, options):
    """A destination with no room or no inodes left: a traceback (no inodes), or
    "--db LIVE: database or disk is full", which sends an operator to free the live
    database's disk (helper-110). One line naming DEST's directory now; nothing kept."""
    from tests.test_startup_mistakes import assert_refused, tmpfs

    live = tmp_path / "chargebox.db"
    with running_server(live) as server:
        new_seller(server.admin(), "shop", credit=1_000)
    with tmpfs(tmp_path / "small", options) as small:
        for vacuum in ((), ("--vacuum",)):
            refused = chargebox("backup", "--db", str(live), f"{small}/", *vacuum)
            line = assert_refused(refused, str(small), "the copy could not be written there")
            assert "--db" not in line and str(live) not in line, line
            assert list(small.iterdir()) == [], list(small.iterdir())


def a_copy_in_a_folder(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A live database with a seller, and a folder holding one older stamped copy of it."""
    live = tmp_path / "chargebox.db"
    with running_server(live) as server:
        new_seller(server.admin(), "shop", credit=1_000)
    daily = tmp_path / "daily"
    daily.mkdir()
    older = daily / "chargebox-20261101T030000Z.db"
    shutil.copyfile(backup.backup(Config(db_path=live), tmp_path / "first.db").path, older)
    return live, daily, older


def test_a_backup_whose_heads_cannot_be_anchored_says_so_and_still_keeps_n(tmp_path):
    """The anchors file on a file system gone read-only (here immutable): the copy was
    made, then a traceback, exit 1, and `--keep` never ran, so copies piled up
    (helper-110). One line saying the copy is made but not anchored, `--keep` done, exit 1."""
    from tests.test_startup_mistakes import immutable

    live, daily, older = a_copy_in_a_folder(tmp_path)
    anchored = live.with_name("chargebox.db.anchors")
    anchored.touch()
    with immutable(anchored):
        made = chargebox("backup", "--db", str(live), str(daily), "--keep", "1")
    assert made.returncode == 1 and "Traceback" not in made.stderr, made.stderr
    assert "the copy is made, but its heads were not anchored" in made.stderr
    assert f"deleted {older} (--keep 1)" in made.stderr and not older.exists()
    assert len(list(daily.glob("chargebox-*Z.db"))) == 1


def test_a_restored_copy_with_the_old_wal_left_beside_it_is_refused_naming_the_wal(tmp_path):
    """README's restore, step 2 skipped: the copy put in place, the old file's `-wal`
    left beside it. SQLite replayed that into the copy ("database disk image is
    malformed", the copy itself sound): an operator would take a good backup for a bad
    one (helper-110). Refused now, naming the -wal to move; moved, the copy opens. The
    anchors commands too: accept-restore took the -wal in and accepted the mix (helper-130)."""
    from tests.test_startup_mistakes import assert_refused

    live, copy = tmp_path / "chargebox.db", tmp_path / "backup.db"
    with running_server(live) as server:
        new_seller(server.admin(), "shop", credit=1_000)
    assert chargebox("backup", "--db", str(live), str(copy)).returncode == 0
    with contextlib.closing(sqlite3.connect(live)) as conn:  # the old file's last writes
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("CREATE TABLE later (x)")
        old_wal = Path(f"{live}-wal").read_bytes()  # as a killed server leaves it
    assert len(old_wal) > 32
    shutil.copyfile(copy, live)
    Path(f"{live}-wal").write_bytes(old_wal)
    before = live.read_bytes()
    for command in (("audit",), ("serve", "--port", "0"), ("backup", str(tmp_path / "b.db")),
                    ("anchors", "check"), ("anchors", "accept-restore")):  # fmt: skip
        refused = chargebox(*command, "--db", str(live), timeout=30)
        line = assert_refused(refused, f"--db {live}", f"{live}-wal beside it is another file's")
        assert "malformed" not in line and live.read_bytes() == before, line
    Path(f"{live}-wal").rename(tmp_path / "old-wal")
    audited = chargebox("audit", "--db", str(live))
    assert "another file's" not in audited.stderr and "malformed" not in audited.stdout


def test_accepting_a_restore_whose_anchors_cannot_be_written_is_one_line(tmp_path):
    """`anchors accept-restore` with its anchors file unwritable was a traceback."""
    from tests.test_startup_mistakes import immutable

    live = tmp_path / "restored.db"
    assert chargebox("init-db", "--db", str(live)).returncode == 0
    anchored = live.with_name("restored.db.anchors")
    anchored.touch()
    with immutable(anchored):
        refused = chargebox("anchors", "accept-restore", "--db", str(live))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    owner = pwd.getpwuid(os.getuid()).pw_name
    assert refused.stderr.splitlines() == [
        f"chargebox: {anchored}: Operation not permitted (owned by {owner}): run chargebox as"
        " the user who owns the data directory (under systemd: runuser -u USER -- chargebox"
        " ...), or give the file to that user (chown; chattr -i if it is immutable)"
    ]


def test_a_backup_made_without_the_ledger_key_says_its_seals_were_not_checked(tmp_path):
    """README: the copy's newest sealed heads are checked against the ledger key; with
    no key at hand a backup was made unchecked and said nothing of it."""
    live = tmp_path / "chargebox.db"
    with running_server(live) as server:
        new_seller(server.admin(), "shop", credit=1_000)
    (tmp_path / "ledger_key").rename(tmp_path / "kept-apart")
    made = chargebox("backup", "--db", str(live), str(tmp_path / "copy.db"))
    assert made.returncode == 0, made.stderr
    assert "sealed heads were not checked" in made.stderr
    (tmp_path / "kept-apart").rename(tmp_path / "ledger_key")
    checked = chargebox("backup", "--db", str(live), str(tmp_path / "copy2.db"))
    assert checked.returncode == 0 and "not checked" not in checked.stderr, checked.stderr


def test_an_older_copy_that_cannot_be_deleted_is_named_after_the_new_copy_is_anchored(tmp_path):
    """`--keep 1` where an older stamped copy cannot be deleted (immutable: chattr +i):
    the new copy is made and its heads anchored first, the refusal is one line naming
    it, and the command exits 1 (a trace, before the anchors, it was)."""
    from tests.test_startup_mistakes import immutable

    live, daily, stuck = a_copy_in_a_folder(tmp_path)
    anchored = live.with_name("chargebox.db.anchors")
    before = anchored.read_text().count("\n") if anchored.exists() else 0
    with immutable(stuck):
        kept = chargebox("backup", "--db", str(live), str(daily), "--keep", "1")
    assert kept.returncode == 1 and "Traceback" not in kept.stderr, kept.stderr
    assert f"could not delete {stuck} (--keep 1)" in kept.stderr and stuck.is_file()
    assert anchored.read_text().count("\n") > before  # the copy's heads anchored
    assert len(list(daily.glob("chargebox-2026*Z.db"))) == 2


def test_a_postgresql_backup_is_a_pg_dump_that_restores_serves_and_audits_clean(
    postgresql_cluster, tmp_path
):
    """`chargebox backup` on a postgresql:// URL runs pg_dump (custom format) as the
    schema's owner (the service's role is refused by PostgreSQL, said in one line), its
    password never on a command line. README's restore
    (pg_restore into a new database as its owner, without the old grants, then
    init-db --grant-to) gives a database whose audit names the sale lost since the
    dump (anchored by the server in --data-dir); once the restore is accepted, it
    audits clean, serves and sells on."""
    if find_pg_dump() is None:
        pytest.fail("pg_dump is not installed (apt-get install postgresql-client)")
    data = tmp_path / "data"
    made = pg_cluster.initialised(postgresql_cluster, "dumped", data)
    dump = tmp_path / "chargebox.dump"
    with running_server(made.app_url, data_dir=data) as server:
        seller, key = new_seller(server.admin(), "shop", credit=100_000)
        shop = server.seller(key)
        for _ in range(7):
            assert shop.post("/api/sales", {"phone": "09121234567", "amount": 1_000}).ok
        as_app = chargebox("backup", "--db", made.app_url, "--data-dir", str(data), str(dump))
        assert as_app.returncode == 2 and "owner" in as_app.stderr, as_app.stderr
        assert not dump.exists() and list(tmp_path.glob(".*partial")) == []
        dumped = chargebox("backup", "--db", made.owner_url, "--data-dir", str(data), str(dump))
        assert dumped.returncode == 0, dumped.stderr
        assert "pg_dump" in dumped.stderr and "-secret" not in dumped.stderr
        assert shop.post("/api/sales", {"phone": "09121234567", "amount": 1_000}).ok
        shop.close()
    restored = pg_cluster.new_database(postgresql_cluster, "restored")
    pg_restore = str(Path(find_pg_dump()).with_name("pg_restore"))
    result = subprocess.run(
        [pg_restore, "--no-owner", "--no-acl", "--exit-on-error", "--dbname",
         restored.owner_url, str(dump)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    granted = chargebox("init-db", "--db", restored.owner_url, "--grant-to",
                        restored.app_role, "--data-dir", str(data))  # fmt: skip
    assert granted.returncode == 0, granted.stderr
    audited = chargebox("audit", "--db", restored.app_url, "--data-dir", str(data))
    assert audited.returncode == 1, audited.stderr  # the sale after the dump: anchored
    assert "anchor: seller" in audited.stderr and "rolled back" in audited.stderr
    assert rows_on_disk(restored.app_url, "SELECT balance FROM seller") == [(93_000,)]
    accepted = chargebox("anchors", "accept-restore", "--db", restored.app_url, "--data-dir",
                         str(data))  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    with running_server(restored.app_url, data_dir=data) as server:
        shop = server.seller(key)
        sold = shop.post("/api/sales", {"phone": "09121234567", "amount": 3_000})
        assert sold.status_code == 201 and sold.json()["balance_after"] == 90_000, sold.text
        shop.close()
    assert chargebox("audit", "--db", restored.app_url, "--data-dir", str(data)).returncode == 0


@pytest.mark.sqlite_only  # a copy beside which nothing can be written (chattr +i, as root)
def test_a_copy_in_a_read_only_directory_audits_clean_and_nothing_is_written_beside_it(
    service, config, tmp_path
):
    """An audit of a backup only reads it: no probe file, no anchors, no checkpoint is
    needed beside it. Where none can be written, the audit still answers, and the
    checkpoint and anchors it would record are left out without a trace (in process,
    with a checkpoint due after one entry, so that a save is attempted)."""
    from chargebox.audit import audit
    from chargebox.backup import backup
    from chargebox.services import Chargebox
    from tests.test_startup_mistakes import immutable

    seller = credited_seller(service, 50_000)
    service.sell(seller["id"], "09121234567", 1_000)
    copies = tmp_path / "copies"
    copies.mkdir()
    backup(service.config, copies / "copy.db")
    key = {"CHARGEBOX_LEDGER_KEY": service.config.ledger_key}
    with immutable(copies):
        result = chargebox("audit", "--db", str(copies / "copy.db"), env=key)
        assert result.returncode == 0, result.stderr
        assert "books reconcile" in result.stderr and "Traceback" not in result.stderr
        copy = Chargebox(dataclasses.replace(service.config, db_path=copies / "copy.db"))
        try:
            report = audit(copy.database, checkpoint_after=1)
        finally:
            copy.close()
        assert report["consistent"] and report["scope"]["saved_checkpoint"] is None
    assert [p.name for p in copies.iterdir()] == ["copy.db"]


@pytest.mark.sqlite_only
def test_a_killed_backups_partial_copy_is_removed_by_the_next_but_a_running_ones_is_kept(
    service, tmp_path
):
    """A backup killed while it writes leaves its private `.partial` directory (here: made
    by a child process that `partial.making` holds and that is then SIGKILLed, so its lock
    dies with it). The next backup into that directory removes it and says so; one whose
    lock is held (a backup running now, here this process's own) is left alone, and so is
    every directory by such a name that is not provably a backup's."""
    from chargebox import partial

    copies = tmp_path / "copies"
    copies.mkdir()
    script = (
        "import os, sys, pathlib, signal\n"
        "from chargebox.partial import making\n"
        "with making(pathlib.Path(sys.argv[1])) as (temporary, _):\n"
        "    temporary.write_bytes(b'half a copy')\n"
        "    print(temporary, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(copies / "first.db")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    half = Path(killed.stdout.strip())  # what the killed backup had written
    assert half.read_bytes() == b"half a copy"
    foreign = {  # someone else's, by such a name: no mark, or the names but not the files
        copies / ".notes.partial": ("mine.txt", "kept"),
        copies / ".photos.partial": ("copy/img.jpg", "kept"),
        copies / ".marked.partial": ("chargebox-backup/x", "kept"),
        copies / ".empty.partial": None,
    }
    for directory, held in foreign.items():
        directory.mkdir()
        if held is not None:
            (directory / held[0]).parent.mkdir(exist_ok=True)
            (directory / held[0]).write_text(held[1])
    with partial.making(copies / "running.db") as (running, _):
        key = {"CHARGEBOX_LEDGER_KEY": service.config.ledger_key}
        made = chargebox("backup", "--db", str(service.config.db_path), str(copies), env=key)
        assert made.returncode == 0, made.stderr
        assert not half.exists() and running.exists()  # the running one kept
        assert f"removed {half.parent}, the partial copy of a backup killed" in made.stderr
    for directory, held in foreign.items():
        assert directory.is_dir() and (held is None or (directory / held[0]).read_text() == "kept")
    names = sorted(p.name for p in copies.iterdir() if p not in foreign)
    assert len(names) == 1 and names[0].startswith("chargebox-"), names


def test_pg_dump_gets_none_of_chargeboxs_settings_in_its_environment(tmp_path, monkeypatch):
    """pg_dump needs none of CHARGEBOX_*, which may hold the ledger key, the admin token
    and the URL's password: a child's environment is readable by its user's processes."""
    seen = tmp_path / "environment"
    fake = tmp_path / "bin" / "pg_dump"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nenv >> {seen}\nexit 1\n")  # its --version, then the dump
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CHARGEBOX_LEDGER_KEY", "a-ledger-key-that-must-stay-home-0123456789")
    monkeypatch.setenv("CHARGEBOX_DB", "postgresql://owner:secret@127.0.0.1:1/db")
    with pytest.raises(ValueError, match="pg_dump failed"):
        backup._pg_dump("postgresql://owner:secret@127.0.0.1:1/db", tmp_path / "x.dump", False)
    environment = seen.read_text()
    assert environment.count("\nPATH=") + environment.startswith("PATH=") == 2, environment
    assert "CHARGEBOX_" not in environment

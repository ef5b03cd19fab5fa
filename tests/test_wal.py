"""The WAL's checkpoints, made by a thread of their own (chargebox/wal.py), not by a COMMIT.

What a checkpoint did is read from the database file alone, copied without its `-wal`:
only a checkpoint writes that file, so what it holds is what was checkpointed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import time
import types

from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.services import Chargebox
from chargebox.wal import Checkpoints, checkpointing, durable
from tests.support import ADMIN_TOKEN, new_seller, running_server

SALES = 12  # each its own transaction: far below the writer's 1,000-page autocheckpoint


def sales_in_the_file_alone(db_path, tmp_path) -> int:
    """The sales the database file holds without its log (what checkpoints copied)."""
    alone = tmp_path / "alone.db"
    alone.unlink(missing_ok=True)
    shutil.copyfile(db_path, alone)
    with contextlib.closing(sqlite3.connect(alone)) as conn:
        try:
            return conn.execute("SELECT count(*) FROM sale").fetchone()[0]
        except sqlite3.DatabaseError:  # copied as a checkpoint wrote it: read it again
            return -1


def sold(service: Chargebox, count: int) -> None:
    seller, _ = service.create_seller("Ali")
    service.approve_credit_request(service.request_credit(seller["id"], 1_000_000).record["id"])
    for n in range(count):
        service.sell(seller["id"], f"0912000{n:04d}", 1_000)


def waited_for(done, seconds: float = 20.0) -> bool:
    """Polls `done()` until it holds or `seconds` pass (a busy box is slow, never wrong)."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_thread_copies_what_was_sold_into_the_file(tmp_path):
    db_path = tmp_path / "chargebox.db"
    service = Chargebox(prepare(Config(db_path=db_path, admin_token=ADMIN_TOKEN)))
    try:
        sold(service, SALES)
        assert sales_in_the_file_alone(db_path, tmp_path) == 0  # all in the log so far
        checkpoints = Checkpoints(db_path, "NORMAL", every=0.01).start()
        try:
            assert waited_for(lambda: sales_in_the_file_alone(db_path, tmp_path) == SALES)
            assert checkpoints.made >= 1
            sold(service, 3)  # and again, as sales go on
            assert waited_for(lambda: sales_in_the_file_alone(db_path, tmp_path) == SALES + 3)
        finally:
            checkpoints.stop()
        assert not checkpoints._thread.is_alive()
    finally:
        service.close()


def test_a_server_checkpoints_what_it_sold_before_its_writer_would(tmp_path):
    """Without the thread these sales stay in the log until the writer's COMMITs take it
    past 1,000 pages, or the server stops."""
    db_path = tmp_path / "chargebox.db"
    with running_server(db_path) as server:
        admin = server.admin()
        _, key = new_seller(admin, "Ali", credit=1_000_000)
        seller = server.seller(key)
        for n in range(SALES):
            sale = seller.post("/api/sales", {"phone": f"0912000{n:04d}", "amount": 1_000})
            assert sale.status_code == 201
        assert waited_for(lambda: sales_in_the_file_alone(db_path, tmp_path) == SALES)
        seller.close()
        admin.close()


def test_a_failing_checkpoint_is_said_once_and_tried_again(tmp_path, caplog):
    db_path = tmp_path / "chargebox.db"  # not there yet: the thread may not make it
    checkpoints = Checkpoints(db_path, "NORMAL", every=0.01)
    with caplog.at_level(logging.WARNING, logger="chargebox.wal"):
        checkpoints.start()
        try:
            assert waited_for(lambda: len(caplog.records) >= 1)
            assert not db_path.exists()  # and the rounds until it is made fail the same way
            service = Chargebox(prepare(Config(db_path=db_path, admin_token=ADMIN_TOKEN)))
            try:
                sold(service, 2)
                assert waited_for(lambda: checkpoints.made >= 1)  # on a new connection
            finally:
                service.close()
        finally:
            checkpoints.stop()
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 1 and said[0].startswith("a WAL checkpoint failed (OperationalError")
    assert said[0].endswith("the anchoring thread's syncs of the WAL stand in")


class Answering:
    """A connection whose checkpoints answer `rows` in turn, the last one from then on (an
    exception is raised)."""

    def __init__(self, *rows) -> None:
        self.rows, self.asked, self.closed = list(rows), 0, False

    def execute(self, sql: str):
        assert sql == "PRAGMA wal_checkpoint(PASSIVE)"
        self.asked += 1
        row = self.rows.pop(0) if len(self.rows) > 1 else self.rows[0]
        if isinstance(row, Exception):
            raise row
        return types.SimpleNamespace(fetchone=lambda: row)

    def close(self) -> None:
        self.closed = True


def connections(monkeypatch, *made: Answering) -> list[Answering]:
    """Checkpoints connect to `made` in turn; the list of those it connected to."""
    given: list[Answering] = []
    waiting = list(made)
    monkeypatch.setattr(
        Checkpoints, "_connect", lambda self: given.append(waiting.pop(0)) or given[-1]
    )
    return given


def test_a_checkpoint_another_holds_keeps_the_connection(monkeypatch, tmp_path):
    """Another process's thread, or the writer, checkpointing: SQLite answers (1, -1, -1)."""
    given = connections(monkeypatch, Answering((1, -1, -1)))
    checkpoints = Checkpoints(tmp_path / "x.db", "NORMAL", every=0.001).start()
    try:
        assert waited_for(lambda: given and given[0].asked >= 20)
    finally:
        checkpoints.stop()
    assert len(given) == 1 and given[0].closed and checkpoints.made == 0


def test_a_checkpoint_failing_on_its_connection_goes_on_on_a_new_one(monkeypatch, tmp_path, caplog):
    broken = sqlite3.OperationalError("disk I/O error")
    given = connections(monkeypatch, Answering((0, 10, 10), broken), Answering((0, 20, 20)))
    checkpoints = Checkpoints(tmp_path / "x.db", "NORMAL", every=0.001)
    with caplog.at_level(logging.WARNING, logger="chargebox.wal"):
        checkpoints.start()
        try:
            assert waited_for(lambda: checkpoints.made >= 2)
        finally:
            checkpoints.stop()
    assert [connection.closed for connection in given] == [True, True]
    assert [record.getMessage()[:51] for record in caplog.records] == [
        "a WAL checkpoint failed (OperationalError: disk I/O"
    ]


def test_its_connection_syncs_as_the_server_was_told(tmp_path):
    db_path = tmp_path / "chargebox.db"
    Chargebox(prepare(Config(db_path=db_path, admin_token=ADMIN_TOKEN))).close()
    for level, code in (("FULL", 2), ("NORMAL", 1)):
        conn = Checkpoints(db_path, level)._connect()
        try:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == code
        finally:
            conn.close()


def test_postgresql_has_no_such_thread(tmp_path):
    config = Config(db_url="postgresql://chargebox@127.0.0.1/none", data_dir=tmp_path)
    with checkpointing(config) as made:
        assert made is None


def test_the_wal_kept_open_for_its_syncs_is_let_go_once_sqlite_made_another(tmp_path):
    """durable() keeps a descriptor of the WAL for its fsyncs. Once every connection has
    closed (SQLite then deletes the WAL) and another opens a new one, the descriptor of the
    deleted file is closed: kept, it held the old WAL's disk space for the process's life."""
    config = Config(db_path=tmp_path / "c.db")
    wal = f"{config.db_path}-wal"

    def a_new_wal() -> None:
        conn = sqlite3.connect(config.db_path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        durable(config)  # while the WAL is there
        conn.close()  # the last connection: SQLite deletes the WAL

    def deleted_files_open() -> int:
        found = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(FileNotFoundError):  # the listing's own, closed since
                found += os.readlink(f"/proc/self/fd/{fd}") == f"{wal} (deleted)"
        return found

    for _ in range(5):
        a_new_wal()
    assert not os.path.exists(wal)
    assert deleted_files_open() == 1  # the newest one's: closed at the next durable()


def test_a_rounds_failure_is_said_once_a_while_whatever_its_text(caplog, monkeypatch):
    """A failure that every round meets is said once, though its text changes (an
    exception's message, a count), and said again once SAY_AGAIN has passed: kept once
    per text for the process's life, each new text was another line and another entry,
    and a failure that came back after a recovery was never said again."""
    from chargebox import rounds

    clock = [1000.0]
    monkeypatch.setattr(rounds.time, "monotonic", lambda: clock[0])
    thread = rounds.Rounds("test-rounds", logging.getLogger("chargebox.test_rounds"))
    with caplog.at_level(logging.WARNING, logger="chargebox.test_rounds"):
        for n in range(50):
            thread._say("checkpoint", f"a WAL checkpoint failed ({n} pages)")
            clock[0] += 1.0
        thread._say("behind", "a failure of another kind")
        clock[0] += rounds.SAY_AGAIN
        thread._say("checkpoint", "a WAL checkpoint failed (50 pages)")
    assert [r.message for r in caplog.records] == [
        "a WAL checkpoint failed (0 pages)",
        "a failure of another kind",
        "a WAL checkpoint failed (50 pages)",
    ]
    assert len(thread._said) == 2

"""An SQLite file damaged, or another put in its place, under a running server.

Neither is a bug of ours to answer with 500: a write (and a read that meets the damage)
is 503 `unavailable`, saying an operator must restore the file and restart the server;
`/health` answers the same 503 so that a load balancer or a container's
health check takes the server out; the log says it once, naming the file, without a
trace. A file put in the database's place must not be written through connections that
still hold the old one: what they acknowledged would be lost with it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.errors import DAMAGED, Damaged, Unavailable
from chargebox.services import Chargebox
from chargebox.web import i18n, refusals
from tests.support import ADMIN_TOKEN, ServerProcess, new_seller

SALE = {"phone": "09121234567", "amount": 1_000}


def copy_of(db: Path, to: Path) -> None:
    """A consistent copy of a live database (SQLite's backup API), as a backup is made."""
    source, target = sqlite3.connect(db), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def test_a_file_put_in_the_database_s_place_under_the_server_makes_writes_and_health_503(
    tmp_path,
):
    db = tmp_path / "chargebox.db"
    server = ServerProcess(db).start()
    try:
        admin = server.admin()
        _seller, key = new_seller(admin, "replaced", credit=10_000)
        own = server.seller(key)
        copy_of(db, tmp_path / "earlier.db")  # an operator's backup, put back too early
        sold = own.post("/api/sales", SALE, headers={"Idempotency-Key": "before"})
        assert sold.status_code == 201, sold.text
        os.replace(tmp_path / "earlier.db", db)

        refused = own.post("/api/sales", SALE, headers={"Idempotency-Key": "after"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "unavailable"
        assert "restore" in refused.json()["error"]["message"]
        health = admin.get("/health")
        assert health.status_code == 503 and health.json() == refused.json(), health.text
        for path in ("/api/me", "/api/sales"):  # reads go on, or are refused: never a 500
            assert own.get(path).status_code in (200, 503), path
        own.close()
        admin.close()
    finally:
        code = server.stop()
    log = server.log_path.read_text()
    assert code == 0, log[-2000:]
    told = [line for line in log.splitlines() if "ERROR chargebox.db" in line]
    assert len(told) == 1 and str(db) in told[0], log[-2000:]
    assert "Traceback" not in log and "status=500" not in log, log[-2000:]
    assert not (tmp_path / "chargebox.db.damaged").exists()  # the file put there is not


@pytest.mark.parametrize("processes", [1, 2])
def test_a_file_put_in_place_before_the_server_s_first_write_is_refused_too(tmp_path, processes):
    """Each process knows the file its start-up prepared, not the one at its first write
    (a server that had only read adopted the file put in place; so did every child)."""
    db = tmp_path / "chargebox.db"
    server = ServerProcess(db, env={"CHARGEBOX_PROCESSES": str(processes)}).start()
    try:
        admin = server.admin()
        assert admin.get("/api/sellers").status_code == 200  # reads only
        copy_of(db, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", db)
        for _ in range(2 * processes):  # keep-alive off: each may reach another child
            created = admin.post("/api/sellers", {"name": "x"}, headers={"Connection": "close"})
            assert created.status_code == 503, created.text
            health = admin.get("/health", headers={"Connection": "close"})
            assert health.status_code == 503, health.text
        admin.close()
    finally:
        code = server.stop()
    assert code == 0, server.log_path.read_text()[-2000:]


def test_damage_one_database_of_a_process_finds_is_every_one_s(tmp_path, caplog):
    """The anchor thread reads through a Database of its own: what it finds, the web's
    Database answers too, told once."""
    config = prepare(Config(db_path=tmp_path / "chargebox.db", admin_token=ADMIN_TOKEN))
    config = dataclasses.replace(config, serving=True)  # a server's, which logs it
    web, anchoring = Chargebox(config), Chargebox(config)
    try:
        with caplog.at_level(logging.ERROR, logger="chargebox.db"):
            anchoring.database.file.damaged("SQLite: database disk image is malformed")
        assert web.damage() == "SQLite: database disk image is malformed"
        with pytest.raises(Damaged):
            web.create_seller("refused")
        assert len([r for r in caplog.records if r.name == "chargebox.db"]) == 1
    finally:
        web.close()
        anchoring.close()


def test_a_damaged_file_is_a_503_for_reads_and_writes_and_health_says_why(tmp_path, caplog):
    config = Config(db_path=tmp_path / "chargebox.db", admin_token=ADMIN_TOKEN)
    service = Chargebox(dataclasses.replace(prepare(config), serving=True))  # a server's
    try:
        service.create_seller("damaged")
        with sqlite3.connect(config.db_path) as side:  # everything into the file, the WAL empty
            side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = config.db_path.stat().st_size // 4096
        with open(config.db_path, "r+b") as file:  # every page but the first (the catalogue)
            file.seek(4096)
            file.write(b"\xff" * 4096 * (pages - 1))
        assert service.damage() is None  # nothing has met it yet

        with caplog.at_level(logging.ERROR, logger="chargebox.db"):
            with concurrent.futures.ThreadPoolExecutor(1) as fresh, pytest.raises(Damaged):
                fresh.submit(service.database.rows, "SELECT count(*) FROM sale").result()
            with pytest.raises(Damaged):
                service.create_seller("another")
        assert service.damage() == "SQLite: database disk image is malformed"
        told = [r.getMessage() for r in caplog.records if r.name == "chargebox.db"]
        assert len(told) == 1 and str(config.db_path) in told[0], told
    finally:
        service.close()
    # A restart (a container's health check, say) does not serve it on as if it were sound
    marked = tmp_path / "chargebox.db.damaged"
    said, served = marked.read_text().splitlines()
    assert said.endswith("Z SQLite: database disk image is malformed"), said
    file = config.db_path.stat()
    assert served == f"file {file.st_dev}:{file.st_ino}"
    assert marked.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError) as refused:
        prepare(config)
    assert str(refused.value) == (
        f"--db {config.db_path}: a server found it damaged ({said}): restore a backup"
        f" (README, Restore), or, if `PRAGMA integrity_check` now says ok, delete {marked}"
    )
    # A sound copy moved into its place (another file) is not refused by the mark
    config.db_path.rename(tmp_path / "damaged.db")
    sound = prepare(dataclasses.replace(config, db_path=tmp_path / "sound.db"))
    Chargebox(sound).close()
    (tmp_path / "sound.db").rename(config.db_path)
    prepare(config)  # the mark names the damaged file, not this one


def test_a_page_says_the_database_is_damaged_not_that_the_service_is_busy():
    """A page words a 503 as "busy, try again"; a damaged file is said as it is."""
    english, persian = i18n.LANGUAGE["en"], i18n.LANGUAGE["fa"]
    assert refusals.sentence(Damaged(DAMAGED), english) == DAMAGED[:1].upper() + DAMAGED[1:]
    assert "restart" not in refusals.sentence(Unavailable("the database is busy"), english)
    assert refusals.sentence(Damaged(DAMAGED), persian).startswith("پایگاه داده آسیب دیده")

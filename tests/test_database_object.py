"""One object owns a process's database, and driver errors are read by their result code.

`Chargebox(config)` opens its own `Database(config)`: its connections, write
gate, group writer and ledger key. Two configurations in one process must never
share a database by accident. A driver error becomes 503 only for a result code
that means "cannot write now", never because its message contains a word.
"""

from __future__ import annotations

import inspect
import sqlite3

import pytest

from chargebox import errors
from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.db import translate_errors
from chargebox.errors import (
    ChargeboxError,
    Damaged,
    Deadlocked,
    HeldBack,
    IntegrityViolation,
    LockTimeout,
    NoTurn,
    Unavailable,
)
from chargebox.services import Chargebox
from chargebox.web.errors import STATUS, status_of
from tests.support import ADMIN_TOKEN, credited_seller, rows_on_disk

# Errors that take their parent's status on purpose, rather than a row of their own.
INHERITS_ITS_STATUS = {
    LockTimeout: Unavailable,
    Deadlocked: Unavailable,
    Damaged: Unavailable,
    NoTurn: Unavailable,  # a statement's turn (statement_turns.Turns): the API's 503 as any
    HeldBack: Unavailable,  # a list page a write stuck in flight holds back (settled.py)
}


@pytest.fixture
def two(tmp_path):
    """Two services in one process, on two files, each with a key of its own."""
    made = []
    for name in ("north", "south"):
        config = Config(db_path=tmp_path / name / "chargebox.db", admin_token=ADMIN_TOKEN)
        made.append(Chargebox(prepare(config)))
    yield made
    for service in made:
        service.close()


def test_two_configurations_in_one_process_each_write_their_own_database(two):
    north, south = two
    assert north.database is not south.database
    assert north.database.ledger_key != south.database.ledger_key
    ali = credited_seller(north, 50_000, "Ali")
    sara = credited_seller(south, 70_000, "Sara")
    north.sell(ali["id"], "09121234567", 1_000)
    south.sell(sara["id"], "09121234567", 2_000)
    assert rows_on_disk(north.config.db_path, "SELECT name, balance FROM seller") == [
        ("Ali", 49_000)
    ]
    assert rows_on_disk(south.config.db_path, "SELECT name, balance FROM seller") == [
        ("Sara", 68_000)
    ]
    for service in two:  # each ledger is sealed with its own key, and audits clean
        assert service.audit()["consistent"] is True


def test_a_seller_key_remembered_by_one_database_means_nothing_to_another(two):
    north, south = two
    _, key = north.create_seller("Ali")
    assert north.access.authenticate(f"Bearer {key}").seller_id == 1
    with pytest.raises(errors.Unauthorized):
        south.access.authenticate(f"Bearer {key}")


def test_a_bug_whose_message_mentions_a_full_disk_stays_a_bug(tmp_path):
    """Before, `no such column: fully_paid` matched the marker "full" and became a 503."""
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("CREATE TABLE seller (id INTEGER PRIMARY KEY)")
    with pytest.raises(sqlite3.OperationalError, match="fully_paid"), translate_errors():
        conn.execute("SELECT fully_paid FROM seller")


def test_a_lock_held_elsewhere_is_unavailable_by_its_result_code(tmp_path):
    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(tmp_path / "x.db", timeout=0, isolation_level=None)
    try:
        with pytest.raises(Unavailable), translate_errors():
            waiter.execute("BEGIN IMMEDIATE")
    finally:
        holder.rollback()


def error_classes() -> list[type[ChargeboxError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, ChargeboxError) and cls is not ChargeboxError
    ]


def test_every_error_class_has_a_status_on_purpose():
    """A new subclass must get a row in web/errors.STATUS or be named here as inheriting."""
    unmapped = [
        cls.__name__
        for cls in error_classes()
        if cls not in STATUS and cls not in INHERITS_ITS_STATUS
    ]
    assert unmapped == [], f"no status chosen for {unmapped}"
    for cls, parent in INHERITS_ITS_STATUS.items():
        assert issubclass(cls, parent) and status_of(cls("x")) == STATUS[parent]


def test_only_a_refused_database_guard_is_a_500():
    five_hundreds = [cls for cls in error_classes() if status_of(cls("x")) == 500]
    assert five_hundreds == [IntegrityViolation]

"""Start-up mistakes that still end in a traceback (found in review of issue 10, item 9).

The promise (README, "Start-up mistakes"; cli.py): a --db that cannot hold a
database is one line naming --db and exit status 2, before anything is written.
A --db that is a dangling symbolic link passes location.check_database_path
(os.path.exists is False, so it looks like a new file) and SQLite then fails to
open it: a peewee traceback and exit 1, a `.lock` left beside the link. A file
with SQLite's header and a corrupt body passes the header probe and fails the
same way ("file is not a database").
"""

from __future__ import annotations

import pytest

from tests.test_startup_mistakes import WRITERS, assert_refused, chargebox


@pytest.mark.parametrize("command", WRITERS, ids=lambda c: c[0])
def test_a_database_path_that_is_a_dangling_symlink_is_one_line_naming_db(tmp_path, command):
    link = tmp_path / "chargebox.db"
    link.symlink_to(tmp_path / "gone" / "chargebox.db")
    assert_refused(chargebox(*command, "--db", str(link)), "--db")


@pytest.mark.parametrize("command", [*WRITERS, ("audit",)], ids=lambda c: c[0])
def test_a_corrupt_database_file_is_one_line_naming_db(tmp_path, command):
    corrupt = tmp_path / "chargebox.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    assert_refused(chargebox(*command, "--db", str(corrupt)), "--db")


def test_a_new_database_and_its_wal_are_owner_only_whatever_the_umask(tmp_path):
    """It holds phone numbers and key hashes: it was made 0644 under a umask of 022, where
    the backups and the secrets beside it are 0600."""
    import os

    from tests.support import running_server

    live = tmp_path / "new" / "chargebox.db"
    mask = os.umask(0o022)
    try:
        made = chargebox("init-db", "--db", str(live))
        assert made.returncode == 0, made.stderr
        with running_server(live) as server:
            assert server.admin().get("/api/sellers").status_code == 200
            wal = live.with_name(live.name + "-wal")
            assert wal.exists() and wal.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(mask)
    assert live.stat().st_mode & 0o777 == 0o600
    lock = live.with_name(live.name + ".lock")  # the start-up lock's file: it was 0644
    assert not lock.exists() or lock.stat().st_mode & 0o777 == 0o600


def test_a_generated_secret_whose_write_fails_leaves_no_file_behind(tmp_path):
    """A start that fails while it writes a new admin token (a full disk) left a
    `.admin_token.PID` holding a token beside where the token would have been."""
    import errno

    from chargebox.commands import stored_secret

    def full() -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        stored_secret(tmp_path / "admin_token", "an admin token", "CHARGEBOX_ADMIN_TOKEN", full)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [("create-seller", "Ali"), ("keys", "1"), ("create-key", "1", "till"), ("suspend", "1"),
     ("refund", "1", "--reason", "typo"), ("statement", "--seller", "1"), ("rotate-admin-token",),
     ("anchors", "check")],
    ids=lambda c: c[0],
)  # fmt: skip
def test_a_command_given_a_mistyped_db_refuses_it_and_makes_nothing(tmp_path, command):
    """Only serve and init-db make a database (operator's review, s36): with a mistyped
    --db every other command made a new file and acted there; rotate-admin-token wrote
    the admin token file that the real database's servers read at their next start."""
    real = tmp_path / "chargebox.db"
    made = chargebox("init-db", "--db", str(real), CHARGEBOX_ADMIN_TOKEN="")
    assert made.returncode == 0, made.stderr
    empty = tmp_path / "refused.db"  # a start refused before the schema leaves one (touch too)
    empty.touch()
    before = {path: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    for typo in (tmp_path / "chargebx.db", empty):
        line = assert_refused(chargebox(*command, "--db", str(typo), CHARGEBOX_ADMIN_TOKEN=""),
                              f"--db {typo}", "no database there")  # fmt: skip
        assert "init-db" in line
    assert {path: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()} == before


@pytest.mark.parametrize(
    ("command", "table"), [(("audit",), None), (("keys", "1"), "seller_key")], ids=["audit", "keys"]
)
def test_a_database_damaged_inside_is_one_line_for_a_command_not_a_servers_log_line(
    tmp_path, command, table
):
    """A file whose header is sound and some pages are not: the command said it in its one
    line and, before it, in a log line written for a running server ("writes and /health
    answer 503 until the server is restarted"; operator's review, s36)."""
    import sqlite3

    damaged = tmp_path / "chargebox.db"
    assert chargebox("init-db", "--db", str(damaged)).returncode == 0
    assert chargebox("create-seller", "Ali", "--db", str(damaged)).returncode == 0
    with sqlite3.connect(damaged) as side:  # everything into the file, the WAL empty
        side.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sql = "SELECT rootpage FROM sqlite_master WHERE name = ?"
        page = side.execute(sql, (table,)).fetchone()[0] if table else None
    with open(damaged, "r+b") as file:  # the table's first page (one start-up does not
        # read: the command's own Database meets it), or every page but the catalogue
        file.seek(4096 * (page - 1) if page else 4096)
        file.write(b"\xff" * (4096 if page else damaged.stat().st_size - 4096))
    line = assert_refused(chargebox(*command, "--db", str(damaged)), "--db", "malformed")
    assert "/health" not in line
    assert line.endswith("; restore a backup (README, Restore)"), line
    assert not damaged.with_name("chargebox.db.damaged").exists()  # a command's: said here

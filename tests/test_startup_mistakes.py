"""Start-up mistakes an operator makes: one line naming the setting, exit 2, at once.

Each case runs the real command in a subprocess (no server is expected to come
up) and checks what an operator sees: exit status 2, exactly one line on stderr,
no traceback, the setting named. The subprocess timeout bounds "at once": before
the fix a database under /proc waited 60 s for a lock file that cannot exist.
As root, chmod stops nobody; "unwritable" is `chattr +i` and a read-only mount.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import filelock
import pytest

from chargebox import cli, config, location
from chargebox.config import env_defaults
from tests.support import ROOT, needs_root

BOUND = 15  # seconds; a refusal slower than this is a hang
TOKEN = "a-long-enough-admin-token-0123456789"  # 36 characters
MAKERS = (("serve", "--port", "0"), ("init-db",))  # the commands that make a new file
WRITERS = (*MAKERS, ("create-seller", "Ali"))


def chargebox(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEBOX_")}
    environ.update({"CHARGEBOX_ADMIN_TOKEN": TOKEN, **env})
    return subprocess.run(
        [sys.executable, "-m", "chargebox.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BOUND,
        env=environ,
    )


def assert_refused(result: subprocess.CompletedProcess, *names: str) -> str:
    """Exit 2, one line on stderr and no traceback, naming each of `names`; the line."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("chargebox: "), lines
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, f"`{' '.join(command)}` failed (needs root): {done.stderr}"


@contextlib.contextmanager
def immutable(path: Path):
    """chattr +i: nothing can be created or removed in it, even by root."""
    needs_root("chattr +i")
    run("chattr", "+i", str(path))
    try:
        yield
    finally:
        run("chattr", "-i", str(path))


@contextlib.contextmanager
def tmpfs(where: Path, options: str = "size=4m"):
    """A small tmpfs at `where`, mounted with `options` (its size, its inodes), for the
    block (a test may remount it read-only)."""
    needs_root("mounting a tmpfs")
    where.mkdir()
    run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where))
    try:
        yield where
    finally:
        run("umount", str(where))


# --- ports and addresses (the socket is bound by server.listen) -------------------------


def initialised(tmp_path: Path) -> Path:
    """A ready database, so that `serve` has nothing to say before it binds."""
    db_path = tmp_path / "cb.db"
    assert chargebox("init-db", "--db", str(db_path)).returncode == 0
    return db_path


def test_a_port_in_use_is_one_line_naming_the_port(tmp_path):
    db_path = initialised(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = chargebox("serve", "--db", str(db_path), "--port", str(port))
    assert_refused(result, "--port", str(port))


def test_a_port_in_use_is_refused_before_any_file_is_made(tmp_path):
    """The port is bound first: a mistake in it leaves no database, token or key behind."""
    data = tmp_path / "fresh"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = chargebox("serve", "--db", str(data / "chargebox.db"), "--port", str(port))
    assert_refused(result, "--port", str(port))
    assert not data.exists()


@pytest.mark.parametrize("host", ["203.0.113.1", "256.1.1.1", "nosuch.invalid"])
def test_an_address_that_cannot_be_bound_is_one_line_naming_the_host(tmp_path, host):
    db_path = initialised(tmp_path)
    result = chargebox("serve", "--db", str(db_path), "--host", host, "--port", "0")
    assert_refused(result, "--host", host)


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_a_port_out_of_range_is_refused_instead_of_wrapped(tmp_path, port):
    result = chargebox("serve", "--db", str(tmp_path / "cb.db"), "--port", port)
    assert_refused(result, f"--port {port}")
    assert not (tmp_path / "cb.db").exists()


# --- where the database lives -----------------------------------------------------------


@pytest.mark.parametrize("command", MAKERS, ids=lambda c: c[0])
def test_a_database_path_under_a_file_is_one_line_naming_db(tmp_path, command):
    (tmp_path / "plain-file").write_text("not a directory\n")
    db_path = tmp_path / "plain-file" / "sub" / "cb.db"
    line = assert_refused(chargebox(*command, "--db", str(db_path)), f"--db {db_path}")
    assert "not a directory" in line


@pytest.mark.parametrize("command", WRITERS, ids=lambda c: c[0])
def test_a_directory_given_as_the_database_is_one_line(tmp_path, command):
    assert_refused(chargebox(*command, "--db", str(tmp_path)), f"--db {tmp_path}")


def test_a_cpu_the_server_may_not_run_on_is_one_line_naming_it(tmp_path):
    result = chargebox("serve", "--port", "0", "--db", str(tmp_path / "cb.db"), "--cpus", "4096")
    assert_refused(result, "--cpus", "CPU 4096 is not one this process may run on")
    assert not (tmp_path / "cb.db").exists()


@pytest.mark.parametrize("command", MAKERS, ids=lambda c: c[0])
@pytest.mark.parametrize("path", ["/proc/self/chargebox.db", "/proc/chargebox-test/x.db",
                                  "/sys/chargebox-test.db"])  # fmt: skip
def test_a_database_under_proc_or_sys_is_refused_at_once(command, path):
    line = assert_refused(chargebox(*command, "--db", path), f"--db {path}")
    assert "not storage" in line


def test_a_database_under_dev_is_refused_and_nothing_is_left_there():
    folder = Path(f"/dev/chargebox-test-{os.getpid()}")
    try:
        result = chargebox("init-db", "--db", str(folder / "cb.db"))
        assert_refused(result, f"--db {folder / 'cb.db'}", "devtmpfs")
        assert not folder.exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # only if the refusal failed


@pytest.mark.parametrize("command", MAKERS, ids=lambda c: c[0])
def test_a_directory_where_no_file_can_be_created_is_one_line_naming_db(tmp_path, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    for db_path in (locked / "cb.db", locked / "missing" / "cb.db"):
        with immutable(locked):
            line = assert_refused(chargebox(*command, "--db", str(db_path)), f"--db {db_path}")
        assert "Operation not permitted" in line
    assert list(locked.iterdir()) == []


def test_audit_of_a_database_in_a_directory_where_no_file_can_be_created_names_db(tmp_path):
    """Reading a WAL database needs its -shm file beside it: say so, not 'busy, retry'."""
    folder = tmp_path / "locked"
    db_path = folder / "cb.db"
    assert chargebox("init-db", "--db", str(db_path)).returncode == 0
    with immutable(folder):
        line = assert_refused(chargebox("audit", "--db", str(db_path)), f"--db {db_path}")
    assert "cannot create files" in line


@pytest.mark.parametrize("command", WRITERS, ids=lambda c: c[0])
def test_a_database_on_a_read_only_file_system_is_one_line_naming_db(tmp_path, command):
    mount = tmp_path / "mnt"
    with tmpfs(mount):
        assert chargebox("init-db", "--db", str(mount / "cb.db")).returncode == 0
        run("mount", "-o", "remount,ro", str(mount))
        result = chargebox(*command, "--db", str(mount / "cb.db"))
    assert "Read-only file system" in assert_refused(result, f"--db {mount / 'cb.db'}")


def test_a_database_file_that_cannot_be_written_is_one_line_naming_db(tmp_path):
    db_path = tmp_path / "cb.db"
    assert chargebox("init-db", "--db", str(db_path)).returncode == 0
    with immutable(db_path):
        result = chargebox("create-seller", "Ali", "--db", str(db_path))
    assert "cannot write the database file" in assert_refused(result, f"--db {db_path}")


@pytest.mark.parametrize("command", [*WRITERS, ("audit",)], ids=lambda c: c[0])
def test_a_file_that_is_not_a_database_is_one_line_naming_db(tmp_path, command):
    db_path = tmp_path / "notes.txt"
    db_path.write_text("these are not the books\n" * 100)
    before = db_path.read_bytes()
    line = assert_refused(chargebox(*command, "--db", str(db_path)), f"--db {db_path}")
    assert "not an SQLite database" in line and db_path.read_bytes() == before


@pytest.mark.parametrize("tables", [("users",), ("seller", "orders")], ids=["users", "seller"])
@pytest.mark.parametrize("command", WRITERS, ids=lambda c: c[0])
def test_another_applications_sqlite_file_is_refused_and_left_as_it_was(tmp_path, command, tables):
    """A non-empty SQLite file without chargebox's tables was taken for a new one (or, with
    a table `seller`, for 0.1.0): switched to WAL for good, chargebox's tables made beside
    its own, a ledger key and an admin token written beside it (helper-110)."""
    db_path = tmp_path / "grafana.db"
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        for table in tables:
            conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
        conn.commit()
    line = assert_refused(chargebox(*command, "--db", str(db_path)), f"--db {db_path}")
    assert "holds tables that are not chargebox's" in line and tables[0] in line, line
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        found = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        assert found == set(tables)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grafana.db", "grafana.db.lock"]


# --- settings from the environment ------------------------------------------------------


def test_group_commit_takes_the_usual_spellings_of_on_and_off():
    spellings = {"1": True, "true": True, "Yes": True, "ON": True,
                 "0": False, "false": False, "FALSE": False, "no": False, "Off": False}  # fmt: skip
    read = {text: env_defaults({"CHARGEBOX_GROUP_COMMIT": text})["group_commit"]
            for text in spellings}  # fmt: skip
    assert read == spellings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHARGEBOX_GROUP_COMMIT", "maybe"),
        ("CHARGEBOX_GROUP_COMMIT", "disabled"),
        ("CHARGEBOX_SYNCHRONOUS", "normall"),
        ("CHARGEBOX_SYNCHRONOUS", " FULL"),
        ("CHARGEBOX_CPUS", "1-0"),
        ("CHARGEBOX_CPUS", "0,,1"),
    ],
)
def test_an_unknown_spelling_of_a_setting_is_one_line_naming_it(tmp_path, name, value):
    result = chargebox("init-db", "--db", str(tmp_path / "cb.db"), **{name: value})
    assert_refused(result, name, repr(value))
    assert not (tmp_path / "cb.db").exists()


def test_a_chargebox_variable_that_is_no_setting_is_named_in_a_warning(tmp_path):
    """CHARGEBOX_DATABASE_URL (no such setting: CHARGEBOX_DB is) was ignored without a
    word, and the command went on with a new SQLite file (helper-139)."""
    url = "postgresql://app@127.0.0.1:5432/chargebox"
    made = chargebox("init-db", "--db", str(tmp_path / "cb.db"), CHARGEBOX_DATABASE_URL=url)
    assert made.returncode == 0, made.stderr
    warned = [line for line in made.stderr.splitlines() if "is no setting" in line]
    assert warned == [
        "chargebox: warning: CHARGEBOX_DATABASE_URL is no setting of chargebox, and is ignored "
        "(README, Configuration, lists them)"
    ], made.stderr
    assert url not in made.stderr  # its value may hold a password
    known = chargebox("init-db", "--db", str(tmp_path / "cb.db"), CHARGEBOX_THREADS="8")
    assert known.returncode == 0 and "is no setting" not in known.stderr, known.stderr
    assert settings_named_in_readme() >= config.SETTINGS


def test_the_suites_own_variables_are_no_settings_and_warn_of_nothing():
    """CHARGEBOX_FUZZ_SEED and the like, read by the tests and the harness (never by the
    package), warned too, and tests counting a command's stderr lines failed (helper-140)."""
    read = set()
    for folder in ("tests", "stress"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"(?:get|environ\[|getenv\()\(?\"(CHARGEBOX_[A-Z_]+)\"",
                                   path.read_text()))  # fmt: skip
    assert read - config.SETTINGS == config.SUITE, read
    assert not config.unknown_settings({name: "1" for name in read})


def settings_named_in_readme() -> set[str]:
    """The variables README's Configuration table names."""
    text = (ROOT / "README.md").read_text()
    return set(re.findall(r"`(CHARGEBOX_[A-Z_]+)`", text.split("## Configuration")[1]))


@pytest.mark.parametrize(
    ("option", "env", "value", "limit"),
    [
        ("--threads", "CHARGEBOX_THREADS", "1025", "1024"),
        ("--processes", "CHARGEBOX_PROCESSES", "65", "64"),
        (None, "CHARGEBOX_MAX_BODY_BYTES", "100", "1024"),
        (None, "CHARGEBOX_MAX_AMOUNT", str(10**15 + 1), str(10**15)),
    ],
)
def test_a_setting_out_of_its_range_is_one_line_naming_it_as_typed(
    tmp_path, option, env, value, limit
):
    """`threads must be between 1 and 1024` named neither the option nor the variable an
    operator sets (operator's review, s36): both, and the range (README's table)."""
    ways = [((option, value), {}), ((), {env: value})] if option else [((), {env: value})]
    for args, environ in ways:
        result = chargebox("serve", "--port", "0", "--db", str(tmp_path / "cb.db"), *args,
                           **environ)  # fmt: skip
        assert_refused(result, env, limit, *([option] if option else []))
    assert not (tmp_path / "cb.db").exists()


def test_synchronous_is_taken_in_any_case_from_the_option_as_from_the_environment():
    assert cli._parser().parse_args(["serve", "--synchronous", "full"]).synchronous == "FULL"
    assert env_defaults({"CHARGEBOX_SYNCHRONOUS": "full"})["synchronous"] == "FULL"


@pytest.mark.parametrize("command", MAKERS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHARGEBOX_ADMIN_TOKEN", "abcde"),
        ("CHARGEBOX_ADMIN_TOKEN", "a token with spaces in it, 36 chars"),
        ("CHARGEBOX_LEDGER_KEY", "k"),
    ],
    ids=["token-5", "token-spaces", "key-1"],
)
def test_a_short_admin_token_or_ledger_key_is_refused_in_one_line(tmp_path, command, name, value):
    result = chargebox(*command, "--db", str(tmp_path / "cb.db"), **{name: value})
    assert_refused(result, name)
    assert not (tmp_path / "ledger_key").exists()
    assert not (tmp_path / "admin_token").exists()


@pytest.mark.parametrize("command", [("init-db",), ("serve", "--port", "0")], ids=lambda c: c[0])
def test_a_short_admin_token_written_into_its_file_is_refused_naming_the_file(tmp_path, command):
    """Refused before anything is made: the database's file was made first, empty
    (helper-135)."""
    (tmp_path / "admin_token").write_text("hunter2\n")
    result = chargebox(*command, "--db", str(tmp_path / "cb.db"), CHARGEBOX_ADMIN_TOKEN="")
    assert_refused(result, str(tmp_path / "admin_token"), "32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin_token"]


@pytest.mark.parametrize(
    "content", [b"", b"\n", b"\xff\xfe not text"], ids=["empty", "blank", "bytes"]
)
def test_a_ledger_key_file_that_holds_no_key_is_said_so_naming_it(tmp_path, content):
    """Beside a sealed ledger, an empty key file was "no ledger key: keep the ledger_key
    file beside the database" to the audit (it was there) and "not the key that sealed
    this ledger" to the others; one not UTF-8 named no file (helper-110)."""
    db_path = tmp_path / "cb.db"
    assert chargebox("init-db", "--db", str(db_path)).returncode == 0
    assert chargebox("create-seller", "Ali", "--db", str(db_path)).returncode == 0
    key_file = tmp_path / "ledger_key"
    key_file.write_bytes(content)
    for command in (("audit",), ("create-seller", "Reza"), ("anchors", "check")):
        line = assert_refused(chargebox(*command, "--db", str(db_path)), str(key_file))
        assert "holds no ledger key" in line or "not UTF-8 text" in line, line
        assert "not the key that sealed" not in line, line
    # a backup is made all the same (a server keeps its key in memory: a nightly copy
    # must not stop), unchecked, and says why
    made = chargebox("backup", "--db", str(db_path), str(tmp_path / "b.db"))
    assert made.returncode == 1 and (tmp_path / "b.db").exists(), made.stderr  # cron mails
    assert f"warning: {key_file}: holds no ledger key" in made.stderr
    assert "sealed heads were not checked" in made.stderr


def test_admin_tokens_and_ledger_keys_need_32_characters_and_31_are_refused(tmp_path):
    db_path = str(tmp_path / "cb.db")
    for name, char in (("CHARGEBOX_ADMIN_TOKEN", "t"), ("CHARGEBOX_LEDGER_KEY", "ک")):
        assert_refused(chargebox("init-db", "--db", db_path, **{name: char * 31}), name, "32")
    accepted = chargebox(
        "init-db",
        "--db",
        db_path,
        CHARGEBOX_ADMIN_TOKEN="t" * 32,
        CHARGEBOX_LEDGER_KEY="ک" * 32,  # any characters: a ledger key is only ever hashed
    )
    assert accepted.returncode == 0, accepted.stderr


WHOSE = "run chargebox as the user who owns the data directory"


@pytest.mark.parametrize("command", WRITERS, ids=lambda c: c[0])
def test_a_lock_file_this_user_may_not_open_is_a_refusal_naming_it_and_whose_it_is(
    tmp_path, command
):
    """A start-up lock file left by root (a `migrate` run as root, helper-125) was
    `[Errno 13] Permission denied: '...'`, exit 1: systemd restarts on that, five
    times. It is a refusal (exit 2) now, naming the file, whose it is, and what to do.
    (As root it is `chattr +i` that stops the open.)"""
    db_path = tmp_path / "cb.db"
    assert chargebox("init-db", "--db", str(db_path)).returncode == 0
    lock = tmp_path / "cb.db.lock"
    lock.touch()
    owner = pwd.getpwuid(os.getuid()).pw_name
    with immutable(lock):
        line = assert_refused(chargebox(*command, "--db", str(db_path)), str(lock), WHOSE)
    assert f"{lock}: Operation not permitted (owned by {owner}): " in line, line
    assert "chattr -i if it is immutable" in line, line


def test_os_errors_in_words_a_lock_held_elsewhere_may_pass_a_file_not_ours_will_not(tmp_path):
    held = location.in_words(filelock.Timeout(str(tmp_path / "cb.db.lock")))
    assert held == (f"{tmp_path / 'cb.db.lock'} is held by another chargebox (starting, or a"
                    " migrate): start again once it is done", 1)  # fmt: skip
    missing = tmp_path / "nowhere" / "cb.db"
    said, status = location.in_words(PermissionError(13, "Permission denied", str(missing)))
    assert status == 2 and said.startswith(f"{missing}: Permission denied (whose, unknown): ")
    inside = tmp_path / "cb.db"
    said, status = location.in_words(PermissionError(13, "Permission denied", str(inside)))
    owner = pwd.getpwuid(os.getuid()).pw_name
    assert status == 2 and f"(in a directory owned by {owner})" in said, said
    # The default data/ is relative to where a command runs (cron's, root's home): said
    # as the whole path it was (helper-138).
    said, _ = location.in_words(PermissionError(13, "Permission denied", "data/ledger_key"))
    assert said.startswith(f"{Path.cwd() / 'data' / 'ledger_key'}: Permission denied"), said
    assert location.in_words(OSError(28, "No space left on device")) == (
        "[Errno 28] No space left on device",
        1,
    )

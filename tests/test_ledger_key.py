"""The ledger key at start-up: only the key that sealed the ledger may seal more.

With another key (a changed CHARGEBOX_LEDGER_KEY, a lost `ledger_key` file that
would be regenerated) every new seal is wrong and the audit cries tampering that
never happened. So the commands that write refuse to start, in one line with
exit 2, and write nothing: the folder's files are compared byte for byte. The
check reads the sealed heads of the newest entries' sellers, never the ledger.
On PostgreSQL the key file is in `--data-dir`, the folder compared.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from chargebox import auth, commands, location, seals
from chargebox.postgresql import described
from tests.support import (
    cli_audit,
    credited_seller,
    database_of,
    drop_trigger,
    is_postgresql,
    running_server,
    writable,
)
from tests.test_startup_mistakes import WRITERS, assert_refused, chargebox

OTHER_KEY = "another-ledger-key-of-forty-characters-x"


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


@dataclasses.dataclass(frozen=True)
class Sealed:
    """A database, the folder of its key file, and how a command names them."""

    db: Path | str
    folder: Path

    @property
    def args(self) -> list[str]:
        if is_postgresql(self.db):
            return ["--db", str(self.db), "--data-dir", str(self.folder)]
        return ["--db", str(self.db)]

    @property
    def named(self) -> str:  # as a refusal names --db (never a password)
        return f"--db {described(self.db) if is_postgresql(self.db) else self.db}"

    @property
    def data_dir(self) -> Path | None:
        return self.folder if is_postgresql(self.db) else None


@pytest.fixture
def sealed(service, config) -> Sealed:
    """A closed database whose ledger holds sealed entries of two sellers."""
    for name in ("Ali", "Sara"):
        seller = credited_seller(service, 50_000, name)
        service.sell(seller["id"], "09121234567", 1_000)
    service.close()
    return Sealed(database_of(config), config.secrets_dir)


@pytest.mark.parametrize("command", WRITERS, ids=lambda c: c[0])
def test_a_changed_ledger_key_refuses_to_start_in_one_line_and_writes_nothing(sealed, command):
    before = files(sealed.folder)
    result = chargebox(*command, *sealed.args, CHARGEBOX_LEDGER_KEY=OTHER_KEY)
    line = assert_refused(result, "CHARGEBOX_LEDGER_KEY", "is not the key that sealed")
    assert "backup" in line
    assert files(sealed.folder) == before


@pytest.mark.parametrize("command", WRITERS, ids=lambda c: c[0])
def test_a_lost_key_file_of_a_sealed_ledger_refuses_and_makes_no_new_key(sealed, command):
    key_file = sealed.folder / "ledger_key"
    key_file.unlink()
    before = files(sealed.folder)
    result = chargebox(*command, *sealed.args)
    line = assert_refused(result, sealed.named, str(key_file), "missing")
    assert "restore it from the backup" in line
    assert files(sealed.folder) == before and not key_file.exists()


@pytest.mark.parametrize("from_environment", [False, True], ids=["file", "environment"])
def test_the_right_key_starts_and_goes_on_sealing(sealed, from_environment):
    key = (sealed.folder / "ledger_key").read_text().strip()
    env = {"CHARGEBOX_LEDGER_KEY": key} if from_environment else {}
    created = chargebox("create-seller", "Reza", *sealed.args, **env)
    assert created.returncode == 0 and "Traceback" not in created.stderr, created.stderr
    with running_server(sealed.db, data_dir=sealed.data_dir, env=env) as server:
        admin = server.admin()
        adjusted = admin.post("/api/sellers/1/adjustments", {"amount": 500, "reason": "bonus"})
        assert adjusted.status_code == 201, adjusted.text
        assert admin.get("/api/audit").json()["consistent"] is True
        admin.close()
    assert cli_audit(sealed.db, sealed.data_dir).returncode == 0


def test_an_empty_database_whose_key_file_is_lost_gets_a_new_key(tmp_path):
    db_path = tmp_path / "cb.db"
    assert chargebox("init-db", "--db", str(db_path)).returncode == 0
    assert chargebox("create-seller", "Ali", "--db", str(db_path)).returncode == 0
    (tmp_path / "ledger_key").unlink()  # no entry was sealed with it
    again = chargebox("create-seller", "Sara", "--db", str(db_path))
    assert again.returncode == 0, again.stderr
    assert "generated a ledger key" in again.stderr and (tmp_path / "ledger_key").exists()


def test_audit_with_a_wrong_key_says_once_that_the_key_does_not_match(sealed):
    result = chargebox("audit", *sealed.args, CHARGEBOX_LEDGER_KEY=OTHER_KEY)
    assert result.returncode == 1
    assert result.stderr.count("is not the key that sealed this ledger") == 1, result.stderr
    assert "does not match" not in result.stderr  # no seller is accused of tampering
    assert "audit: 1 problem (" in result.stderr


def test_one_forged_head_among_intact_ones_is_no_wrong_key_and_start_up_warns(sealed):
    """One seller's head forged, the other's intact: the key is right, the books are not."""
    with writable(sealed.db) as conn:
        conn.execute("UPDATE seller_head SET mac = ? WHERE seller_id = 1", ("0" * 64,))
    result = chargebox("init-db", *sealed.args)
    assert result.returncode == 0, result.stderr
    assert "1 of the 2 newest sealed heads do not verify: run `chargebox audit`" in result.stderr


def test_a_short_key_that_already_sealed_the_ledger_is_kept_with_a_warning(config):
    from chargebox.cli import prepare
    from chargebox.services import Chargebox

    prepare(config)
    # As an older chargebox accepted it:
    service = Chargebox(dataclasses.replace(config, ledger_key="short-old-key"))
    credited_seller(service, 10_000)
    service.close()
    env = {"CHARGEBOX_LEDGER_KEY": "short-old-key"}
    args = Sealed(database_of(config), config.secrets_dir).args
    result = chargebox("create-seller", "Sara", *args, **env)
    assert result.returncode == 0, result.stderr
    assert "CHARGEBOX_LEDGER_KEY is short, but it sealed this ledger" in result.stderr
    assert chargebox("audit", *args, **env).returncode == 0


@pytest.mark.sqlite_only  # counted in SQLite's virtual-machine steps
def test_the_key_check_reads_as_much_of_a_ledger_ten_times_longer(service, config):
    """SQLite's own count of virtual-machine steps: the check does not grow with the ledger."""
    seller = credited_seller(service, 10_000_000)
    key = service.database.ledger_key

    def steps() -> int:
        counted = [0]

        def count() -> int:
            counted[0] += 1
            return 0

        service.database.connection().set_progress_handler(count, 1)
        try:
            assert seals.key_check(service.database, key) == (1, 1)
        finally:
            service.database.connection().set_progress_handler(None, 1)
        return counted[0]

    for _ in range(150):
        service.sell(seller["id"], "09121234567", 1_000)
    short = steps()
    for _ in range(1_350):
        service.sell(seller["id"], "09121234567", 1_000)
    assert steps() <= short * 1.1


@pytest.mark.sqlite_only  # PostgreSQL's servers never make a token (init-db does)
@pytest.mark.parametrize("command", WRITERS, ids=lambda c: c[0])
@pytest.mark.parametrize("mistake", ["wrong key", "dropped guard"])
def test_a_refused_start_makes_no_admin_token(sealed, command, mistake):
    """The admin token is generated only after every start-up check: a refusal (a wrong
    ledger key, a dropped guard) leaves no new token file behind."""
    (sealed.folder / "admin_token").unlink(missing_ok=True)
    env = {"CHARGEBOX_ADMIN_TOKEN": ""}  # none given: a start would generate one
    if mistake == "wrong key":
        env["CHARGEBOX_LEDGER_KEY"] = OTHER_KEY
    else:
        with writable(sealed.db) as conn:
            drop_trigger(conn, "ledger_entry_no_update")
    before = files(sealed.folder)
    assert_refused(chargebox(*command, *sealed.args, **env))
    assert files(sealed.folder) == before and not (sealed.folder / "admin_token").exists()


@pytest.mark.sqlite_only  # the files beside an SQLite database
@pytest.mark.parametrize("secret", ["ledger_key", "admin_token"])
@pytest.mark.parametrize("mistake", ["a directory", "not UTF-8"])
def test_a_secret_file_that_cannot_be_read_is_refused_in_one_line(tmp_path, secret, mistake):
    """A key or token file that is a directory, unreadable or not text was a traceback and
    exit 1 (under systemd: restarts, and a trace in the journal); now one line, exit 2."""
    path = tmp_path / secret
    if mistake == "a directory":
        path.mkdir()
    else:
        path.write_bytes(b"\xff\xfe\n")
    if secret == "admin_token":  # a ledger key of its own, readable
        (tmp_path / "ledger_key").write_text(OTHER_KEY + "\n")
    refused = chargebox("init-db", "--db", tmp_path / "chargebox.db", CHARGEBOX_ADMIN_TOKEN="")
    assert_refused(refused, str(path), "cannot read", "or set CHARGEBOX_")


def test_a_generated_secret_and_a_replaced_one_are_on_disk_before_they_are_used(
    tmp_path, monkeypatch
):
    """A power cut after the first start must not leave a sealed ledger with an empty or
    missing key file: the file's contents and then its name (its directory) are synced."""
    synced = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "admin_token"
    made = commands.stored_secret(path, "an admin token", "CHARGEBOX_ADMIN_TOKEN")
    temporary, directory = synced
    assert temporary.startswith(str(tmp_path / ".admin_token.")) and directory == str(tmp_path)
    synced.clear()
    auth.replace_secret(path, "another")
    temporary, directory = synced
    assert temporary.startswith(str(tmp_path / ".admin_token.")) and directory == str(tmp_path)
    assert path.read_text() == "another\n" and made != "another"
    assert list(tmp_path.iterdir()) == [path]


def test_a_replacement_that_fails_leaves_the_secret_as_it_was_and_nothing_beside_it(
    tmp_path, monkeypatch
):
    """A rotation whose write fails (a full disk, here at its sync) left the new secret in
    a `.admin_token.PID` beside the file, readable by whoever reads that directory later."""
    import errno

    path = tmp_path / "admin_token"
    auth.replace_secret(path, "before")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        auth.replace_secret(path, "after")
    assert list(tmp_path.iterdir()) == [path] and path.read_text() == "before\n"


def test_writers_of_one_secret_with_one_pid_each_make_it_or_find_it_made(tmp_path):
    """Its temporary file was named by the pid, and each writer first removed one of that
    name as a killed process's: two writers with one pid (threads; containers' PID 1s on
    one volume) removed each other's, and often none made the file (FileNotFoundError,
    which a start does not expect)."""
    import threading

    def write(path: Path, secret: str, outcomes: list[str]) -> None:
        try:
            location.written_secret(path, secret, replacing=False)
            outcomes.append("made")
        except FileExistsError:
            outcomes.append("found")

    for n in range(50):
        path, outcomes = tmp_path / f"secret{n}", []
        threads = [threading.Thread(target=write, args=(path, f"s{k}", outcomes))
                   for k in range(2)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["found", "made"] and path.read_text() in ("s0\n", "s1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"secret{n}" for n in range(50))


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """A writer killed between its temporary file and the name left `.admin_token.XXXXXXXX`
    for good: a secret (perhaps one rotated out since) beside the file. The next write
    removes one a minute old; a younger one (a live writer's) and other names stay."""
    path = tmp_path / "admin_token"
    killed, live = tmp_path / ".admin_token.k1ll3d_x", tmp_path / ".admin_token.l1ve_abc"
    others = [tmp_path / ".admin_token.lock", tmp_path / ".ledger_key.k1ll3d_x"]
    for leftover in (killed, live, *others):
        leftover.write_text("an old secret\n")
    for stale in (killed, others[0], others[1]):
        os.utime(stale, (1, 1))
    auth.replace_secret(path, "new")
    assert sorted(tmp_path.iterdir()) == sorted([path, live, *others])


def test_a_start_removes_a_killed_writers_temporary_file_beside_the_secret_it_reads(tmp_path):
    """The file made, nothing more is written at a start: the leftover went only when the
    secret was next replaced."""
    path, killed = tmp_path / "ledger_key", tmp_path / ".ledger_key.k1ll3d_x"
    path.write_text("the key\n")
    killed.write_text("the key\n")
    os.utime(killed, (1, 1))
    assert commands.stored_secret(path, "a ledger key", "CHARGEBOX_LEDGER_KEY") == "the key"
    assert list(tmp_path.iterdir()) == [path]

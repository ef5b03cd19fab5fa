"""Moving a deployment from its SQLite file to PostgreSQL: every row and every seal.

`chargebox copy --from FILE --to postgresql://OWNER...` reads the file in one
snapshot (a busy server may go on writing; the copy is a consistent moment of
it) and writes it into an empty PostgreSQL schema in one transaction, ids kept.
The ledger entries are replayed by `ledger.replay`, CHUNK at a time in id order,
numbered per seller: each statement moves each of its sellers' balances once and
lands the entries on them, so that every PostgreSQL trigger checks each entry as it
would a new one (I3, I4; I2 as each statement ends, as for a batch of sales); the
seals are copied as they are, and the target audits clean with the same key.

The deployment's secrets move with it (`run`): the file's ledger key, which sealed
every row copied, and its admin token (the one in force, if it was rotated) are
written into the PostgreSQL deployment's `--data-dir`, over the ones `init-db`
made there (they sealed and admitted nothing yet: the target was empty; kept beside,
all the same). A data dir another deployment uses (another key's anchors, or anchors of
heads the file lacks: a copy that sold on), a key that did not seal the file, a file of
another schema, a target not empty or served: refused before anything moves. A secret
given in the environment (CHARGEBOX_LEDGER_KEY, CHARGEBOX_ADMIN_TOKEN) is the
operator's to give every server, and no file is written for it.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sqlite3
import sys
import time
from pathlib import Path

from chargebox import anchors, auth, ledger, migrations, pg_driver, postgresql, revocations, seals
from chargebox.commands import audit_verdict
from chargebox.config import POSTGRESQL_SCHEMES, Config, secret_in
from chargebox.location import written_secret
from chargebox.services import Chargebox

# In the order their references need; the ledger is replayed apart (see _entries).
_PLAIN_TABLES = (
    ("credit_request", ("id", "seller_id", "amount", "status", "created_at", "decided_at")),
    ("phone", ("id", "number", "total_charged", "created_at")),
    ("sale", ("id", "seller_id", "phone", "amount", "balance_after", "created_at")),
)
_AFTER_THE_LEDGER = (
    ("admin_token", ("id", "token_hash", "changed_at")),  # a rotation stays in force
    ("ledger_seal", ("entry_id", "mac")),
    ("seller_head", ("seller_id", "entry_id", "entries", "entry_mac", "mac")),
    ("idempotency_record", ("id", "seller_id", "key", "request_hash", "error_code",
                            "error_message", "created_at", "sale_id")),
    ("adjustment_record", ("id", "seller_id", "key", "request_hash", "error_code",
                           "error_message", "created_at", "entry_id")),
    ("credit_request_record", ("id", "seller_id", "key", "request_hash", "error_code",
                               "error_message", "created_at", "request_id")),
    ("seller_key", ("id", "seller_id", "label", "key_hash", "created_at", "revoked_at",
                    "last_used_at")),
    ("web_session", ("id", "token_hash", "role", "seller_id", "credential_hash", "created_at",
                     "expires_at")),
)  # fmt: skip
_SERIAL_TABLES = ("seller", "seller_key", "credit_request", "phone", "sale", "ledger_entry",
                  "idempotency_record", "adjustment_record", "credit_request_record",
                  "web_session")  # fmt: skip
# Entries replayed in one statement (a round trip each, and one move of each balance).
CHUNK = 5000
# COPY writes faster than PostgreSQL takes rows in: the server's window may stay shut
# while it writes out a checkpoint, which a slow disk can make outlast the default 10 s
COPY_LOST_AFTER = 120  # seconds, for pg_driver.connect
_ENTRY_COLUMNS = ("id", "seller_id", "kind", "amount", "balance_after", "credit_request_id",
                  "sale_id", "reason", "created_at", "refund_of")  # fmt: skip


def run(config: Config, source: Path, target: str) -> int:
    """`chargebox copy`: the file's rows and its secrets, then the audit of the copy with
    the file's ledger key; 0 only when the books reconcile."""
    if not target.startswith(POSTGRESQL_SCHEMES):
        raise ValueError(f"--to {postgresql.described(target)}: must be a postgresql:// URL "
                         "(the schema's owner)")  # fmt: skip
    if not source.is_file():
        raise ValueError(f"--from {source}: no such database file")
    config = dataclasses.replace(config, db_url=target)  # its secrets go in --data-dir
    secrets = _secrets(config, source)
    key = config.ledger_key or secrets[config.ledger_key_path]
    _check_source(source, key, "CHARGEBOX_LEDGER_KEY" if config.ledger_key else "its ledger_key")
    try:  # the secrets and the audit's anchors go there: a place that cannot take them
        config.data_dir.mkdir(parents=True, exist_ok=True)  # is refused before the copy
        if not os.access(config.data_dir, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as exc:
        raise ValueError(f"--data-dir {config.data_dir}: {exc.strerror}") from None
    try:
        _check_target(target)
        replaced = _to_replace(config, secrets, target)
        _check_anchors(config, source, key, target)  # anchors of another key: refused above
        _keep_aside(replaced)  # before anything moves
        counts = copy(source, target)
    except pg_driver.driver_errors() as exc:  # no schema there, a role without the rights
        raise ValueError(
            f"--to {postgresql.described(target)}: {pg_driver.in_words(exc)}"
        ) from None
    for path in replaced:
        try:
            auth.replace_secret(path, secrets[path])
        except OSError as exc:  # the rows are in: say what to do by hand
            raise ValueError(
                f"copied, but {path} could not be written ({exc.strerror}): copy "
                f"{source.parent / path.name} there (0600) before any server starts"
            ) from None
        print(f"chargebox: {path} now holds {source.parent / path.name}", file=sys.stderr)
    copied = Chargebox(dataclasses.replace(config, ledger_key=key))
    try:
        report = copied.audit()
    finally:
        copied.close()
    rows = ", ".join(f"{count:,} {table}" for table, count in counts.items() if count)
    print(f"chargebox: copied {rows or 'nothing'}", file=sys.stderr)
    return audit_verdict(report)


def _secrets(config: Config, source: Path) -> dict[Path, str]:
    """The file's secrets that the PostgreSQL deployment's data directory takes, by where
    they go; refused before anything is copied if the file's ledger key is nowhere."""
    found = {}
    for path, given, what, variable in (
        (config.ledger_key_path, config.ledger_key, "ledger key", "CHARGEBOX_LEDGER_KEY"),
        (config.admin_token_path, config.admin_token, "admin token", "CHARGEBOX_ADMIN_TOKEN"),
    ):
        beside = source.parent / path.name
        if given is None and beside.is_file():
            found[path] = secret_in(beside, what, variable)
    if config.ledger_key is None and config.ledger_key_path not in found:
        beside = source.parent / config.ledger_key_path.name
        raise ValueError(
            f"--from {source}: its ledger key is not beside it ({beside}) nor in "
            "CHARGEBOX_LEDGER_KEY: the copy's seals could be neither checked nor extended"
        )
    return found


def _check_source(source: Path, key: str, key_from: str) -> None:
    """Before anything moves: the file is a chargebox database at this release's schema,
    and `key` sealed it (a wrong key was found by the audit after the rows were in, and
    a second copy then refused: the target held sellers)."""
    try:
        reader = sqlite3.connect(_read_only(source), uri=True)
        try:
            found = migrations.sqlite_version(reader)
            if found is None:
                raise ValueError(f"--from {source}: no chargebox database in this file")
            if found < migrations.LATEST:
                raise ValueError(f"--from {source}: schema version {found}, older than this "
                                 f"release's ({migrations.LATEST}): `chargebox migrate --db "
                                 f"{source}` first (servers stopped)")  # fmt: skip
            if found > migrations.LATEST:
                raise ValueError(f"--from {source}: made by a newer chargebox (schema "
                                 f"version {found}): copy it with that release")  # fmt: skip
            checked, verified = seals.key_check(seals.SqliteRows(reader), key.encode("utf-8"))
        finally:
            reader.close()
    except sqlite3.DatabaseError as exc:  # not a database: said of --from, not of --db
        raise ValueError(f"--from {source}: {exc}") from None
    if checked and not verified:
        raise ValueError(f"--from {source}: {key_from} {seals.wrong_key(checked)}")


def _check_anchors(config: Config, source: Path, key: str, target: str) -> None:
    """Before anything moves: the anchors already in --data-dir are the file's, or what it
    has gone past (a rehearsal's copy). Another deployment's, sealed with the same key (a
    copy of one file, or a rehearsal that sold on), would fail the copy's audit after the
    rows were in, and a second copy was then refused: the target held sellers (helper-139)."""
    found = anchors.loaded(config, key.encode("utf-8"))
    reader = sqlite3.connect(_read_only(source), uri=True)
    try:
        db = seals.SqliteRows(reader)
        lacking = revocations.every_problem(db, found)
    finally:
        reader.close()
    if lacking:
        raise ValueError(
            f"--data-dir {config.data_dir}: its anchors ({config.anchors_path}) hold "
            f"{len(lacking)} thing(s) --from {source} does not, first: "
            f"{anchors.located(lacking[0])}{lacking[0]['message']}. They are another "
            f"deployment's: name the --data-dir `chargebox init-db` made for "
            f"{postgresql.described(target)}, or move those anchors aside if that deployment "
            "is gone; nothing copied"
        )


def _check_target(target: str) -> None:
    """Before anything moves (the secrets kept aside included): the target is empty and
    no server runs on it. `copy` asks again, in the connection that writes."""
    conn = postgresql.connect(target, autocommit=True, lost_after=COPY_LOST_AFTER, flag="--to")
    try:
        _refuse_a_busy_target(conn, target)
    finally:
        conn.close()


def _refuse_a_busy_target(conn, target_url: str) -> None:
    if conn.execute("SELECT count(*) FROM seller").fetchone()[0]:
        raise ValueError(
            f"--to {postgresql.described(target_url)}: it already holds sellers; "
            "copy only into an empty schema (chargebox init-db)"
        )
    if migrations.serving_sessions(conn):  # they hold init-db's key, not the file's
        raise ValueError(
            f"--to {postgresql.described(target_url)}: chargebox servers run on it: "
            "stop them first; they would seal with init-db's ledger key beside the copy's"
        )


def _read_only(source: Path) -> str:
    """The file's URI, read-only: its path quoted (a `?` or `#` in it was taken for the
    URI's query, and another file made)."""
    return f"{source.resolve().as_uri()}?mode=ro"


def _to_replace(config: Config, secrets: dict[Path, str], target: str) -> dict[Path, str | None]:
    """The secrets of --data-dir the file's will replace, with what each holds now. A data
    dir whose ledger key is another and that holds anchors is a deployment's that has
    sealed: refused (helper-113). An admin token may differ (one rotated since a
    rehearsal's copy): it is kept aside, and can be rotated again."""
    replaced: dict[Path, str | None] = {}  # each with what it holds now
    for path, secret in secrets.items():
        held = path.read_text(errors="replace").strip() if path.exists() else None
        if held == secret:
            continue
        if held and path == config.ledger_key_path and config.anchors_path.exists():
            raise ValueError(
                f"--data-dir {config.data_dir}: its ledger_key is not the file's, and its "
                f"anchors show that key has sealed: name the --data-dir `chargebox init-db` "
                f"made for {postgresql.described(target)} (if this is it, move its "
                f"ledger_key and anchors aside first); nothing copied"
            )
        replaced[path] = held
    return replaced


def _keep_aside(replaced: dict[Path, str | None]) -> None:
    """Each secret to be replaced kept beside it first (`.before-copy-TIME-PID`, 0600: a
    key once lost makes every seal it made unverifiable)."""
    for path, held in replaced.items():
        if held is not None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            aside = path.with_name(f"{path.name}.before-copy-{stamp}-{os.getpid()}")
            try:
                written_secret(aside, held, replacing=False)
            except OSError as exc:
                raise ValueError(f"{aside}: could not keep {path.name} aside there "
                                 f"({exc.strerror}); nothing copied") from None  # fmt: skip


def copy(source: Path, target_url: str) -> dict[str, int]:
    """Copy the SQLite file `source` into the empty schema at `target_url`; rows per table."""
    reader = sqlite3.connect(_read_only(source), uri=True)
    conn = postgresql.connect(target_url, autocommit=True, lost_after=COPY_LOST_AFTER, flag="--to")
    try:
        reader.execute("BEGIN")  # one snapshot of a file that may be busy
        _refuse_a_busy_target(conn, target_url)
        counts: dict[str, int] = {}
        with conn.transaction():
            counts["seller"] = _sellers(reader, conn)
            for table, columns in _PLAIN_TABLES:
                counts[table] = _rows(reader, conn, table, columns)
            counts["ledger_entry"] = _entries(reader, conn)
            for table, columns in _AFTER_THE_LEDGER:
                counts[table] = _rows(reader, conn, table, columns)
            _suspensions(reader, conn)
            for table in _SERIAL_TABLES:
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
        return counts
    finally:
        reader.close()
        conn.close()


def _sellers(reader: sqlite3.Connection, conn) -> int:
    """Sellers start at 0 (a trigger insists); the ledger replay moves their balances.
    All start active, so that their sales and requests go in; `_suspensions` follows."""
    rows = reader.execute("SELECT id, name, created_at FROM seller ORDER BY id")
    count = 0
    for row in rows:
        conn.execute(
            "INSERT INTO seller (id, name, balance, status, created_at)"
            " VALUES (%s, %s, 0, 'active', %s)",
            row,
        )
        count += 1
    return count


def _suspensions(reader: sqlite3.Connection, conn) -> None:
    """Each seller's status and its count of changes (schema version 11), once its sales
    and requests are in. One suspended by a release before it (its count 0) is counted
    once here: the guard counts each change, this one's too."""
    changed = reader.execute("SELECT id, status, status_changes FROM seller"
                             " WHERE status != 'active' OR status_changes > 0")  # fmt: skip
    for seller_id, status, count in changed:
        counted = count if status == "active" else max(count, 1)
        conn.execute("UPDATE seller SET status = %s, status_changes = %s WHERE id = %s",
                     (status, counted, seller_id))  # fmt: skip


def _rows(reader: sqlite3.Connection, conn, table: str, columns: tuple[str, ...]) -> int:
    """A table's rows in id order, streamed in one COPY: its row triggers check each one,
    and a statement trigger runs once over them all (the sales' blocks: schema version 7;
    a statement a row left a dead version of a block's row per sale, 101 MB for 1,000,000
    sales, in the copy's one transaction)."""
    names = ", ".join(columns)
    count = 0
    with conn.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as rows:
        for row in reader.execute(f"SELECT {names} FROM {table} ORDER BY 1"):
            rows.write_row(row)
            count += 1
    return count


def _entries(reader: sqlite3.Connection, conn) -> int:
    """The entries replayed by the ledger, CHUNK at a time in id order, numbered per seller."""
    write = postgresql.Write(conn, None)  # inside copy()'s transaction
    names = ", ".join(_ENTRY_COLUMNS)
    seq: dict[int, int] = {}
    count = 0
    found = reader.execute(f"SELECT {names} FROM ledger_entry ORDER BY id")
    while rows := found.fetchmany(CHUNK):
        entries = [dict(zip(_ENTRY_COLUMNS, row, strict=True)) for row in rows]
        for entry in entries:
            entry["seq"] = seq[entry["seller_id"]] = seq.get(entry["seller_id"], 0) + 1
        ledger.replay(write, entries)
        count += len(entries)
    return count

"""Schema upgrades: databases made by chargebox 0.1.0 and 0.2.0 are migrated, audited and
served on.

The fixtures (tests/fixtures/release-0.1.0 and release-0.2.0, README there) are an SQLite
file and a PostgreSQL dump that a real server of that release wrote over HTTP (schema
versions 1 and 2). Each test works on a copy:
`chargebox migrate` brings it to this release's schema version in one transaction,
`chargebox audit` finds the books clean, and a server sells on with the sellers'
old keys and refunds a sale the old release made. A second migrate changes nothing; a
database newer than the code is refused by serve and migrate alike, in one line, and
left as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chargebox import guards, migrations, schema
from chargebox.cli import prepare
from chargebox.config import Config
from tests import backends, pg_cluster
from tests.support import (
    ADMIN_TOKEN,
    KEYED_ROWS,
    REFUSED,
    ROOT,
    ServerProcess,
    cli_audit,
    credited_seller,
    database_of,
    db_snapshot,
    drop_trigger,
    read_only,
    reconciled_balances,
    rows_on_disk,
    running_server,
    writable,
)

FIXTURES = ROOT / "tests" / "fixtures"
FIXTURE = FIXTURES / "release-0.1.0"
RELEASES = ("0.1.0", "0.2.0")  # schema versions 1 and 2
VERSION_OF = {"0.1.0": 1, "0.2.0": 2}
SUSPENDED = {"0.1.0": set(), "0.2.0": {4}}  # 0.2.0's fixture suspended seller 4


def chargebox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chargebox.cli", *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "CHARGEBOX_ADMIN_TOKEN": ADMIN_TOKEN},
        capture_output=True,
        text=True,
        timeout=120,
    )


def fixture(release: str) -> Path:
    return FIXTURES / f"release-{release}"


def old_keys(name: str = "keys.json", release: str = "0.1.0") -> dict[int, str]:
    found = json.loads((fixture(release) / name).read_text())
    return {int(seller): key for seller, key in found.items()}


def old_file(home: Path, release: str = "0.1.0") -> Path:
    """A copy of the release's SQLite file, with the ledger key that sealed it beside it."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixture(release) / "chargebox.db", home / "chargebox.db")
    shutil.copyfile(fixture(release) / "ledger_key", home / "ledger_key")
    return home / "chargebox.db"


def sells_on_with_old_keys(server, keys: dict[int, str], suspended: set[int] = frozenset()) -> None:
    """Every old key acts as its seller (a suspended seller's is refused); sales, a replayed
    refusal, approvals and a refund of a sale the old release made go on."""
    for seller_id, key in keys.items():
        api = server.seller(key)
        me = api.get("/api/me")
        if seller_id in suspended:
            assert me.status_code == 403 and me.json()["error"]["code"] == "seller_suspended"
            api.close()
            continue
        assert me.status_code == 200, me.text
        assert me.json()["id"] == seller_id
        api.close()
    first = server.seller(keys[1])
    before = first.get("/api/me").json()["balance"]
    sold = first.post("/api/sales", {"phone": "09121234567", "amount": 7_000})
    assert sold.status_code == 201, sold.text
    assert sold.json()["balance_after"] == before - 7_000
    first.close()
    second = server.seller(keys[2])  # its keyed sale "order-1", sold by 0.1.0, replays
    replayed = second.post("/api/sales", {"phone": "+989351112233", "amount": 6_000},
                           headers={"Idempotency-Key": "order-1"})  # fmt: skip
    assert replayed.status_code == 201, replayed.text
    assert replayed.headers.get("Idempotent-Replayed") == "true", replayed.text
    second.close()
    admin = server.admin()
    pending = admin.get("/api/credit-requests?status=pending").json()["items"]
    assert len(pending) == 2
    assert admin.post(f"/api/credit-requests/{pending[0]['id']}/approve").status_code == 200
    old_sale = admin.get("/api/sales/2").json()  # sold by the old release
    assert (old_sale["refunded_at"], old_sale["refund_entry_id"]) == (None, None)
    refunded = admin.post("/api/sales/2/refund", {"reason": "refunded after the upgrade"})
    assert refunded.status_code == 201, refunded.text
    assert refunded.json()["amount"] == old_sale["amount"]
    again = admin.post("/api/sales/2/refund", {"reason": "twice"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_refunded"
    audit = admin.get("/api/audit?full=true").json()
    assert audit["consistent"], audit
    admin.close()


@pytest.mark.parametrize("release", RELEASES)
def test_an_older_releases_file_is_refused_by_serve_until_migrated(tmp_path, release):
    db = old_file(tmp_path, release)
    before = db_snapshot(db)
    served = chargebox("serve", "--port", "0", "--db", db)
    assert served.returncode == 2
    assert served.stderr.strip().endswith(
        f"the database has schema version {VERSION_OF[release]} and this chargebox needs "
        f"{migrations.LATEST}: "
        "back it up, stop its servers, then run `chargebox migrate`"
    ), served.stderr
    assert len(served.stderr.strip().splitlines()) == 1
    created = chargebox("create-seller", "Eve", "--db", db)
    assert created.returncode == 2 and "chargebox migrate" in created.stderr
    for reading in (("audit",), ("audit", "--full"), ("anchors", "check")):  # not "no such column"
        refused = chargebox(*reading, "--db", db)
        assert refused.returncode == 2 and refused.stderr == served.stderr, refused.stderr
    assert db_snapshot(db) == before


@pytest.mark.parametrize("release", RELEASES)
def test_an_older_releases_file_is_migrated_audited_and_sells_on_with_its_old_keys(
    tmp_path, release
):
    db = old_file(tmp_path, release)
    before = {table: rows_on_disk(db, f"SELECT * FROM {table} ORDER BY 1")
              for table in ("ledger_entry", "ledger_seal", "sale", "phone")}  # fmt: skip
    with writable(db) as conn:  # added beside the guards: dropped, whatever the version
        add_trigger(conn, "zz_added", "ledger_entry", postgresql=False)
    migrated = chargebox("migrate", "--db", db)
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema version {VERSION_OF[release]} -> {migrations.LATEST}" in migrated.stderr
    assert migrated.stderr.strip().endswith(  # and no trigger of an older schema left behind
        "; removed 1 addition(s) the schema does not make: ledger_entry.zz_added"
    ), migrated.stderr
    if release == "0.1.0":
        keys = "SELECT seller_id, label, revoked_at, last_used_at FROM seller_key ORDER BY id"
        assert rows_on_disk(db, keys) == [(n, "default", None, None) for n in range(1, 5)]
    statuses = rows_on_disk(db, "SELECT id FROM seller WHERE status = 'suspended'")
    assert {n for (n,) in statuses} == SUSPENDED[release]
    recorded = rows_on_disk(db, "SELECT version FROM schema_version ORDER BY version")
    since = VERSION_OF[release]  # a 0.2.0 file was made at 2 (0.1.0 recorded none: 1)
    assert recorded == [(version,) for version in range(since, migrations.LATEST + 1)]
    entries = rows_on_disk(db, "SELECT * FROM ledger_entry ORDER BY 1")
    assert entries == [(*row, None) for row in before["ledger_entry"]]  # refund_of: NULL
    for table in ("ledger_seal", "sale", "phone"):  # the seals stand as they were
        assert rows_on_disk(db, f"SELECT * FROM {table} ORDER BY 1") == before[table]
    audited = cli_audit(db)  # full: the fixture holds no checkpoint
    assert audited.returncode == 0, audited.stderr
    with running_server(db) as server:
        sells_on_with_old_keys(server, old_keys(release=release), SUSPENDED[release])
    reconciled_balances(db)
    assert cli_audit(db).returncode == 0


@pytest.mark.parametrize("release", RELEASES)
def test_migrating_twice_changes_nothing_the_second_time(tmp_path, release):
    db = old_file(tmp_path, release)
    assert chargebox("migrate", "--db", db).returncode == 0
    before = db_snapshot(db)
    again = chargebox("migrate", "--db", db)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr
    assert db_snapshot(db) == before


@pytest.mark.parametrize("release", RELEASES)
def test_a_migrated_file_has_the_schema_of_a_new_one(tmp_path, release):
    """Every table, index and trigger of a new file, and nothing else, in a migrated one."""
    db = old_file(tmp_path / "old", release)
    assert chargebox("migrate", "--db", db).returncode == 0
    assert_schema_of_a_new_file(db, tmp_path / "new")


def test_a_file_of_a_build_before_0_1_0_is_migrated_to_the_schema_of_a_new_one(tmp_path):
    """Development builds before 0.1.0 (which printed 0.1.0 too) made no audit checkpoint
    tables nor one of credit_request's indexes, and held ledger_entry's index of credit
    requests on every row (a new file's is partial): migrate failed on them at every try
    (`no such table: main.audit_checkpoint`, re-installing that table's triggers). It
    makes what a new file has and the file lacks or holds in another shape, then audits
    clean."""
    db = old_file(tmp_path / "old")
    with writable(db) as conn:
        for table in ("seller_checkpoint", "audit_checkpoint"):  # their triggers go too
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DROP INDEX credit_request_seller_id_status_id")
        conn.execute("DROP INDEX ledger_entry_credit_request_id")
        conn.execute(
            "CREATE UNIQUE INDEX ledger_entry_credit_request_id ON ledger_entry (credit_request_id)"
        )
    migrated = chargebox("migrate", "--db", db)
    assert migrated.returncode == 0 and "1 -> " in migrated.stderr, migrated.stderr
    assert migrated.stderr.rstrip().endswith(
        "; made what it lacked: credit_request_seller_id_status_id,"
        " ledger_entry_credit_request_id (made again: it differed), audit_checkpoint,"
        " seller_checkpoint, seller_checkpoint_seller_id_checkpoint_id"
    ), migrated.stderr
    assert_schema_of_a_new_file(db, tmp_path / "new")
    audited = chargebox("audit", "--db", db, "--full")
    assert audited.returncode == 0, audited.stdout + audited.stderr


@pytest.mark.sqlite_only
def test_an_index_a_newest_file_lacks_is_made_and_said(tmp_path):
    """migrate makes what a file at the newest version lacks, and says so, not "nothing to
    do"; then nothing is left to do."""
    db = tmp_path / "chargebox.db"
    assert chargebox("init-db", "--db", db).returncode == 0
    with writable(db) as conn:
        conn.execute("DROP INDEX credit_request_seller_id_status_id")
    made = chargebox("migrate", "--db", db)
    assert made.returncode == 0 and "nothing to do" not in made.stderr, made.stderr
    assert "already the newest; made what it lacked: credit_request_seller_id_status_id" in (
        made.stderr
    )
    assert "nothing to do" in chargebox("migrate", "--db", db).stderr


def assert_schema_of_a_new_file(db: Path, home: Path) -> None:
    """Every table, index and trigger of a file init-db makes in `home`, and nothing
    else, in `db`."""
    new = home / "chargebox.db"
    assert chargebox("init-db", "--db", new).returncode == 0
    catalogue = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    assert _normalised(rows_on_disk(db, catalogue)) == _normalised(rows_on_disk(new, catalogue))


def _normalised(rows: list[tuple]) -> list[tuple]:
    """SQLite keeps a table's CREATE as written; a rebuilt table's name is quoted."""
    return [(kind, name, table, (sql or "").replace('"', "")) for kind, name, table, sql in rows]


def test_migrate_of_a_missing_file_refuses_and_creates_nothing(tmp_path):
    result = chargebox("migrate", "--db", tmp_path / "none.db")
    assert result.returncode == 2
    assert "no database here to migrate" in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_serve_and_migrate_refuse_a_database_made_by_a_newer_chargebox(tmp_path, new_database):
    db, data = new_database(tmp_path)
    config = Config(db_path=db, admin_token=ADMIN_TOKEN) if data is None else Config(
        db_url=db, data_dir=data, admin_token=ADMIN_TOKEN
    )  # fmt: skip
    prepare(config)
    newer = migrations.LATEST + 1
    with writable(db) as conn:
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?, 'later')", (newer,)
        )
    before = db_snapshot(db)
    where = ["--db", db, *(["--data-dir", data] if data else [])]
    served = chargebox("serve", "--port", "0", *where)
    assert served.returncode == 2
    assert f"made by a newer chargebox (schema version {newer}" in served.stderr
    owner = backends.owner_url(db) if data else db
    migrated = chargebox("migrate", "--db", owner, *(["--data-dir", data] if data else []))
    assert migrated.returncode == 2
    assert "made by a newer chargebox" in migrated.stderr
    assert "Traceback" not in served.stderr + migrated.stderr
    assert db_snapshot(db) == before


@pytest.mark.parametrize("forged", [False, True], ids=["clean", "forged"])
def test_a_version_3_database_gets_the_key_record_triggers_unless_a_record_is_forged(
    service, config, forged
):
    """Version 4 adds the triggers that keep a key's record its seller's. A version-3
    database is migrated to 4, and then refuses a record of another seller's sale; one that
    already holds such a record (written by hand) is refused by migrate, naming the record,
    and left as it was."""
    ali, sara = credited_seller(service, 10_000, "Ali"), credited_seller(service, 0, "Sara")
    sale = service.sell(ali["id"], "09121234567", 1_000).record["id"]
    service.close()
    db = database_of(config)
    record = ("INSERT INTO idempotency_record (seller_id, key, request_hash, created_at,"
              " sale_id) VALUES (?, 'forged', 'h', 'now', ?)", (sara["id"], sale))  # fmt: skip
    with writable(db) as conn:  # back to version 3
        if config.db_url:
            conn.execute("DROP FUNCTION chargebox_record_is_its_sellers() CASCADE")
        else:
            for table, _, _ in KEYED_ROWS:
                conn.execute(f"DROP TRIGGER {table}_is_its_sellers")
        conn.execute(f"UPDATE schema_version SET version = 3 WHERE version = {migrations.LATEST}")
        for index in ADDED_INDEXES[bool(config.db_url)]:  # versions 5, 6 and 10
            conn.execute(f"DROP INDEX {index}")
        for statement in VERSION_7[bool(config.db_url)] + VERSION_11[bool(config.db_url)]:
            conn.execute(statement)
        if forged:
            conn.execute(*record)
    before = db_snapshot(db)
    where = ["--data-dir", config.data_dir] if config.db_url else []
    migrated = chargebox("migrate", "--db", backends.owner_url(db) if config.db_url else db,
                         *where)  # fmt: skip
    assert "Traceback" not in migrated.stderr, migrated.stderr
    if forged:
        assert migrated.returncode == 2, migrated.stdout
        assert "1 key record(s) name a row of another seller, first: idempotency_record" in (
            migrated.stderr
        )
        assert f"names sale {sale} of seller {ali['id']}" in migrated.stderr
        assert db_snapshot(db) == before
        return
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema version 3 -> {migrations.LATEST}" in migrated.stderr
    with writable(db) as conn, pytest.raises(REFUSED, match="another seller"):
        conn.execute(*record)
    with read_only(db) as conn:  # version 7's blocks, made from the sales there
        blocks = "SELECT block, first_stamp, last_stamp FROM sale_block ORDER BY block"
        spans = ("SELECT id >> 10, min(created_at), max(created_at) FROM sale"
                 " GROUP BY id >> 10 ORDER BY 1")  # fmt: skip
        assert conn.execute(blocks).fetchall() == conn.execute(spans).fetchall() != []
    audited = cli_audit(db, config.data_dir if config.db_url else None)  # (the hand-made
    assert "no span" not in audited.stdout + audited.stderr  # sale is still named, I4)


def test_a_version_10_database_counts_each_change_of_status_from_migrate_on(service, config):
    """Version 11 counts each change of a seller's status (a restore tells one undone by it:
    revocations.py). A version-10 database is migrated with every count at 0, whatever its
    sellers' statuses, and audits clean (its seller table is a new database's); from then
    on a change of status that is not counted, or a count that falls, is refused."""
    ali, sara = credited_seller(service, 0, "Ali"), credited_seller(service, 0, "Sara")
    service.close()
    db = database_of(config)
    with writable(db) as conn:  # back to version 10, where a release suspends uncounted
        for statement in VERSION_11[bool(config.db_url)]:
            conn.execute(statement)
        conn.execute("UPDATE seller SET status = 'suspended' WHERE id = ?", (sara["id"],))
        conn.execute(f"UPDATE schema_version SET version = 10 WHERE version = {migrations.LATEST}")
    where = ["--data-dir", config.data_dir] if config.db_url else []
    migrated = chargebox("migrate", "--db", backends.owner_url(db) if config.db_url else db,
                         *where)  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema version 10 -> {migrations.LATEST}" in migrated.stderr
    assert rows_on_disk(db, "SELECT id, status, status_changes FROM seller ORDER BY id") == [
        (ali["id"], "active", 0), (sara["id"], "suspended", 0)
    ]  # fmt: skip
    assert cli_audit(db, config.data_dir if config.db_url else None).returncode == 0
    uncounted = ("UPDATE seller SET status = 'active' WHERE id = ?", (sara["id"],))
    falls = ("UPDATE seller SET status_changes = -1 + status_changes WHERE id = ?", (ali["id"],))
    for statement in (uncounted, falls):
        with writable(db) as conn, pytest.raises(REFUSED, match="status is counted"):
            conn.execute(*statement)
    with writable(db) as conn:
        conn.execute("UPDATE seller SET status = 'active', status_changes = status_changes + 1"
                     " WHERE id = ?", (sara["id"],))  # fmt: skip
    assert rows_on_disk(db, "SELECT status, status_changes FROM seller WHERE id = ?",
                        (sara["id"],)) == [("active", 1)]  # fmt: skip


# Version 5's index of entries by stamp, on SQLite and on PostgreSQL (its index of sales
# by stamp is gone in version 7), and version 6's of sales by number (PostgreSQL; SQLite's
# file has had one since version 1), and version 10's of web sessions by holder (the same).
ADDED_INDEXES = {
    False: ("ledger_entry_seller_id_created_at_amount",),
    True: ("ledger_entry_seller_created_at", "sale_phone_id", "web_session_seller_id"),
}
# What version 7 made: the blocks of sales (their table, with its own triggers; the one on sale).
VERSION_7 = {
    False: ("DROP TRIGGER sale_widens_its_block", "DROP TABLE sale_block"),
    True: ("DROP FUNCTION chargebox_sales_widen_their_blocks() CASCADE",
           "DROP TABLE sale_block", "DROP FUNCTION chargebox_block_only_widens()"),
}  # fmt: skip
# What version 11 made: the count of a seller's changes of status, and its guard.
VERSION_11 = {
    False: ("DROP TRIGGER seller_status_is_counted",
            "ALTER TABLE seller DROP COLUMN status_changes"),
    True: ("DROP FUNCTION chargebox_seller_status_is_counted() CASCADE",
           "ALTER TABLE seller DROP COLUMN status_changes"),
}  # fmt: skip


def test_sales_made_while_the_blocks_trigger_was_off_are_in_their_spans_after_migrate(
    service, config
):
    """A sale made while the trigger that widens its block (schema version 7) was dropped
    (SQLite) or switched off by the schema's owner (PostgreSQL) lies in no block's span,
    and a search by time would never find it: the audit names it (I5). When `chargebox
    migrate` puts the trigger back it widens the blocks from the sales (a span wider than
    its sales stays), and the audit no longer names it."""
    seller = credited_seller(service, 10**6, "Ali")["id"]
    service.sell(seller, "09121234567", 1_000)
    service.close()
    db = database_of(config)
    far = (5 << schema.BLOCK_BITS) + 1
    with writable(db) as conn:
        if config.db_url:
            conn.execute("ALTER TABLE sale DISABLE TRIGGER sale_widens_its_block")
        else:
            drop_trigger(conn, "sale_widens_its_block")
        conn.execute("INSERT INTO sale (id, seller_id, phone, amount, balance_after, created_at)"
                     " VALUES (?, ?, '09121234567', 1, 0, '2020-01-01T00:00:00.000000Z')",
                     (far, seller))  # fmt: skip
        conn.execute("UPDATE sale_block SET last_stamp = '2099-01-01T00:00:00.000000Z'")
    audited = cli_audit(db, config.data_dir if config.db_url else None)  # (I5 names both)
    assert audited.returncode != 0
    assert f"sale {far} lies in no span of stamps of its block" in audited.stdout + audited.stderr
    where = ["--data-dir", config.data_dir] if config.db_url else []
    migrated = chargebox("migrate", "--db", backends.owner_url(db) if config.db_url else db,
                         *where)  # fmt: skip
    assert migrated.returncode == 0 and "sale_widens_its_block" in migrated.stderr, migrated.stderr
    audited = cli_audit(db, config.data_dir if config.db_url else None)  # (the hand-made
    assert "no span" not in audited.stdout + audited.stderr  # sale is still named, I4)
    spans = ("SELECT id >> 10, min(created_at), max(created_at) FROM sale GROUP BY 1"
             " ORDER BY 1")  # fmt: skip
    with read_only(db) as conn:
        blocks = conn.execute("SELECT block, min(first_stamp), max(last_stamp) FROM sale_block"
                              " GROUP BY block ORDER BY block").fetchall()  # fmt: skip
        made = conn.execute(spans).fetchall()
    assert [(n, first) for n, first, _ in blocks] == [(n, first) for n, first, _ in made]
    assert blocks[1] == (5, "2020-01-01T00:00:00.000000Z", "2020-01-01T00:00:00.000000Z")
    assert blocks[0][2] == "2099-01-01T00:00:00.000000Z"  # (wider than its sales: kept)


def test_a_dropped_guard_keeps_the_server_from_starting_until_migrate_puts_it_back(service, config):
    """Someone who can write to the database drops a guard trigger, and empties another
    guard (SQLite: a trigger made again under its name, doing nothing; PostgreSQL: the
    function the append-only triggers call, and, as the schema's owner may, a trigger
    disabled and another made again under its name for TRUNCATE only). No command that
    writes starts on it: each exits 2 naming them and the way back, and puts nothing back
    itself, so the audit still names them (I5). `chargebox migrate` puts them back and
    says so; then the guards refuse again, and the server starts."""
    credited_seller(service, 10_000, "Ali")
    service.close()
    db = database_of(config)
    with writable(db) as conn:
        drop_trigger(conn, "ledger_entry_no_update")
        if config.db_url:
            conn.execute("CREATE OR REPLACE FUNCTION chargebox_refuse() RETURNS trigger"
                         " LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END; $$")  # fmt: skip
            conn.execute("ALTER TABLE ledger_entry DISABLE TRIGGER ledger_entry_no_delete")
            drop_trigger(conn, "seller_no_delete")  # made again, guarding TRUNCATE only
            conn.execute("CREATE TRIGGER seller_no_delete BEFORE TRUNCATE ON seller FOR EACH"
                         " STATEMENT EXECUTE FUNCTION chargebox_refuse('sellers are never"
                         " deleted')")  # fmt: skip
        else:
            conn.execute("DROP TRIGGER ledger_entry_no_delete")
            conn.execute("CREATE TRIGGER ledger_entry_no_delete BEFORE DELETE ON ledger_entry"
                         " BEGIN SELECT 1; END")  # fmt: skip
    where = ["--data-dir", config.data_dir] if config.db_url else []
    refused = chargebox("create-seller", "Sara", "--db", db, *where)
    named = (
        "chargebox_refuse(), ledger_entry_no_delete, ledger_entry_no_update, seller_no_delete"
        if config.db_url
        else "ledger_entry_no_delete, ledger_entry_no_update"
    )
    assert refused.returncode == 2, refused.stderr
    assert f"{named.count(',') + 1} guard(s) of the schema are missing or changed ({named})" in (
        refused.stderr
    )
    assert "chargebox audit --full" in refused.stderr and "Traceback" not in refused.stderr
    audited = cli_audit(db, config.data_dir if config.db_url else None)
    assert audited.returncode == 1 and "ledger_entry_no_update is missing" in audited.stderr
    if config.db_url:
        assert "schema function chargebox_refuse() was dropped or changed" in audited.stderr
    migrated = chargebox("migrate", "--db", backends.owner_url(db) if config.db_url else db,
                         *where)  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    assert (
        f"already the newest; put back {named.count(',') + 1} guard(s) dropped or changed:"
        f" {named}" in migrated.stderr
    )
    with writable(db) as conn, pytest.raises(REFUSED, match="never updated"):
        conn.execute("UPDATE ledger_entry SET created_at = created_at")
    with writable(db) as conn, pytest.raises(REFUSED, match="never deleted"):
        conn.execute("DELETE FROM ledger_entry")  # PostgreSQL: the trigger disabled, too
    if config.db_url:  # the trigger made again is today's
        with writable(db) as conn, pytest.raises(REFUSED, match="never deleted"):
            conn.execute("DELETE FROM seller")
    audited = cli_audit(db, config.data_dir if config.db_url else None)  # (the hand-made
    assert "no span" not in audited.stdout + audited.stderr  # sale is still named, I4)
    started = chargebox("create-seller", "Sara", "--db", db, *where)
    assert started.returncode == 0, started.stderr
    again = chargebox("migrate", "--db", backends.owner_url(db) if config.db_url else db, *where)
    assert "already the newest, nothing to do" in again.stderr
    if config.db_url:  # every guard function has its newest body (the version-3 chain's too)
        with read_only(db) as conn:
            assert guards.postgresql_missing(lambda sql: conn.execute(sql).fetchall()) == []


@pytest.mark.parametrize("name", ["zz.it's", "zz()"])
def test_a_trigger_added_beside_the_guards_is_named_and_migrate_drops_it(service, config, name):
    """A trigger the schema does not make, on one of its tables (on PostgreSQL a BEFORE
    trigger that fires after the guards, in name order, could rewrite the row they let
    through): start-up refuses the database naming it as `table.name`, the audit names it
    (I5), and `chargebox migrate` drops it and says so. Its name needs quoting, or reads
    like a guard function's (`name()`). A trigger on a table of the operator's own (its
    name dotted) is theirs: not named, and left where it is."""
    credited_seller(service, 10_000, "Ali")
    service.close()
    db = database_of(config)
    with writable(db) as conn:
        conn.execute('CREATE TABLE "my.notes" (note TEXT)')
        add_trigger(conn, name, "ledger_entry", conn.postgresql)
        add_trigger(conn, "mine", "my.notes", conn.postgresql)
    named = f"ledger_entry.{name}"
    with read_only(db) as conn:
        found = (guards.postgresql_missing(lambda sql: conn.execute(sql).fetchall())
                 if config.db_url else schema.missing_triggers(conn))  # fmt: skip
    assert found == [named] and isinstance(found[0], schema.Added)
    where = ["--data-dir", config.data_dir] if config.db_url else []
    refused = chargebox("create-seller", "Sara", "--db", db, *where)
    assert refused.returncode == 2, refused.stderr
    assert (f"1 guard(s) of the schema are missing or changed ({named}); 1 of them added"
            " beside the guards" in refused.stderr)  # fmt: skip
    assert "to put them back and drop what was added" in refused.stderr
    audited = cli_audit(db, config.data_dir if config.db_url else None)
    assert audited.returncode == 1
    assert f"trigger {named} is not the schema's" in audited.stderr
    assert "my.notes" not in audited.stderr
    migrated = chargebox("migrate", "--db", backends.owner_url(db) if config.db_url else db,
                         *where)  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    after = "; granted to " if config.db_url else "\n"  # the whole list: nothing else removed
    assert (f"already the newest; removed 1 addition(s) the schema does not make: {named}{after}"
            in migrated.stderr), migrated.stderr  # fmt: skip
    with read_only(db) as conn:
        assert triggers_on(conn, "my.notes") == ["mine"]
        assert triggers_on(conn, "ledger_entry").count(name) == 0
    audited = cli_audit(db, config.data_dir if config.db_url else None)  # (the hand-made
    assert "no span" not in audited.stdout + audited.stderr  # sale is still named, I4)
    started = chargebox("create-seller", "Sara", "--db", db, *where)
    assert started.returncode == 0, started.stderr


def add_trigger(conn, name: str, table: str, postgresql: bool) -> None:
    """A trigger of the operator's, named `name`, that does nothing, on `table`."""
    if postgresql:
        conn.execute("CREATE OR REPLACE FUNCTION zz_added() RETURNS trigger LANGUAGE plpgsql"
                     " AS $$ BEGIN RETURN NEW; END; $$")  # fmt: skip
        conn.execute(f"CREATE TRIGGER {schema.quoted(name)} BEFORE INSERT ON"
                     f" {schema.quoted(table)} FOR EACH ROW"
                     " EXECUTE FUNCTION zz_added()")  # fmt: skip
    else:
        conn.execute(f"CREATE TRIGGER {schema.quoted(name)} AFTER INSERT ON"
                     f" {schema.quoted(table)} BEGIN SELECT 1; END")  # fmt: skip


def triggers_on(conn, table: str) -> list[str]:
    """The names of the triggers on `table`, whoever made them, from the catalogue."""
    if conn.postgresql:
        sql = "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(?) AND NOT tgisinternal"
        return sorted(name for (name,) in conn.execute(sql, (schema.quoted(table),)))
    sql = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?"
    return sorted(name for (name,) in conn.execute(sql, (table,)))


@pytest.mark.postgresql_only
def test_a_rule_or_an_inheriting_table_is_named_and_migrate_removes_it(service, config):
    """On PostgreSQL, what else the schema's owner may add to one of its tables: a rule
    (it rewrites what is written there) and a table inheriting it (whose rows the table
    shows, and which no guard sees written). Start-up refuses, the audit names each (I5),
    and migrate drops the rule and detaches the table (NO INHERIT), leaving it and its
    rows to the operator."""
    credited_seller(service, 10_000, "Ali")
    service.close()
    db = database_of(config)
    with writable(db) as conn:
        conn.execute("CREATE RULE zz_also AS ON INSERT TO web_session DO ALSO NOTIFY zz")
        conn.execute('CREATE TABLE "zz child" () INHERITS (ledger_entry)')
    named = ['"zz child" (a table inheriting ledger_entry)', "web_session.zz_also (a rule)"]
    with read_only(db) as conn:
        assert guards.postgresql_missing(lambda sql: conn.execute(sql).fetchall()) == named
    refused = chargebox("create-seller", "Sara", "--db", db, "--data-dir", config.data_dir)
    assert refused.returncode == 2 and "2 of them added beside" in refused.stderr, refused.stderr
    audited = cli_audit(db, config.data_dir)
    assert audited.returncode == 1
    assert 'table "zz child" inherits ledger_entry' in audited.stderr
    assert "rule web_session.zz_also is not the schema's" in audited.stderr
    migrated = chargebox("migrate", "--db", backends.owner_url(db), "--data-dir", config.data_dir)
    assert migrated.returncode == 0, migrated.stderr
    assert f"removed 2 addition(s) the schema does not make: {', '.join(named)}" in (
        migrated.stderr
    )
    with read_only(db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_inherits").fetchone() == (0,)
        assert conn.execute("SELECT to_regclass('\"zz child\"') IS NOT NULL").fetchone() == (True,)
    assert cli_audit(db, config.data_dir).returncode == 0


# Changes of a guard that leave it in place, each named (PostgreSQL; a reviewer's finds).
SUBTLE_CHANGES = {
    "a WHEN that never fires (only quoted text changed)": (
        "ledger_entry_refund_matches_sale",
        "DROP TRIGGER ledger_entry_refund_matches_sale ON ledger_entry",
        "CREATE TRIGGER ledger_entry_refund_matches_sale BEFORE INSERT ON ledger_entry FOR EACH"
        " ROW WHEN (NEW.kind = 'REFUND') EXECUTE FUNCTION chargebox_refund_matches_sale()",
    ),
    "a function's search_path sent elsewhere (pg_temp first again)": (
        "chargebox_refund_matches_sale()",
        "ALTER FUNCTION chargebox_refund_matches_sale() SET search_path = public",
    ),
    "a function emptied, beside a decoy of its name with its body": (
        "chargebox_refuse()",
        "CREATE OR REPLACE FUNCTION chargebox_refuse() RETURNS trigger LANGUAGE plpgsql"
        " SET search_path FROM CURRENT AS $$ BEGIN RETURN NEW; END; $$",
        "SET check_function_bodies = off",
        "CREATE FUNCTION chargebox_refuse(n int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';"
        " END; $$",
    ),
    "a WHEN cast to a type of one's own (its operators could do anything)": (
        "seller_balance_follows_ledger",
        "CREATE DOMAIN money_t AS bigint",
        "DROP TRIGGER seller_balance_follows_ledger ON seller",
        "CREATE CONSTRAINT TRIGGER seller_balance_follows_ledger AFTER UPDATE OF balance ON"
        " seller DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.balance::money_t IS"
        " DISTINCT FROM OLD.balance::money_t) EXECUTE FUNCTION chargebox_balance_follows_ledger()",
    ),
    "a function run as its owner": (
        "chargebox_needs_an_active_seller()",
        "ALTER FUNCTION chargebox_needs_an_active_seller() SECURITY DEFINER",
    ),
}


@pytest.mark.postgresql_only
@pytest.mark.parametrize("change", SUBTLE_CHANGES)
def test_a_guard_changed_in_place_is_named_and_migrate_puts_it_back(service, config, change):
    """The schema's owner changes a guard without dropping it: start-up, the audit and the
    metric name it (guards.postgresql_missing), and migrate makes it again."""
    name, *statements = SUBTLE_CHANGES[change]
    service.close()
    db = database_of(config)
    with writable(db) as conn:
        for statement in statements:
            conn.execute(statement)
    with read_only(db) as conn:
        assert guards.postgresql_missing(lambda sql: conn.execute(sql).fetchall()) == [name]
    migrated = chargebox("migrate", "--db", backends.owner_url(db), "--data-dir", config.data_dir)
    assert f"put back 1 guard(s) dropped or changed: {name}" in migrated.stderr, migrated.stderr
    with read_only(db) as conn:
        assert guards.postgresql_missing(lambda sql: conn.execute(sql).fetchall()) == []


def test_the_schemas_when_clauses_are_single_conditions():
    """guards.trigger_definition drops a WHEN's parentheses to compare it with what
    PostgreSQL gives back: harmless only while each WHEN is one condition."""
    _, triggers = guards.postgresql_guards()
    whens = [made.group(1) for _, statement in triggers.values()
             if (made := re.search(r"WHEN \((.*)\)\s+EXECUTE", statement, re.S))]  # fmt: skip
    assert len(whens) == 5
    for when in whens:
        words = re.sub(r"IS NOT NULL|IS DISTINCT FROM|'[^']*'", " ", when.upper()).split()
        assert not {"AND", "OR", "NOT"} & set(words), when


# Each schema version's guards, pinned: start-up compares a database's guards with today's
# text (SQLite's triggers, PostgreSQL's functions: guards.py), so a change of that text
# made without a new schema version would refuse every database of the version as
# tampered with. A change takes a new version, its migration step, and a line here.
GUARDS_OF_VERSION = {
    4: (
        "ef49f3b4c5d5c8f61effbfd7f55c2f1fd0db8f1d466734af7a7637666208794a",  # schema.TRIGGERS
        "c3c70aba2ceebb80dfa3885985a19530358af8a5918c2ab4185ebdde709f16c0",  # PostgreSQL's
    ),
    5: (  # an index, no guard changed
        "ef49f3b4c5d5c8f61effbfd7f55c2f1fd0db8f1d466734af7a7637666208794a",
        "c3c70aba2ceebb80dfa3885985a19530358af8a5918c2ab4185ebdde709f16c0",
    ),
    6: (  # an index, no guard changed
        "ef49f3b4c5d5c8f61effbfd7f55c2f1fd0db8f1d466734af7a7637666208794a",
        "c3c70aba2ceebb80dfa3885985a19530358af8a5918c2ab4185ebdde709f16c0",
    ),
    7: (  # sale_block: the trigger on sale that widens a block, and its own guards
        "3dc7d5cb5dd66803eb1eb16a1b0996f8fd0dbd6aa6c6343063b09011324ef1c8",
        "31a1ca7e16f1f15ab7c65c8b89fcf4353c41550f1c6c6ffbf4e9d6703690f1ca",
    ),
    8: (  # seller_key_revocation_is_final pins the key row's id too
        "184c3643e73c9d20bda2f0d0526b7c0b9e55e3d15b5da80b6f0d11fe57b88473",
        "8e2b2d2c04a832839d44cf5bed4c956fddb5306f8e4c5ee577c46b66dd273e0a",
    ),
    9: (  # audit_checkpoint_is_new: a checkpoint is recorded once
        "d02716060305280313ae8e78403e1c4737034143ac793e9874eabb525c07c8b5",
        "15bfffe1f2b532c26f41a87467265b91e5b26abfa05cc94467d33685fa9d5987",
    ),
    10: (  # an index, no guard changed
        "d02716060305280313ae8e78403e1c4737034143ac793e9874eabb525c07c8b5",
        "15bfffe1f2b532c26f41a87467265b91e5b26abfa05cc94467d33685fa9d5987",
    ),
    11: (  # seller_status_is_counted: a change of a seller's status is counted
        "5b941bfda618dd1c57f2ce7c3b870e72f6dd52814c62fe3dd18aafb4042d6965",
        "a29f7e9ad7e4f6ba30b763aaab272a66a7604ffefd868c480774699599750924",
    ),
}


def test_the_guards_change_only_with_a_new_schema_version():
    functions, triggers = guards.postgresql_guards()
    postgresql = [{name: body for name, (body, _) in functions.items()}, triggers]
    found = (
        hashlib.sha256("\n".join(schema.TRIGGERS).encode()).hexdigest(),
        hashlib.sha256(json.dumps(postgresql, sort_keys=True).encode()).hexdigest(),
    )
    assert GUARDS_OF_VERSION.get(schema.VERSION) == found, (
        "the guards' text changed: give it a new schema version and a migration step"
        f" (migrations.py), then pin {found} for it here"
    )


def restored(cluster, release: str = "0.1.0") -> pg_cluster.Roles:
    """A new database holding the release's dump, restored by its owner, and the service's
    rights as 0.1.0's `init-db --grant-to` gave them (reading and inserting everywhere;
    migrate grants the rest, to the roles it finds with them)."""
    made = pg_cluster.new_database(cluster, "old")
    restored = subprocess.run(
        [str(cluster.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", made.owner_url],
        input=(fixture(release) / "postgresql.sql").read_text(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert restored.returncode == 0, restored.stderr
    with writable_as(made.owner_url) as conn:
        name = made.owner_url.rsplit("/", 1)[1]
        for statement in (
            f"GRANT CONNECT ON DATABASE {name} TO {{}}",
            "GRANT USAGE ON SCHEMA public TO {}",
            "GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {}",
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}",
            "GRANT UPDATE (balance) ON seller TO {}",
            "GRANT DELETE ON web_session TO {}",
        ):
            conn.execute(statement.format(made.app_role))
    return made


def writable_as(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


@pytest.mark.parametrize("release", RELEASES)
def test_an_older_releases_postgresql_database_is_migrated_granted_audited_and_served(
    postgresql_cluster, tmp_path, release
):
    made = restored(postgresql_cluster, release)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(fixture(release) / "ledger_key", data / "ledger_key")
    served = chargebox("serve", "--port", "0", "--db", made.app_url, "--data-dir", data)
    assert served.returncode == 2 and "run `chargebox migrate`" in served.stderr, served.stderr
    unread = cli_audit(made.app_url, data)
    assert unread.returncode == 2 and unread.stderr == served.stderr, unread.stderr
    with writable_as(made.owner_url) as conn:  # tampered with before the upgrade: put back in it
        conn.execute("ALTER TABLE ledger_entry DISABLE TRIGGER ledger_entry_no_update")
        conn.execute("DROP FUNCTION chargebox_seller_starts_at_zero() CASCADE")  # and its trigger
        add_trigger(conn, "zz_added", "ledger_entry", postgresql=True)
    migrated = chargebox("migrate", "--db", made.owner_url, "--data-dir", data)
    assert migrated.returncode == 0, migrated.stderr
    assert f"granted to {made.app_role}" in migrated.stderr
    assert (
        "put back 3 guard(s) dropped or changed: chargebox_seller_starts_at_zero(),"
        " ledger_entry_no_update, seller_starts_at_zero; removed 1 addition(s) the schema"
        " does not make: ledger_entry.zz_added;"
    ) in migrated.stderr
    assert "secret" not in migrated.stderr  # the URL is shown without its password
    versions = rows_on_disk(made.app_url, "SELECT version FROM schema_version ORDER BY 1")
    assert versions[-1] == (migrations.LATEST,)
    audited = cli_audit(made.app_url, data)
    assert audited.returncode == 0, audited.stderr
    with running_server(made.app_url, data_dir=data) as server:
        keys = old_keys("keys_postgresql.json", release)
        sells_on_with_old_keys(server, keys, SUSPENDED[release])
    reconciled_balances(made.app_url)
    again = chargebox("migrate", "--db", made.owner_url, "--data-dir", data)
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr


def test_an_older_database_whose_guard_function_a_later_step_calls_was_dropped_migrates(
    postgresql_cluster,
):
    """A version-1 database (0.1.0) without chargebox_refuse(): step 2 makes triggers
    that call it, so migrate makes the dropped guard functions again before the steps
    (it failed, UndefinedFunction, changing nothing); it names what it put back, and
    then no guard differs."""
    made = restored(postgresql_cluster, "0.1.0")
    with writable_as(made.owner_url) as conn:
        conn.execute("DROP FUNCTION chargebox_refuse() CASCADE")  # and its triggers
    migrated = chargebox("migrate", "--db", made.owner_url)
    assert migrated.returncode == 0, migrated.stderr
    assert (
        f"schema version 1 -> {migrations.LATEST}" in migrated.stderr
        and "chargebox_refuse()," in migrated.stderr
    )
    assert "ledger_entry_no_update" in migrated.stderr
    assert "does not make" not in migrated.stderr  # no trigger of version 1 is left behind
    with writable_as(made.owner_url) as conn:
        assert guards.postgresql_missing(lambda sql: conn.execute(sql).fetchall()) == []


_POSTGRESQL_CATALOGUE = (
    "SELECT table_name, column_name, data_type, is_nullable, column_default"
    " FROM information_schema.columns WHERE table_schema = 'public'",
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = 'public'::regnamespace",
    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger"
    " WHERE NOT tgisinternal",
    "SELECT proname, prosrc FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
)


def _catalogue(url: str) -> list[set]:
    return [set(rows_on_disk(url, sql)) for sql in _POSTGRESQL_CATALOGUE]


@pytest.mark.parametrize("release", RELEASES)
def test_a_migrated_postgresql_database_has_the_schema_of_a_new_one(
    postgresql_cluster, tmp_path, release
):
    """Every column, constraint, index, trigger and function of a database init-db makes
    now, and nothing else, in an older release's database once migrated (column order
    aside)."""
    made = restored(postgresql_cluster, release)
    assert chargebox("migrate", "--db", made.owner_url).returncode == 0
    new = pg_cluster.initialised(postgresql_cluster, "new", tmp_path / "new")
    assert _catalogue(made.owner_url) == _catalogue(new.owner_url)


def test_migrate_refuses_while_a_server_runs_on_the_database(tmp_path, new_database):
    """A migration changes the schema under running servers, whose old code goes on
    against the new one: migrate refuses in one line, changing nothing (a guard dropped
    meanwhile stays dropped), until they stop (SQLite: the shared lock each server takes
    beside the file; PostgreSQL: the session its anchoring thread keeps open, named
    'chargebox serve', from any host); `--force` migrates anyway. A server killed -9
    holds nothing after it."""
    db, data = new_database(tmp_path)
    target = backends.owner_url(db) if data else db
    where = ["--data-dir", data] if data else []
    guard = "ledger_entry_no_update"

    def serving_sessions(until) -> None:  # PostgreSQL: polled, bounded, until they show
        named = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND datname = current_database()"
        )  # other tests' servers run meanwhile
        with writable(db) as conn:
            deadline = time.monotonic() + 30
            while not until(conn.execute(named, (migrations.SERVING_NAME,)).fetchone()[0]):
                assert time.monotonic() < deadline, "the server's sessions did not show"
                time.sleep(0.05)

    def guarded() -> bool:
        with writable(db) as conn:
            found = (
                "SELECT count(*) FROM pg_trigger WHERE tgname = ?"
                if conn.postgresql
                else "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?"
            )
            return conn.execute(found, (guard,)).fetchone()[0] == 1  # fmt: skip

    with running_server(db, data_dir=data):
        if data:
            serving_sessions(until=lambda count: count > 0)  # its keeper's first round
        with writable(db) as conn:
            drop_trigger(conn, guard)  # what a migrate would put back
        refused = chargebox("migrate", "--db", target, *where)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "stop every server first" in refused.stderr and "--force" in refused.stderr
        assert not guarded()
        forced = chargebox("migrate", "--db", target, *where, "--force")
        assert forced.returncode == 0 and "put back 1 guard" in forced.stderr, forced.stderr
        assert guarded()
    if data:  # a stopped server's backends end as its connections close
        serving_sessions(until=lambda count: count == 0)
    done = chargebox("migrate", "--db", target, *where)
    assert done.returncode == 0 and "nothing to do" in done.stderr, done.stderr
    killed = ServerProcess(db, data_dir=data).start()
    if data:
        serving_sessions(until=lambda count: count > 0)
    killed.stop(signal.SIGKILL)
    if data:
        serving_sessions(until=lambda count: count == 0)
    after = chargebox("migrate", "--db", target, *where)
    assert after.returncode == 0 and "nothing to do" in after.stderr, after.stderr


@pytest.mark.sqlite_only
def test_migrate_refuses_while_any_other_process_has_the_file_open(tmp_path):
    """A server of 0.2.0 or older takes no `.serving` lock: migrate ran under it, and its
    old code went on against the new schema (helper-88). Any process with the file open
    holds SQLite's read lock in its `-shm`: migrate refuses, naming it, changing nothing."""
    db = old_file(tmp_path / "old", "0.2.0")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
         " c.execute('SELECT count(*) FROM seller').fetchone(); print('open', flush=True);"
         " sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "open\n"
        before = db.read_bytes()
        refused = chargebox("migrate", "--db", db)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"process {holder.pid} has it open" in refused.stderr, refused.stderr
        assert db.read_bytes() == before
    finally:
        holder.communicate("", timeout=30)  # its stdin closed: it closes the file and ends
    done = chargebox("migrate", "--db", db)
    assert done.returncode == 0 and "2 -> " in done.stderr, done.stderr


@pytest.mark.postgresql_only
def test_migrate_as_the_app_role_is_refused_naming_the_owner(
    tmp_path, new_database, postgresql_cluster
):
    """The app role (serve's URL) owns no table: its migrate could change nothing, and its
    grants would grant nothing (PostgreSQL only warns), yet it said "granted". Refused in
    one line naming the owner; the owner's URL migrates, and so does a superuser's (it
    may do what the owner may: PostgreSQL counts it a member of every role)."""
    db, data = new_database(tmp_path)
    chargebox("init-db", "--db", db, "--data-dir", data)  # what a first start would do
    refused = chargebox("migrate", "--db", db, "--data-dir", data)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "only its owner may: connect as" in refused.stderr and "granted" not in refused.stderr
    owner = chargebox("migrate", "--db", backends.owner_url(db), "--data-dir", data)
    assert owner.returncode == 0 and "nothing to do" in owner.stderr, owner.stderr
    import psycopg

    name = psycopg.conninfo.conninfo_to_dict(db)["dbname"]
    superuser = chargebox("migrate", "--db", postgresql_cluster.url(db=name), "--data-dir", data)
    assert superuser.returncode == 0 and "nothing to do" in superuser.stderr, superuser.stderr

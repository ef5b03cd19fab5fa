"""`chargebox copy --from FILE --to postgresql://OWNER...` moves a busy SQLite deployment.

A real server keeps selling on the SQLite file while it is copied. The copy is
one consistent moment of the file: every row of it arrives with its id, every
seal with it, each ledger entry replayed through PostgreSQL's own triggers, and
the copy audits clean with the file's ledger key.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psycopg

from chargebox import auth, ledger, migrations, moving, schema
from chargebox.cli import main as chargebox_main
from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.services import Chargebox
from tests import pg_cluster
from tests.support import (
    ADMIN_TOKEN,
    ROOT,
    ServerProcess,
    credited_seller,
    drop_trigger,
    new_seller,
    rows_on_disk,
    running_server,
    writable,
)
from tests.test_postgresql_service import books

ENTRY = "SELECT id, seller_id, kind, amount, balance_after, credit_request_id, sale_id FROM"


def copy(source, target: str, *options: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "chargebox.cli",
            "copy",
            "--from",
            str(source),
            "--to",
            target,
            *options,
        ],  # fmt: skip
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CHARGEBOX_")}, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_busy_sqlite_deployment_moves_every_row_and_seal_and_audits_clean(
    postgresql_cluster, tmp_path
):
    made = pg_cluster.new_database(postgresql_cluster, "copy")
    assert chargebox_main(["init-db", "--db", made.owner_url, "--data-dir", str(tmp_path)]) == 0
    (tmp_path / "sqlite").mkdir()
    source = tmp_path / "sqlite" / "chargebox.db"
    server = ServerProcess(source).start()
    stop, sold = threading.Event(), []
    try:
        admin = server.admin()
        sellers = [new_seller(admin, f"shop {n}", credit=5_000_000) for n in range(3)]

        def sell() -> None:  # keyed sales on every seller until the copy is done
            sessions = [server.seller(key) for _, key in sellers]
            for n in range(5_000):  # bounded; stopped long before
                if stop.is_set():
                    break
                answer = sessions[n % 3].post(
                    "/api/sales",
                    {"phone": f"0912{n % 97:07d}", "amount": 1_000 + n % 7},
                    headers={"Idempotency-Key": f"busy-{n}"},
                )
                sold.append(answer.status_code)

        load = threading.Thread(target=sell)
        load.start()
        deadline = time.monotonic() + 60
        while len(sold) < 50 and time.monotonic() < deadline:  # the file is being written
            time.sleep(0.01)  # polling for the load to be under way, bounded below
        moved = copy(source, made.owner_url, "--data-dir", str(tmp_path / "pg"))
        stop.set()
        load.join()
    finally:
        stop.set()
        assert server.stop() == 0
    assert moved.returncode == 0, moved.stderr
    assert "audit: books reconcile" in moved.stderr and "copied" in moved.stderr
    # The copy's audit anchors the PostgreSQL deployment in its own data directory, not in
    # the data/ of wherever the command ran (it used to leave the checkout's data/anchors).
    assert (tmp_path / "pg" / "anchors").exists() and not (ROOT / "data" / "anchors").exists()
    assert set(sold) == {201}
    with psycopg.connect(made.owner_url) as target:
        copied = target.execute(f"{ENTRY} ledger_entry ORDER BY id").fetchall()
        seals = target.execute("SELECT entry_id, mac FROM ledger_seal ORDER BY 1").fetchall()
    last = copied[-1][0]
    assert copied == rows_on_disk(
        source, f"{ENTRY} ledger_entry WHERE id <= ? ORDER BY id", (last,)
    )
    assert seals == rows_on_disk(source, "SELECT entry_id, mac FROM ledger_seal WHERE entry_id <= ?"
                                 " ORDER BY 1", (last,))  # fmt: skip
    assert len(copied) > 50 and books(made.owner_url)  # each balance re-added from its ledger
    print(f"\ncopied {len(copied):,} ledger entries of a file still selling ({len(sold)} sales)")
    again = copy(source, made.owner_url)
    assert again.returncode == 2 and "already holds sellers" in again.stderr


def test_copying_needs_a_postgresql_target_and_an_existing_file(tmp_path):
    wrong = copy(tmp_path / "none.db", "postgresql://x:y@127.0.0.1:1/z")
    assert wrong.returncode == 2 and "--from" in wrong.stderr and "y@" not in wrong.stderr
    Chargebox(prepare(Config(db_path=tmp_path / "here.db"))).close()
    closed = copy(tmp_path / "here.db", "postgresql://x:y@127.0.0.1:1/z")
    said = closed.stderr.strip()
    assert closed.returncode == 2 and said.startswith("chargebox: --to postgresql://x:***@"), said
    assert "cannot connect" in said and "\n" not in said
    not_pg = copy(tmp_path / "none.db", str(tmp_path / "other.db"))
    assert not_pg.returncode == 2 and "postgresql://" in not_pg.stderr
    other_scheme = copy(tmp_path / "here.db", "postgres+psycopg://x:TOPSECRET@127.0.0.1:1/z")
    assert other_scheme.returncode == 2 and "TOPSECRET" not in other_scheme.stderr
    # helper-114: a file that is no database was blamed on `--db data/chargebox.db`; a `?`
    # or `#` in the path was read as the URI's query, and another file made
    (tmp_path / "notes.db").write_text("x" * 5000)
    odd = tmp_path / "we?ird#dir" / "chargebox.db"
    odd.parent.mkdir()
    Chargebox(prepare(Config(db_path=odd))).close()
    (odd.parent / "ledger_key").write_text((tmp_path / "ledger_key").read_text())
    for source, said in ((tmp_path / "notes.db", "file is not a database"),
                         (odd, "cannot connect")):  # fmt: skip
        refused = copy(source, "postgresql://x:y@127.0.0.1:1/z")
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert "--db" not in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("we")) == ["we?ird#dir"]


def test_a_copy_into_a_database_without_the_schema_names_it_in_one_line(
    postgresql_cluster, tmp_path
):
    """No init-db yet: one line naming --to (the SQLite --db default it named before), its
    password hidden, and the hint to run init-db; nothing is written."""
    made = pg_cluster.new_database(postgresql_cluster, "noschema")
    source = tmp_path / "sqlite" / "chargebox.db"
    source.parent.mkdir()
    Chargebox(prepare(Config(db_path=source))).close()
    moved = copy(source, made.owner_url, "--data-dir", str(tmp_path / "pg"))
    said = moved.stderr.strip()
    assert moved.returncode == 2 and said.count("\n") == 0 and "Traceback" not in said, said
    assert said.startswith("chargebox: --to postgresql://") and "init-db" in said, said
    assert "-secret" not in said and not any((tmp_path / "pg").iterdir())  # no secret moved


def test_a_ledger_the_targets_triggers_refuse_fails_the_whole_copy(
    postgresql_cluster, tmp_path, monkeypatch, capsys
):
    """The entries go CHUNK at a time (2 here, so the copy makes several statements of
    them): a file whose ledger was rewritten by hand (an entry's balance_after one more
    than its chain allows, the file's own guard dropped first) is refused by
    PostgreSQL's chain trigger (I3) in its chunk; the copy's one transaction leaves the
    target as init-db made it, and the command says why."""
    source = tmp_path / "sqlite" / "chargebox.db"
    source.parent.mkdir()
    service = Chargebox(prepare(Config(db_path=source, admin_token=ADMIN_TOKEN)))
    seller = credited_seller(service, 10_000)["id"]
    for n in range(6):
        service.sell(seller, f"091200000{n:02d}", 100)
    service.close()
    with writable(source) as conn:
        drop_trigger(conn, "ledger_entry_no_update")
        conn.execute("UPDATE ledger_entry SET balance_after = balance_after + 1 WHERE id = 5")
    made = pg_cluster.new_database(postgresql_cluster, "copy")
    assert chargebox_main(["init-db", "--db", made.owner_url, "--data-dir", str(tmp_path)]) == 0
    monkeypatch.setattr(moving, "CHUNK", 2)
    capsys.readouterr()
    code = chargebox_main(["copy", "--from", str(source), "--to", made.owner_url,
                           "--data-dir", str(tmp_path / "pg")])  # fmt: skip
    said = capsys.readouterr().err
    assert code != 0 and "I3" in said and "Traceback" not in said, said
    with psycopg.connect(made.owner_url) as target:
        left = [target.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("seller", "sale", "ledger_entry", "ledger_seal")]  # fmt: skip
    assert left == [0, 0, 0, 0]


def test_a_copy_keeps_each_sellers_status_and_its_count_of_changes(postgresql_cluster, tmp_path):
    """Sellers suspended, suspended and reactivated, never changed, and one suspended by a
    release before schema version 11 (uncounted): each is copied with its status and its
    count (that one counted once: the target's guard counts each change), sales and credit
    requests made while active copied too, and the target audits clean."""
    made = pg_cluster.new_database(postgresql_cluster, "statuses")
    assert chargebox_main(["init-db", "--db", made.owner_url, "--data-dir", str(tmp_path)]) == 0
    source = tmp_path / "sqlite" / "chargebox.db"
    service = Chargebox(prepare(Config(db_path=source)))
    try:
        sellers = [credited_seller(service, 10_000, f"shop {n}")["id"] for n in range(4)]
        for seller in sellers:
            service.sell(seller, "09121234567", 1_000)
        service.set_status(sellers[0], "suspended")
        service.set_status(sellers[1], "suspended")
        service.set_status(sellers[1], "active")
    finally:
        service.close()
    with writable(source) as conn:  # as a release before version 11 suspended: uncounted
        drop_trigger(conn, "seller_status_is_counted")
        conn.execute("UPDATE seller SET status = 'suspended' WHERE id = ?", (sellers[3],))
        conn.execute(next(t for t in schema.TRIGGERS if "seller_status_is_counted" in t))
    moved = copy(source, made.owner_url, "--data-dir", str(tmp_path / "pg"))
    assert moved.returncode == 0, moved.stderr
    assert "audit: books reconcile" in moved.stderr
    statuses = "SELECT id, status, status_changes FROM seller ORDER BY id"
    with psycopg.connect(made.owner_url) as target:
        copied = target.execute(statuses).fetchall()
    assert copied == [(sellers[0], "suspended", 1), (sellers[1], "active", 2),
                      (sellers[2], "active", 0), (sellers[3], "suspended", 1)]  # fmt: skip
    assert rows_on_disk(source, statuses)[3] == (sellers[3], "suspended", 0)


def test_a_copy_makes_each_block_of_sales_once_from_all_its_sales(postgresql_cluster, tmp_path):
    """The sales go in one COPY, so the trigger on sale (schema version 7) makes each block's
    span once, from all its sales: 3,000 sales are three blocks, three rows, their spans the
    sales', in one page. (A statement a sale left a dead version of its block's row per sale
    in the copy's one transaction: some 30 pages here, 101 MB for 1,000,000 sales.)"""
    made = pg_cluster.new_database(postgresql_cluster, "blocks")
    assert chargebox_main(["init-db", "--db", made.owner_url, "--data-dir", str(tmp_path)]) == 0
    source = tmp_path / "sqlite" / "chargebox.db"
    service = Chargebox(prepare(Config(db_path=source)))
    try:
        seller = credited_seller(service, 10**9)["id"]
        stamps = [
            f"2026-12-01T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z" for n in range(3000)
        ]
        service.database.write(
            lambda write: [ledger.sell(write, seller, "09121234567", 1, at) for at in stamps]
        )
    finally:
        service.close()
    moved = copy(source, made.owner_url, "--data-dir", str(tmp_path / "pg"))
    assert moved.returncode == 0, moved.stderr
    spans = "SELECT id >> 10, min(created_at), max(created_at) FROM sale GROUP BY 1 ORDER BY 1"
    with psycopg.connect(made.owner_url) as target:
        blocks = target.execute("SELECT block, first_stamp, last_stamp FROM sale_block"
                                " ORDER BY block").fetchall()  # fmt: skip
        assert blocks == target.execute(spans).fetchall() and len(blocks) == 3
        assert target.execute("SELECT pg_relation_size('sale_block')").fetchone()[0] == 8192


def test_the_files_ledger_key_and_admin_token_move_into_the_deployments_data_dir(
    postgresql_cluster, tmp_path
):
    """init-db made a ledger key and an admin token in the PostgreSQL deployment's data
    dir. The copy puts the file's own there, owner-only: its key sealed every row copied
    (a server given init-db's refused to start: another key), and its admin token, rotated
    here, is the one in force (the rotation is copied with the rows). A server on that
    data dir then starts, sells, seals with the same key, and the admin is the file's."""
    made = pg_cluster.new_database(postgresql_cluster, "secrets")
    data = tmp_path / "pg"
    init = ["init-db", "--db", made.owner_url, "--grant-to", made.app_role, "--data-dir"]
    assert chargebox_main([*init, str(data)]) == 0
    made_by_init = (data / "ledger_key").read_text()
    source = tmp_path / "sqlite" / "chargebox.db"
    source.parent.mkdir()
    service = Chargebox(prepare(Config(db_path=source)))
    try:
        seller = credited_seller(service, 10_000)["id"]
        service.sell(seller, "09120000001", 100)
        rotated = auth.new_admin_token()
        auth.rotate_admin(service.database, rotated)
    finally:
        service.close()
    auth.replace_secret(source.parent / "admin_token", rotated)  # as rotate-admin-token does
    key = (source.parent / "ledger_key").read_text()
    assert key != made_by_init
    (source.parent / "ledger_key").rename(tmp_path / "aside")
    keyless = copy(source, made.owner_url, "--data-dir", str(data))
    assert keyless.returncode == 2 and "ledger key" in keyless.stderr, keyless.stderr
    assert (data / "ledger_key").read_text() == made_by_init  # refused before any write
    (tmp_path / "aside").rename(source.parent / "ledger_key")
    moved = copy(source, made.owner_url, "--data-dir", str(data))
    assert moved.returncode == 0, moved.stderr
    assert "audit: books reconcile" in moved.stderr and "now holds" in moved.stderr
    for name, secret in (("ledger_key", key.strip()), ("admin_token", rotated)):
        assert (data / name).read_text().strip() == secret
        assert (data / name).stat().st_mode & 0o777 == 0o600
    served = Chargebox(prepare(Config(db_url=made.app_url, data_dir=data)))
    try:
        assert served.config.admin_token == rotated
        assert auth.current_admin(served.database) == auth.hash_key(rotated)
        served.sell(seller, "09120000002", 100)
        assert served.audit(full=True)["consistent"]
    finally:
        served.close()


def test_a_copy_never_writes_over_a_used_deployments_secrets_nor_copies_with_a_wrong_key(
    postgresql_cluster, tmp_path
):
    """helper-113: `copy --data-dir` of another, live deployment wrote the file's ledger
    key and admin token over that deployment's (its only key gone, its servers refused);
    a wrong or empty key, or a file of an older schema, was found only after the rows
    were in (and a second copy then refused: the target held sellers). Each is refused
    before anything moves now, the target left empty; a secret replaced is kept aside."""
    live, target = (pg_cluster.new_database(postgresql_cluster, name) for name in ("a", "b"))
    used, fresh = tmp_path / "a", tmp_path / "b"
    for made, data in ((live, used), (target, fresh)):
        init = ["init-db", "--db", made.owner_url, "--grant-to", made.app_role, "--data-dir"]
        assert chargebox_main([*init, str(data)]) == 0
    serving = Chargebox(prepare(Config(db_url=live.app_url, data_dir=used)))
    try:
        serving.sell(credited_seller(serving, 1_000)["id"], "09120000001", 100)
        assert serving.audit()["consistent"]  # and anchored in its data dir
    finally:
        serving.close()
    its_key = (used / "ledger_key").read_text()
    source = tmp_path / "sqlite" / "chargebox.db"
    source.parent.mkdir()
    service = Chargebox(prepare(Config(db_path=source)))
    service.sell(credited_seller(service, 1_000)["id"], "09120000002", 100)
    service.close()
    key_file = source.parent / "ledger_key"
    key = key_file.read_text()
    refusals = [
        (copy(source, target.owner_url, "--data-dir", str(used)), "anchors show that key"),
        (
            copy(source, target.owner_url, "--data-dir", str(fresh), CHARGEBOX_LEDGER_KEY="w" * 40),
            "is not the key that sealed",
        ),  # fmt: skip
    ]
    key_file.write_text("\n")
    refusals.append((copy(source, target.owner_url, "--data-dir", str(fresh)), str(key_file)))
    key_file.write_text(key)
    older = tmp_path / "older" / "chargebox.db"
    older.parent.mkdir()
    for name in ("chargebox.db", "ledger_key"):
        (older.parent / name).write_bytes(
            (ROOT / "tests/fixtures/release-0.2.0" / name).read_bytes()
        )
    refusals.append((copy(older, target.owner_url, "--data-dir", str(fresh)), "migrate --db"))
    for refused, said in refusals:
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert (used / "ledger_key").read_text() == its_key
    with psycopg.connect(target.owner_url) as conn:
        assert conn.execute("SELECT count(*) FROM seller").fetchone() == (0,)
    by_init = (fresh / "ledger_key").read_text()
    moved = copy(source, target.owner_url, "--data-dir", str(fresh))
    assert moved.returncode == 0, moved.stderr
    (aside,) = fresh.glob("ledger_key.before-copy-*")
    assert aside.read_text().strip() == by_init.strip() and aside.stat().st_mode & 0o777 == 0o600
    assert (fresh / "ledger_key").read_text().strip() == key.strip()
    # A rehearsal's data dir used again for the cut-over, the admin token rotated since:
    # the same ledger key, so nothing is refused; the old token is kept aside.
    again = pg_cluster.new_database(postgresql_cluster, "c")
    init = ["init-db", "--db", again.owner_url, "--grant-to", again.app_role, "--data-dir"]
    assert chargebox_main([*init, str(fresh)]) == 0 and (fresh / "anchors").exists()
    token = auth.new_admin_token()
    (source.parent / "admin_token").write_text(token)
    before = (fresh / "admin_token").read_text().strip()
    cut_over = copy(source, again.owner_url, "--data-dir", str(fresh))
    assert cut_over.returncode == 0, cut_over.stderr
    (kept,) = fresh.glob("admin_token.before-copy-*")
    assert (
        kept.read_text().strip() == before and (fresh / "admin_token").read_text().strip() == token
    )


def test_a_copy_is_refused_before_it_writes_while_servers_run_on_the_target_or_its_dir_is_bad(
    postgresql_cluster, tmp_path
):
    """A server started on the target after init-db holds init-db's key: after a copy it
    would seal the new sales with it beside the file's seals. And a --data-dir that cannot
    take the secrets was found only after the rows were committed (a trace, and a copy
    that could not be run again). Both are refused first, in one line; the target stays
    empty."""
    made = pg_cluster.new_database(postgresql_cluster, "busy")
    data = tmp_path / "pg"
    init = ["init-db", "--db", made.owner_url, "--grant-to", made.app_role, "--data-dir"]
    assert chargebox_main([*init, str(data)]) == 0
    source = tmp_path / "sqlite" / "chargebox.db"
    source.parent.mkdir()
    service = Chargebox(prepare(Config(db_path=source)))
    credited_seller(service, 1_000)
    service.close()
    token = (data / "admin_token").read_text().strip()
    with running_server(made.app_url, data_dir=data, admin_token=token):
        deadline = time.monotonic() + 30
        while not sessions_named(made.owner_url, migrations.SERVING_NAME):  # bounded poll
            assert time.monotonic() < deadline, "the server's session did not show"
            time.sleep(0.05)
        busy = copy(source, made.owner_url, "--data-dir", str(data))
    (tmp_path / "a-file").write_text("")
    bad_dir = copy(source, made.owner_url, "--data-dir", str(tmp_path / "a-file" / "pg"))
    for refused, said in ((busy, "chargebox servers run on it"), (bad_dir, "--data-dir")):
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    with psycopg.connect(made.owner_url) as target:
        assert target.execute("SELECT count(*) FROM seller").fetchone() == (0,)
    assert not list(data.glob("*.before-copy-*"))  # kept aside only for a copy that runs


def test_a_copy_is_refused_before_it_writes_when_the_data_dirs_anchors_are_another_deployments(
    postgresql_cluster, tmp_path
):
    """A copy of the file that then sold on (a rehearsal kept serving, or the live
    deployment's own data dir named by mistake) has anchored heads the file lacks, with
    the file's own key: the copy went in, then failed its audit ("rolled back"), and a
    second copy was refused, the target holding sellers (helper-139). Refused first now,
    the target left empty and the data dir as it was."""
    source = tmp_path / "sqlite" / "chargebox.db"
    source.parent.mkdir()
    service = Chargebox(prepare(Config(db_path=source)))
    seller = credited_seller(service, 10_000)
    service.sell(seller["id"], "09120000003", 100)
    service.close()
    first, second = (pg_cluster.new_database(postgresql_cluster, n) for n in ("first", "again"))
    data = tmp_path / "pg"
    for made in (first, second):
        init = ["init-db", "--db", made.owner_url, "--grant-to", made.app_role, "--data-dir"]
        assert chargebox_main([*init, str(data)]) == 0
    assert copy(source, first.owner_url, "--data-dir", str(data)).returncode == 0
    serving = Chargebox(prepare(Config(db_url=first.app_url, data_dir=data)))
    try:
        serving.sell(seller["id"], "09120000004", 100)
        assert serving.audit()["consistent"]  # its newer head anchored in the data dir
    finally:
        serving.close()
    held = sorted((p.name, p.read_bytes()) for p in data.iterdir())
    refused = copy(source, second.owner_url, "--data-dir", str(data))
    assert refused.returncode == 2 and "its anchors" in refused.stderr, refused.stderr
    assert "rolled back" in refused.stderr and "nothing copied" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    with psycopg.connect(second.owner_url) as conn:
        assert conn.execute("SELECT count(*) FROM seller").fetchone() == (0,)
    assert sorted((p.name, p.read_bytes()) for p in data.iterdir()) == held


def sessions_named(url: str, name: str) -> int:
    """Sessions of that name on this database (other tests' servers run on others)."""
    with psycopg.connect(url) as conn:
        query = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                 " AND datname = current_database()")  # fmt: skip
        return conn.execute(query, (name,)).fetchone()[0]

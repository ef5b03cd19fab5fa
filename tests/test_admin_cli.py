"""The CLI's admin commands, against two running server processes on one database.

`chargebox rotate-admin-token` makes a new token the only admin token on every
server at once: the servers keep running, the old token is refused by both from
the next request on, and the admin's web sessions opened with it end. With
CHARGEBOX_ADMIN_TOKEN set it makes that token the one in force. The key and
suspension commands do what the API does, and print a new key once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support import ADMIN_TOKEN, ROOT, Api, new_seller, running_server
from tests.web_support import Browser

NEW_TOKEN = "a-new-admin-token-from-the-environment-0123"


def chargebox(db, data, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "CHARGEBOX_ADMIN_TOKEN"}
    if token is not None:
        env["CHARGEBOX_ADMIN_TOKEN"] = token
    where = ["--db", str(db), *(["--data-dir", str(data)] if data else [])]
    return subprocess.run(
        [sys.executable, "-m", "chargebox.cli", *args, *where],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def is_admin(server, token: str) -> int:
    api = Api(server.url, token)
    status = api.get("/api/sellers").status_code
    api.close()
    return status


def test_rotating_the_admin_token_is_in_force_on_every_running_server_at_once(
    tmp_path, new_database
):
    db, data = new_database(tmp_path)
    with running_server(db, data_dir=data) as one, running_server(db, data_dir=data) as other:
        assert is_admin(one, ADMIN_TOKEN) == is_admin(other, ADMIN_TOKEN) == 200
        browser = Browser(other.url)
        assert browser.sign_in(ADMIN_TOKEN).status_code == 303
        assert browser.get("/admin").status_code == 200
        rotated = chargebox(db, data, "rotate-admin-token")
        assert rotated.returncode == 0, rotated.stderr
        token = rotated.stdout.strip()
        assert len(token) >= 32 and token not in rotated.stderr
        assert is_admin(one, ADMIN_TOKEN) == is_admin(other, ADMIN_TOKEN) == 401
        assert is_admin(one, token) == is_admin(other, token) == 200
        assert browser.get("/admin").status_code == 303  # the old token's session ended
        secrets = data if data else db.parent
        stored = secrets / "admin_token"
        assert stored.read_text().strip() == token
        assert stored.stat().st_mode & 0o777 == 0o600
        # A token chosen in the environment is made the one in force.
        chosen = chargebox(db, data, "rotate-admin-token", token=NEW_TOKEN)
        assert chosen.returncode == 0, chosen.stderr
        assert NEW_TOKEN not in chosen.stdout + chosen.stderr
        assert is_admin(one, token) == is_admin(other, token) == 401
        assert is_admin(one, NEW_TOKEN) == is_admin(other, NEW_TOKEN) == 200
    # A server started with a token rotated away says so, and only the current one works.
    with running_server(db, data_dir=data) as stale:
        assert is_admin(stale, ADMIN_TOKEN) == 401
        assert is_admin(stale, NEW_TOKEN) == 200
        assert "is not the one in force" in stale.log_path.read_text()


def test_the_key_and_suspension_commands_do_what_the_api_does(tmp_path, new_database):
    db, data = new_database(tmp_path)
    with running_server(db, data_dir=data) as server:
        admin = server.admin()
        seller, key = new_seller(admin, "Ali", 10_000)
        ident = str(seller["id"])
        made = chargebox(db, data, "create-key", ident, "kiosk", token=ADMIN_TOKEN)
        assert made.returncode == 0, made.stderr
        created = json.loads(made.stdout)
        assert created["label"] == "kiosk" and created["api_key"].startswith("cbk_")
        assert "shown only once" in made.stderr
        kiosk = server.seller(created["api_key"])
        assert kiosk.get("/api/me").status_code == 200
        listed = chargebox(db, data, "keys", ident, token=ADMIN_TOKEN)
        labels = [json.loads(line)["label"] for line in listed.stdout.splitlines()]
        assert labels == ["default", "kiosk"] and "cbk_" not in listed.stdout
        revoked = chargebox(db, data, "revoke-key", ident, str(created["id"]), token=ADMIN_TOKEN)
        assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked_at"]
        assert kiosk.get("/api/me").status_code == 401
        again = chargebox(db, data, "revoke-key", ident, str(created["id"]), token=ADMIN_TOKEN)
        assert again.returncode == 2 and "already revoked" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
        own = server.seller(key)
        suspended = chargebox(db, data, "suspend", ident, token=ADMIN_TOKEN)
        assert json.loads(suspended.stdout)["status"] == "suspended"
        assert own.get("/api/me").json()["error"]["code"] == "seller_suspended"
        chargebox(db, data, "reactivate", ident, token=ADMIN_TOKEN)
        assert own.get("/api/me").status_code == 200
        rotated = chargebox(db, data, "rotate-key", ident, "1", token=ADMIN_TOKEN)
        assert rotated.returncode == 0, rotated.stderr
        assert own.get("/api/me").status_code == 401
        assert server.seller(json.loads(rotated.stdout)["api_key"]).get("/api/me").ok
        missing = chargebox(db, data, "suspend", "999999", token=ADMIN_TOKEN)
        assert missing.returncode == 2 and "does not exist" in missing.stderr
        for api in (admin, kiosk, own):
            api.close()


def test_refund_on_the_shell_is_the_apis_refund(tmp_path, new_database):
    """`chargebox refund SALE --reason` gives the sale back once, as the API's refund: the
    entry printed, the balance back, a second refund 409's one line, a key's copy the same
    entry; a sale that does not exist or an empty reason is one line and changes nothing."""
    db, data = new_database(tmp_path)
    with running_server(db, data_dir=data) as server:
        admin = server.admin()
        seller, key = new_seller(admin, "Reza", 10_000)
        own = server.seller(key)
        sales = [own.post("/api/sales", {"phone": "09121234567", "amount": amount}).json()
                 for amount in (2_500, 1_000)]  # fmt: skip
        refunded = chargebox(db, data, "refund", str(sales[0]["id"]), "--reason", "wrong number",
                             token=ADMIN_TOKEN)  # fmt: skip
        assert refunded.returncode == 0, refunded.stderr
        entry = json.loads(refunded.stdout)
        assert (entry["kind"], entry["amount"], entry["refund_of"]) == ("refund", 2_500,
                                                                       sales[0]["id"])  # fmt: skip
        assert entry["reason"] == "wrong number" and entry["balance_after"] == 10_000 - 1_000
        assert own.get("/api/me").json()["balance"] == 9_000
        again = chargebox(db, data, "refund", str(sales[0]["id"]), "--reason", "again",
                          token=ADMIN_TOKEN)  # fmt: skip
        assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
        assert "was refunded already" in again.stderr, again.stderr
        keyed = [chargebox(db, data, "refund", str(sales[1]["id"]), "--reason", "twice sent",
                           "--idempotency-key", "shell-1", token=ADMIN_TOKEN)
                 for _ in range(2)]  # fmt: skip
        assert [run.returncode for run in keyed] == [0, 0]
        assert keyed[0].stdout == keyed[1].stdout
        third = own.post("/api/sales", {"phone": "09121234567", "amount": 500}).json()["id"]
        for wrong, said in ((["999999", "--reason", "no such sale"], "999999"),
                            ([str(third), "--reason", " "], "reason")):  # fmt: skip
            refused = chargebox(db, data, "refund", *wrong, token=ADMIN_TOKEN)
            assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
            assert said in refused.stderr, refused.stderr
        too_big = chargebox(db, data, "refund", str(2**63), "--reason", "x", token=ADMIN_TOKEN)
        assert too_big.returncode == 2 and "Traceback" not in too_big.stderr, too_big.stderr
        assert "from 1 to 9223372036854775807" in too_big.stderr
        assert own.get("/api/me").json()["balance"] == 10_000 - 500
        entries = own.get("/api/ledger").json()["items"]
        assert [e["kind"] for e in entries].count("refund") == 2, entries
        audit = admin.get("/api/audit").json()
        assert audit["consistent"], audit
        for api in (admin, own):
            api.close()


def test_a_command_beside_a_server_whose_token_is_set_makes_no_admin_token(tmp_path, new_database):
    """The servers take their admin token from CHARGEBOX_ADMIN_TOKEN; a command run without
    it (a refund from a shell) used to make an admin_token file no running server accepts,
    which a later start without the variable would silently take (helper-80). Only a
    server and init-db make one; the command still acts."""
    db, data = new_database(tmp_path)
    token_file = (data or tmp_path) / "admin_token"
    before = token_file.read_text() if token_file.exists() else None
    with running_server(db, data_dir=data) as server:
        seller, key = new_seller(server.admin(), "Sara", 10_000)
        sale = server.seller(key).post("/api/sales", {"phone": "09121234567", "amount": 700})
        refunded = chargebox(db, data, "refund", str(sale.json()["id"]), "--reason", "shell")
        assert refunded.returncode == 0, refunded.stderr
        assert "admin token" not in refunded.stderr, refunded.stderr
        assert (token_file.read_text() if token_file.exists() else None) == before
        assert is_admin(server, ADMIN_TOKEN) == 200


def test_a_start_says_where_the_admin_token_is_only_when_that_token_is_in_force(tmp_path):
    """A server reading its admin token from the data dir says where it is; when that file's
    token was rotated away (here: a token chosen in the environment made the one in force),
    it warns instead, and does not point the admin at a token that no longer works. The
    start's preparation runs in a process of its own (it holds the file as served)."""
    db = tmp_path / "c.db"
    start = ("import sys; from pathlib import Path; from chargebox.cli import prepare;"
             " from chargebox.config import Config; prepare(Config(db_path=Path(sys.argv[1])),"
             " serving=True)")  # fmt: skip
    env = {name: value for name, value in os.environ.items() if name != "CHARGEBOX_ADMIN_TOKEN"}

    def started() -> str:
        run = subprocess.run([sys.executable, "-c", start, str(db)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stderr

    assert chargebox(db, None, "init-db").returncode == 0
    said = started()  # no CHARGEBOX_ADMIN_TOKEN: the file beside the database
    assert f"admin token is in {tmp_path / 'admin_token'}" in said and "warning" not in said
    assert chargebox(db, None, "rotate-admin-token", token=NEW_TOKEN).returncode == 0
    said = started()
    assert "is not the one in force" in said and "admin token is in" not in said


def test_keys_and_statement_read_a_copy_as_it_lies_and_make_nothing_beside_it(tmp_path):
    """A file moved aside in a restore (README, Restore step 5), with no ledger key beside
    it: `keys` and `statement` read it and make no ledger key, admin token or anchors
    there (they went through the start-up's preparation, which made a ledger key beside a
    copy that held no seal), and read one a server marked damaged, saying so. A command
    that writes still makes its key (the control)."""
    db = tmp_path / "live" / "c.db"
    db.parent.mkdir()
    assert chargebox(db, None, "init-db").returncode == 0
    made = chargebox(db, None, "create-seller", "shop")
    assert made.returncode == 0, made.stderr
    aside = tmp_path / "aside"
    aside.mkdir()
    copy = aside / "c.db"
    copy.write_bytes(db.read_bytes())
    listed = chargebox(copy, None, "keys", "1")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["label"] == "default"
    stated = chargebox(copy, None, "statement", "--seller", "1", "--month", "2026-01")
    assert stated.returncode == 0, stated.stderr
    assert json.loads(stated.stdout)["seller_id"] == 1
    assert sorted(p.name for p in aside.iterdir()) == ["c.db"]
    file = copy.stat()  # a server's damage mark naming the copy (helper-129): read, and said
    said = "2026-12-07T00:00:00Z SQLite: database disk image is malformed"
    copy.with_name("c.db.damaged").write_text(f"{said}\nfile {file.st_dev}:{file.st_ino}\n")
    warned = chargebox(copy, None, "keys", "1")
    assert warned.returncode == 0 and json.loads(warned.stdout)["id"] == 1, warned.stderr
    assert f"warning: --db {copy}: a server found it damaged ({said})" in warned.stderr
    copy.with_name("c.db.damaged").unlink()
    assert chargebox(copy, None, "suspend", "1").returncode == 0
    assert "ledger_key" in [p.name for p in aside.iterdir()]

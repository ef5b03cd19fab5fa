"""The command line as an operator meets it: run.py, `chargebox` subcommands, audit, signals."""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
import requests

from chargebox import cli
from chargebox.commands import row_id
from chargebox.config import whole_number
from tests.support import (
    ROOT,
    ServerProcess,
    cli_audit,
    cli_audit_of,
    database_of,
    drop_trigger,
    new_seller,
    reconciled_balances,
    rows_on_disk,
    writable,
)

TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"


def chargebox(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chargebox.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def funded_database(service) -> None:
    seller, _ = service.create_seller("Ali")
    request = service.request_credit(seller["id"], 100_000).record
    service.approve_credit_request(request["id"])
    service.sell(seller["id"], "09121234567", 5_000)
    service.sell(seller["id"], "09121234567", 7_000)


def tamper(db, *statements: str) -> None:
    """Edit the database behind the application's back, as someone holding it could."""
    with writable(db) as conn:
        for statement in statements:
            if statement.startswith("DROP TRIGGER "):
                drop_trigger(conn, statement.removeprefix("DROP TRIGGER "))
            else:
                conn.execute(statement)


def test_create_seller_prints_a_working_key_once_and_audit_passes(tmp_path):
    db_path = tmp_path / "cb.db"
    assert chargebox("init-db", "--db", str(db_path)).returncode == 0
    created = chargebox("create-seller", "Sara", "--db", str(db_path))
    assert created.returncode == 0, created.stderr
    assert '"api_key": "cbk_' in created.stdout
    key = created.stdout.split('"api_key": "')[1].split('"')[0]
    stored = rows_on_disk(db_path, "SELECT * FROM seller_key")
    assert key not in repr(stored)
    assert cli_audit(db_path).returncode == 0


def test_audit_of_a_missing_file_exits_2_without_creating_it(tmp_path):
    result = cli_audit(tmp_path / "absent.db")
    assert result.returncode == 2
    assert "no database" in result.stderr
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize("command", [("audit", "--json"), ("create-seller", "Nima"),
                                     ("statement", "--seller", "1", "--month", "2026-12",
                                      "--csv")])  # fmt: skip
def test_a_reader_that_leaves_early_ends_a_command_quietly_with_1(tmp_path, command):
    """`chargebox audit --json | head`: the pipe is closed; no trace, and status 1."""
    db_path = tmp_path / "cb.db"
    assert chargebox("init-db", "--db", str(db_path)).returncode == 0
    assert chargebox("create-seller", "Sara", "--db", str(db_path)).returncode == 0
    read, write = os.pipe()
    os.close(read)  # the reader left before a byte was written
    try:
        ended = subprocess.run(
            [sys.executable, "-m", "chargebox.cli", *command, "--db", str(db_path)],
            cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)
    assert ended.returncode == 1
    assert "Traceback" not in ended.stderr and "BrokenPipe" not in ended.stderr, ended.stderr
    assert "Broken pipe" not in ended.stderr, ended.stderr


def test_audit_names_the_seller_and_entry_of_a_forged_ledger_row(service, config):
    funded_database(service)
    assert cli_audit_of(config).returncode == 0
    tamper(
        database_of(config),
        "DROP TRIGGER ledger_entry_no_update",
        "UPDATE ledger_entry SET amount = -4000 WHERE kind = 'sale' AND amount = -5000",
    )

    result = cli_audit_of(config)

    assert result.returncode == 1
    assert "I2: seller 1" in result.stderr
    assert "I3: seller 1, entry 2" in result.stderr
    assert "I5" in result.stderr and "ledger_entry_no_update is missing" in result.stderr


def test_audit_catches_a_sale_deleted_with_its_entry_and_a_balance_bumped(service, config):
    funded_database(service)
    tamper(
        database_of(config),
        "DROP TRIGGER ledger_entry_no_delete",
        "DROP TRIGGER sale_no_delete",
        "DROP TRIGGER ledger_seal_no_delete",
        "DELETE FROM ledger_seal WHERE entry_id IN (SELECT id FROM ledger_entry WHERE sale_id = 2)",
        "DELETE FROM ledger_entry WHERE sale_id = 2",
        "UPDATE seller SET balance = balance + 7000",
    )

    result = cli_audit_of(config)

    assert result.returncode == 1
    assert "sale 2 of 7000 has 0 matching debit entries" in result.stderr


def test_admin_token_is_generated_once_owner_only_and_never_printed(tmp_path):
    db_path = tmp_path / "cb.db"
    env = {"CHARGEBOX_ADMIN_TOKEN": ""}
    first = chargebox("init-db", "--db", str(db_path), env=env)
    token_file = tmp_path / "admin_token"
    token = token_file.read_text().strip()
    second = chargebox("init-db", "--db", str(db_path), env=env)

    assert first.returncode == second.returncode == 0
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token) >= 32 and token_file.read_text().strip() == token
    assert token not in first.stdout + first.stderr + second.stdout + second.stderr
    assert str(token_file) in first.stderr


def test_schema_creation_is_safe_when_six_processes_start_at_once(tmp_path):
    db_path = tmp_path / "cb.db"
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(
            pool.map(
                lambda _: chargebox(
                    "init-db", "--db", str(db_path), env={"CHARGEBOX_ADMIN_TOKEN": ""}
                ),
                range(6),
            )
        )
    assert [r.returncode for r in results] == [0] * 6, [r.stderr for r in results]
    tables = {name for (name,) in rows_on_disk(db_path, TABLES)}
    assert {"seller", "ledger_entry", "sale", "credit_request"} <= tables
    assert len({(tmp_path / "admin_token").read_text()}) == 1
    assert cli_audit(db_path).returncode == 0


def test_sigterm_and_ctrl_c_stop_the_server_with_status_0_within_10_seconds(tmp_path):
    for sig in (signal.SIGTERM, signal.SIGINT):
        server = ServerProcess(tmp_path / f"cb-{sig}.db").start()
        started = time.monotonic()
        assert server.stop(sig) == 0
        assert time.monotonic() - started < 10


def test_sigterm_under_load_finishes_requests_in_flight_and_loses_no_answer(tmp_path):
    """Sellers sell while SIGTERM arrives: no 5xx, exit 0, every 201 seen is a sale row."""
    server = ServerProcess(tmp_path / "cb.db").start()
    seller, key = new_seller(server.admin(), "load", credit=10_000_000)
    acknowledged, failures = [], []
    started = threading.Barrier(9)

    def sell_until_refused():
        api = server.seller(key)
        started.wait()
        for _ in range(2_000):
            try:
                response = api.post("/api/sales", {"phone": "09121234567", "amount": 1_000})
            except requests.ConnectionError:
                return  # the server has stopped accepting: expected
            if response.status_code >= 500:
                failures.append(response.text)
            elif response.status_code == 201:
                acknowledged.append(response.json()["id"])

    workers = [threading.Thread(target=sell_until_refused) for _ in range(8)]
    for worker in workers:
        worker.start()
    started.wait()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)  # wait until the load is running, not for an outcome
    assert len(acknowledged) >= 50, "the load never ran: SIGTERM would stop an idle server"
    assert server.stop(signal.SIGTERM) == 0
    for worker in workers:
        worker.join(30)

    assert failures == []
    rows = rows_on_disk(tmp_path / "cb.db", "SELECT id FROM sale")
    assert sorted(acknowledged) == sorted(row[0] for row in rows)
    assert reconciled_balances(tmp_path / "cb.db")[seller["id"]] == 10_000_000 - 1_000 * len(rows)


def test_every_acknowledged_sale_survives_kill_9_of_the_server(tmp_path):
    """synchronous=NORMAL in WAL: a 201 means committed, even if the process dies right after."""
    server = ServerProcess(tmp_path / "cb.db").start()
    seller, key = new_seller(server.admin(), "durable", credit=1_000_000)
    api = server.seller(key)
    acknowledged = [
        api.post("/api/sales", {"phone": "09121234567", "amount": 1_000}).json()["id"]
        for _ in range(100)
    ]
    server.stop(signal.SIGKILL)

    rows = rows_on_disk(tmp_path / "cb.db", "SELECT id FROM sale")
    assert sorted(row[0] for row in rows) == acknowledged
    assert reconciled_balances(tmp_path / "cb.db")[seller["id"]] == 1_000_000 - 100_000
    assert cli_audit(tmp_path / "cb.db").returncode == 0


def test_a_multi_process_server_stops_cleanly_on_sigterm(tmp_path):
    server = ServerProcess(tmp_path / "cb.db", env={"CHARGEBOX_PROCESSES": "3"}).start()
    assert "3 processes x" in server.announced
    new_seller(server.admin(), "x", credit=1_000)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0, server.log_path.read_text()[-3000:]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "text", ["0", "10001", "+5", " 5", "5 ", "1_0", "\u0665", "\u06f5", "5.0", ""]
)
def test_a_count_or_an_id_argument_is_ascii_digits_in_range(text):
    """`--keep N` and a row id: ASCII digits from 1 to the top; int() alone took a sign,
    spaces, `1_0` and other scripts' digits (an id's parser did, and the --keep one took
    Arabic-Indic digits)."""
    with pytest.raises(argparse.ArgumentTypeError, match="whole number from 1 to 10000"):
        whole_number(10_000)(text)
    assert whole_number(10_000)("10000") == 10_000 and row_id("42") == 42


@pytest.mark.parametrize("option", ["--port", "--threads", "--processes"])
@pytest.mark.parametrize(
    "text", ["+8", " 8", "8 ", "1_0", "\u06f8", "\u0668", "8.0", "-+1", "--1", "-0", "-", ""]
)
def test_serves_numbers_are_ascii_digits_as_their_variables_are(option, text, capsys):
    """int() took `--threads +8` and `--port ۱۸۷۳۹`, where CHARGEBOX_THREADS=+8 is refused
    (README: numbers are plain positive integers; helper-135). Their range is Config's."""
    with pytest.raises(SystemExit) as refused:
        cli._parser().parse_args(["serve", f"{option}={text}"])
    assert refused.value.code == 2 and "whole number in digits 0-9" in capsys.readouterr().err
    assert getattr(cli._parser().parse_args(["serve", option, "0"]), option[2:]) == 0


def test_python_dash_m_chargebox_is_the_chargebox_command(tmp_path):
    """`python -m chargebox` for a shell where the installed script is not on PATH."""
    import chargebox as package

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "chargebox", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    assert run("--version").stdout.strip() == f"chargebox {package.__version__}"
    missing = run("audit", "--db", str(tmp_path / "no.db"))
    assert missing.returncode == 2 and missing.stderr.startswith("chargebox audit: no database")

"""The stress harness: a small run passes in both modes, and its verifier catches lies."""

from __future__ import annotations

import json

import pytest

from stress import scenario
from stress.client import Client
from stress.verify import Expected, verify
from tests.support import ADMIN_TOKEN, drop_trigger, new_seller, run_stress, writable


def test_a_small_run_in_both_modes_reconciles_and_reports_every_round(tmp_path):
    """As a user runs it: replays and overspend on, two server processes on one file."""
    result = run_stress(
        "run",
        "--sellers",
        "2",
        "--credits",
        "4",
        "--sales",
        "120",
        "--workers",
        "4",
        "--mode",
        "both",
        "--replay-fraction",
        "0.25",
        "--overspend",
        "0.3",
        "--server-procs",
        "2",
        "--quiet",
        "--out",
        str(tmp_path),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "books reconcile in every round" in result.stdout
    report = json.loads(next(tmp_path.glob("run-*.json")).read_text())
    assert report["ok"] and [r["mode"] for r in report["rounds"]] == ["threads", "processes"]
    for row in report["rounds"]:
        assert row["ok_201"] + row["refused_409"] == 120
        assert row["refused_409"] > 0  # the overspend really was refused
        assert row["replays"] > 0 and row["problems"] == []
        assert row["p99_ms"] >= row["p50_ms"] > 0


@pytest.fixture
def funded(fresh_server):
    """A seller with 50,000 credited and three 5,000 sales acknowledged."""
    admin = fresh_server.admin()
    seller, key = new_seller(admin, "verified", credit=50_000)
    for _ in range(3):
        sale = fresh_server.seller(key).post(
            "/api/sales", {"phone": "09121234567", "amount": 5_000}
        )
        assert sale.status_code == 201
    client = Client(fresh_server.url, ADMIN_TOKEN)
    yield fresh_server, client, seller["id"]
    client.close()


def test_the_verifier_passes_true_books(funded):
    server, client, seller_id = funded
    expected = Expected([seller_id], [50_000], [15_000], 3)
    assert verify(client, expected, server.db_path, server.data_dir) == []


def test_the_verifier_names_the_seller_when_results_are_fabricated(funded):
    server, client, seller_id = funded
    lied = Expected([seller_id], [50_000], [20_000], 4)  # one sale more than was answered 201

    problems = verify(client, lied, server.db_path, server.data_dir)

    assert f"seller {seller_id}: expected balance 30,000" in problems[0]
    assert "says 35,000" in problems[0]
    assert "4 sales were answered 201 but 3 sale rows exist" in problems[1]


def test_the_verifier_catches_a_database_tampered_behind_the_servers_back(funded):
    server, client, seller_id = funded
    with writable(server.db_path) as conn:
        drop_trigger(conn, "seller_balance_follows_ledger")
        conn.execute("UPDATE seller SET balance = balance + 1000 WHERE id = ?", (seller_id,))

    expected = Expected([seller_id], [50_000], [15_000], 3)
    problems = verify(client, expected, server.db_path, server.data_dir)

    text = "\n".join(problems)
    assert f"seller {seller_id}: expected balance 35,000" in text
    assert "balance 36,000 but ledger sum 35,000" in text
    assert "/api/audit is not consistent" in text
    assert "chargebox audit exited 1" in text


def test_credits_cover_exactly_the_demand_less_the_overspend():
    options = scenario.Options(sellers=2, credits=5, sales=50, overspend=0.2)
    plan = scenario.plan_sales(options, "t")
    credits = scenario.credit_amounts(options, plan)
    for seller in (0, 1):
        demand = sum(sale.amount for sale in plan if sale.seller == seller)
        assert sum(a for s, a in credits if s == seller) == int(demand * 0.8)
    assert len(credits) == 5

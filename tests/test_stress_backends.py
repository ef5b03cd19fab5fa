"""`python -m stress backends`: a tiny run on both backends reports every phase and
reconciled books.

Only structure and correctness are asserted (every backend and phase has a row with
sales, no answer but 201, the ratio computed, books reconciled, JSON written); the
figures belong in the benchmark's output, never in a test's thresholds. It needs
`wrk` and a PostgreSQL server (.ci/run installs both).
"""

from __future__ import annotations

import os
import shutil

import pytest

from stress import backends
from stress.pg_cluster import server_bin
from tests.support import stress_report


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    missing = [name for name, found in (("wrk", shutil.which("wrk")), ("postgresql",
               server_bin())) if not found]  # fmt: skip
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install {missing} (.ci/run does)")
        pytest.skip(f"needs {missing}")
    return stress_report(
        tmp_path_factory.mktemp("backends"), "backends", "--quick", "--seconds", "1",
        "--warmup", "1", "--connections", "4", "--sellers", "3", "--threads", "8",
    )  # fmt: skip


def test_both_backends_sell_in_every_phase_and_answer_only_201(tiny_run):
    _, document = tiny_run
    rows = {(row["backend"], row["phase"]): row for row in document["rows"]}
    assert set(rows) == {(b, p) for b in backends.BACKENDS for p in backends.PHASES}
    for key, row in rows.items():
        assert row["ok_201"] > 0 and row["sales_s"] > 0, key
        assert row["p99_ms"] >= row["p50_ms"] > 0, key
        assert row["non_201"] == 0 and not row["socket_errors"], (key, row["statuses"])
        assert row["writes_per_tx"] >= 1, key  # read from the servers' /metrics
        # the SQLite default is one server as run.py starts it; the others are two
        assert row["servers"] == (1 if key[0] == "sqlite-default" else 2), key


def test_the_report_gives_the_ratio_and_says_the_books_reconcile(tiny_run):
    result, document = tiny_run
    assert [r["measure"] for r in document["ratios"]] == [
        "hot: PostgreSQL / SQLite default, sales/s",
        "many: PostgreSQL / SQLite default, sales/s",
        "hot: PostgreSQL / SQLite, 2 servers each, sales/s",
        "many: PostgreSQL / SQLite, 2 servers each, sales/s",
        "hot: PostgreSQL p99 ms",
    ]
    rows = {(row["backend"], row["phase"]): row for row in document["rows"]}
    hot = rows[("postgresql", "hot")]["sales_s"]
    assert document["ratios"][0]["value"] == round(
        hot / rows[("sqlite-default", "hot")]["sales_s"], 2
    )
    assert document["ratios"][2]["value"] == round(hot / rows[("sqlite", "hot")]["sales_s"], 2)
    assert document["ok"] and document["books"]["problems"] == []
    assert "books reconcile on every backend" in result.stdout
    assert "report: " in result.stdout

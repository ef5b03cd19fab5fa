"""`python -m stress memory`: a tiny run reports a row per phase, the server's RSS, the
audits made under load, and reconciled books.

Only structure and correctness are asserted; how much memory the server holds is the
benchmark's output (docs/performance.md), never a test's threshold. It needs `wrk`
(.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil

import pytest

from stress import memory
from tests.support import stress_report


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    if not shutil.which("wrk"):
        if os.environ.get("CI"):
            pytest.fail("CI must install wrk (.ci/run does)")
        pytest.skip("needs wrk")
    return stress_report(
        tmp_path_factory.mktemp("memory"), "memory", "--seconds", "5", "--phase", "2",
        "--connections", "4", "--sellers", "2", "--audit-every", "0.5", "--full-every", "2",
        "--sample", "0.5",
    )  # fmt: skip


def test_each_phase_sells_and_reports_the_servers_memory(tiny_run):
    _, document = tiny_run
    assert [row["phase"] for row in document["rows"]] == [1, 2, 3]  # 2 s, 2 s, 1 s
    for row in document["rows"]:
        assert row["sales_s"] > 0 and row["non_201"] == 0, row
        assert row["rss_peak_mb"] >= row["rss_mb"] > 0, row
    rss = document["rss_mb"]
    assert rss["peak"] >= rss["end"] > 0 and rss["idle"] > 0
    assert document["sales"] > 0


def test_the_audits_under_load_were_clean_and_the_books_reconcile(tiny_run):
    result, document = tiny_run
    assert document["audits"] >= 1  # the first is asked for half a second into the load
    assert document["ok"] and document["books"]["problems"] == []
    assert "books reconcile" in result.stdout and "report: " in result.stdout


def test_an_audit_is_in_the_row_of_the_phase_it_ended_in():
    """A full audit that outlasts its phase (40 s and more in the hour) was in no row."""
    watcher = memory.Watcher("http://127.0.0.1:1", "token", 1, memory.Options())
    watcher.audits = [{"at": 5.0, "done": 9.0, "full": False}, {"at": 9.0, "done": 70.0,
                       "full": True}, {"at": 70.0, "done": 71.0, "full": False}]  # fmt: skip
    rows = [watcher.between(start, end)[1] for start, end in ((0.0, 60.0), (60.0, 120.0))]
    assert [[audit["done"] for audit in row] for row in rows] == [[9.0], [70.0, 71.0]]


def test_the_run_is_cut_into_phases_of_the_length_asked_the_last_one_what_is_left():
    assert memory.phases(memory.Options(seconds=3600, phase=60)) == [60] * 60
    assert memory.phases(memory.Options(seconds=130, phase=60)) == [60, 60, 10]
    assert memory.phases(memory.Options(seconds=5, phase=60)) == [5]
    with pytest.raises(ValueError):
        memory.Options(sample=0)

"""The `gil` and `io` demos, in their quick mode, really show what their lessons claim.

They time real threads and spawned processes, so what they show depends on the box
lending them its cores: a run that coincides with other heavy work may miss. Each
demo therefore gets up to ATTEMPTS runs; the first that shows its effect (or the
last) is the one checked, down to the rows that back `effect_shown`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stress.demos import load
from tests.support import run_stress

ATTEMPTS = 3


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict]:
    return {}


def outcome(outcomes: dict[str, dict], name: str) -> dict:
    """Run a demo in quick mode (retried while it misses) and check the shared contract."""
    if name not in outcomes:
        for _ in range(ATTEMPTS):
            result = load(name).run(quick=True)
            if result["effect_shown"]:
                break
        assert result["demo"] == name
        assert result["rows"] and all(isinstance(row, dict) for row in result["rows"])
        lesson = result["lesson"]
        assert isinstance(lesson, str) and len(lesson.split()) >= 8 and lesson.endswith(".")
        assert {"python", "sqlite", "cpus"} <= result["machine"].keys()
        outcomes[name] = result
    return outcomes[name]


def rows_by(result: dict, *keys: str) -> dict:
    return {tuple(row[key] for key in keys): row for row in result["rows"]}


def test_cpu_bound_python_gains_nothing_from_threads_but_does_from_processes(outcomes):
    result = outcome(outcomes, "gil")
    assert result["effect_shown"], result["lesson"]
    rows = rows_by(result, "work", "variant")
    one = rows["pure Python", "thread"]
    threads, procs = rows["pure Python", "threads"], rows["pure Python", "processes"]
    assert threads["workers"] == procs["workers"] >= 2
    assert one["speedup"] == 1.0
    assert threads["speedup"] < result["thresholds"]["threads_below"] <= 1.3
    assert procs["speedup"] > result["thresholds"]["processes_above"] >= 1.4
    # The why behind the speedups: threads hold one GIL, so about one core at most.
    assert threads["cores_used"] < 1.2 and procs["cores_used"] > threads["cores_used"]
    assert procs["startup_s"] > 0, "spawn start-up is measured, apart from the timed work"
    assert f"{threads['speedup']:.2f}x" in result["lesson"]
    assert f"{procs['speedup']:.2f}x" in result["lesson"]


def test_the_gil_demo_also_hashes_in_threads_to_show_c_code_that_releases_the_gil(outcomes):
    result = outcome(outcomes, "gil")
    rows = rows_by(result, "work", "variant")
    single, many = rows["sha256 (drops GIL)", "thread"], rows["sha256 (drops GIL)", "threads"]
    assert single["workers"] == 1 and many["workers"] == rows["pure Python", "threads"]["workers"]
    assert single["seconds"] > 0 and many["seconds"] > 0
    assert f"{many['speedup']:.2f}x" in result["lesson"] and "sha256" in result["lesson"]


def test_threads_waiting_on_a_slow_upstream_scale_almost_linearly(outcomes):
    result = outcome(outcomes, "io")
    assert result["effect_shown"], result["lesson"]
    upstream = {
        row["workers"]: row for row in result["rows"] if row["target"].startswith("slow upstream")
    }
    assert sorted(upstream) == [1, 4, 16, 64]
    assert upstream[1]["p50_ms"] >= 20, "every call waits the upstream's 20 ms"
    assert upstream[4]["speedup"] >= 3
    assert upstream[16]["speedup"] >= result["thresholds"]["upstream_16_threads_at_least"] >= 8
    for workers, row in upstream.items():
        assert row["errors"] == 0 and row["requests"] == workers * upstream[1]["requests"], row


def test_threads_calling_chargebox_scale_until_its_server_runs_out_of_cpu(outcomes):
    """GET /api/me is CPU work for a server on the same cores: threads scale until it is busy."""
    result = outcome(outcomes, "io")
    assert result["effect_shown"], result["lesson"]
    rows = rows_by(result, "target", "variant")
    target, limits = "chargebox GET /api/me", result["thresholds"]
    one, threads, procs = (rows[target, v] for v in ("thread", "threads", "processes"))
    assert threads["workers"] == procs["workers"] == 8
    assert one["requests"] == threads["requests"] == procs["requests"] > 0
    assert one["errors"] == threads["errors"] == procs["errors"] == 0
    assert limits["chargebox_threads_at_least"] >= 1.3
    assert limits["or_chargebox_server_cores_at_least"] >= 0.85
    assert (
        threads["speedup"] >= limits["chargebox_threads_at_least"]
        or threads["server_cores"] >= limits["or_chargebox_server_cores_at_least"]
    ), threads
    assert threads["p50_ms"] > one["p50_ms"], "concurrent requests queue at the server"
    assert f"{threads['speedup']:.2f}x" in result["lesson"]


def test_python_m_stress_demo_gil_quick_prints_the_table_and_the_lesson(tmp_path: Path):
    """The command learners type; its exit status says whether the effect showed."""
    done = run_stress("demo", "gil", "--quick", "--out", str(tmp_path), timeout=120)
    written = json.loads((tmp_path / "demo-gil.json").read_text())
    assert done.returncode == (0 if written["effect_shown"] else 1), done.stderr
    assert "cores_used" in done.stdout and "pure Python" in done.stdout
    assert written["lesson"] in done.stdout

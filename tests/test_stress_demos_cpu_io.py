"""The `gil` and `io` demos, in their quick mode, show the mechanism their lessons claim.

They run real threads and spawned processes on a box that other work may be using, so
these tests assert what a busy box cannot fake or hide, never a speed-up: the CPU time
each worker used per wall second (threads of Python hold one core between them), the
processes each worker ran in, the calls waiting at once on the upstream, the requests
in flight at chargebox and the server CPU each cost. Each demo runs once; workers are
started and wait on a barrier before the clock starts, so start-up is never timed. The
speed-ups are the demos' printed figures, and when a busy box flattens them the demo
says so in a warning (and still exits 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stress.demos import gil, load
from tests.support import run_stress


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict]:
    return {}


def outcome(outcomes: dict[str, dict], name: str) -> dict:
    """Run a demo once per module, in quick mode, and check the contract every demo shares."""
    if name not in outcomes:
        result = load(name).run(quick=True)
        assert result["demo"] == name
        assert result["rows"] and all(isinstance(row, dict) for row in result["rows"])
        lesson = result["lesson"]
        assert isinstance(lesson, str) and len(lesson.split()) >= 8 and lesson.endswith(".")
        assert result["warning"] is None or result["warning"].startswith("Warning: ")
        assert {"python", "sqlite", "cpus"} <= result["machine"].keys()
        outcomes[name] = result
    return outcomes[name]


def rows_by(result: dict, *keys: str) -> dict:
    return {tuple(row[key] for key in keys): row for row in result["rows"]}


def test_pure_python_threads_share_one_core_while_processes_each_run_their_own(outcomes):
    """The GIL, seen in CPU time: N threads of pure Python used at most about one core
    between them (a busy box can only lower that), each thread doing its share of the work;
    N processes each ran the work in an interpreter of their own, at the same time, and
    used more than one core whenever the rest of the box left the cores free."""
    result = outcome(outcomes, "gil")
    assert result["effect_shown"], result["lesson"]
    rows = rows_by(result, "work", "variant")
    one = rows["pure Python", "thread"]
    threads, procs = rows["pure Python", "threads"], rows["pure Python", "processes"]
    n = threads["workers"]
    assert n == procs["workers"] >= 2

    assert threads["cores_used"] <= gil.ONE_CORE, threads
    assert threads["processes"] == 1 and len(threads["worker_cpu_s"]) == n
    assert min(threads["worker_cpu_s"]) > 0
    # The same work by N threads costs about the CPU of one thread: nothing is saved.
    assert 0.5 <= threads["cpu_s"] / one["cpu_s"] <= 2, (threads, one)

    assert procs["processes"] == n and len(procs["worker_cpu_s"]) == n
    assert min(procs["worker_cpu_s"]) > 0
    assert procs["startup_s"] > 0, "spawn start-up is measured, apart from the timed work"
    if procs["cores_used"] <= gil.MORE_THAN_ONE:
        # The rest of the box took the cores: said in a warning, and only then allowed.
        assert procs["free_cores"] is None or procs["free_cores"] < gil.FREE_ENOUGH, procs
        assert result["warning"] and "cores free" in result["warning"]
    assert f"{threads['speedup']:.2f}x" in result["lesson"]
    assert f"{procs['speedup']:.2f}x" in result["lesson"]


def test_the_gil_demo_also_hashes_in_threads_to_show_c_code_that_releases_the_gil(outcomes):
    result = outcome(outcomes, "gil")
    rows = rows_by(result, "work", "variant")
    single, many = rows["sha256 (drops GIL)", "thread"], rows["sha256 (drops GIL)", "threads"]
    assert single["workers"] == 1 and many["workers"] == rows["pure Python", "threads"]["workers"]
    assert single["seconds"] > 0 and many["seconds"] > 0
    assert min(many["worker_cpu_s"]) > 0
    assert f"{many['speedup']:.2f}x" in result["lesson"] and "sha256" in result["lesson"]


def test_threads_waiting_on_a_slow_upstream_wait_at_once(outcomes):
    """Waiting releases the GIL: the upstream held several threads' calls at the same
    time (all of them, up to OVERLAPPING), and each call waited its full 20 ms."""
    result = outcome(outcomes, "io")
    assert result["effect_shown"], result["lesson"]
    upstream = {
        row["workers"]: row for row in result["rows"] if row["target"].startswith("slow upstream")
    }
    assert sorted(upstream) == [1, 4, 16, 64]
    overlapping = result["thresholds"]["upstream_waiting_at_once_at_least"]
    assert upstream[1]["waiting_at_once"] == 1
    assert upstream[1]["p50_ms"] >= 20, "every call waits the upstream's 20 ms"
    for workers, row in upstream.items():
        assert row["waiting_at_once"] >= min(workers, overlapping), row
        assert row["errors"] == 0 and row["requests"] == workers * upstream[1]["requests"], row


def test_threads_calling_chargebox_keep_requests_in_flight_that_each_cost_its_server_cpu(
    outcomes,
):
    """GET /api/me is CPU work for a server on the same cores: 8 threads keep several
    requests in flight at once, yet each still costs the server the CPU one client's
    request costs, so what threads overlap here is little; the speed-up is a figure."""
    result = outcome(outcomes, "io")
    assert result["effect_shown"], result["lesson"]
    rows = rows_by(result, "target", "variant")
    target, limits = "chargebox GET /api/me", result["thresholds"]
    one, threads, procs = (rows[target, v] for v in ("thread", "threads", "processes"))
    assert threads["workers"] == procs["workers"] == 8
    assert one["requests"] == threads["requests"] == procs["requests"] > 0
    assert one["errors"] == threads["errors"] == procs["errors"] == 0
    assert one["in_flight"] <= 1.01 < limits["chargebox_in_flight_at_least"]
    assert threads["in_flight"] >= limits["chargebox_in_flight_at_least"], threads
    if one["server_cpu_ms_per_request"] is not None:
        share = limits["chargebox_server_cpu_per_request_share_at_least"]
        cost = threads["server_cpu_ms_per_request"]
        assert cost >= share * one["server_cpu_ms_per_request"] > 0, (one, threads)
    assert f"{threads['speedup']:.2f}x" in result["lesson"]


def test_python_m_stress_demo_gil_quick_prints_the_table_and_the_lesson(tmp_path: Path):
    """The command learners type: exit 0 when the mechanism showed, a busy box or not."""
    done = run_stress("demo", "gil", "--quick", "--out", str(tmp_path), timeout=120)
    written = json.loads((tmp_path / "demo-gil.json").read_text())
    assert written["effect_shown"] and done.returncode == 0, done.stdout + done.stderr
    assert "cores_used" in done.stdout and "pure Python" in done.stdout
    assert written["lesson"] in done.stdout
    assert (written["warning"] or "") in done.stdout

"""The SQLite demos, in their quick mode, really show what their lessons claim.

Each demo runs its real threads and spawned processes on its own temp database file;
these tests check the contract of stress.demos and then the rows behind `effect_shown`,
so a demo that stopped losing money (or a fix that stopped fixing) fails here.
"""

from __future__ import annotations

import pytest

from stress.demos import load


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict]:
    return {}


def outcome(outcomes: dict[str, dict], name: str) -> dict:
    """Run a demo once per module, in quick mode, and check the shape every demo shares."""
    if name not in outcomes:
        result = load(name).run(quick=True)
        assert result["demo"] == name
        assert result["rows"] and all(isinstance(row, dict) for row in result["rows"])
        assert isinstance(result["lesson"], str) and result["lesson"].strip()
        assert {"python", "sqlite", "cpus"} <= result["machine"].keys()
        outcomes[name] = result
    return outcomes[name]


def rows_by(result: dict, *keys: str) -> dict:
    return {tuple(row[key] for key in keys): row for row in result["rows"]}


def test_threads_sharing_a_connection_err_or_drift_and_per_thread_connections_stay_exact(
    outcomes,
):
    result = outcome(outcomes, "shared-connection")
    assert result["effect_shown"], result["lesson"]
    shared = [row for row in result["rows"] if row["shared"]]
    own = [row for row in result["rows"] if not row["shared"]]
    assert len(shared) >= 2 and len(own) >= 1
    for row in shared:
        assert row["errors"] > 0 or row["drift_toman"] != 0, row
        assert result["top_errors"][row["variant"]], row["variant"]
    plain = next(row for row in shared if row["variant"].startswith("A sqlite3"))
    assert plain["errors"] > 0
    assert any("transaction" in message for message, _ in result["top_errors"][plain["variant"]]), (
        result["top_errors"][plain["variant"]]
    )
    for row in own:
        assert row["ok"] > 0 and row["ok"] == row["attempts"], row
        assert row["errors"] == row["drift_toman"] == row["ledger_minus_balance"] == 0, row


def test_naive_read_modify_write_loses_money_with_threads_and_with_processes(outcomes):
    result = outcome(outcomes, "lost-update")
    rows = rows_by(result, "variant", "workers")
    workers = result["workers"]
    for kind in ("threads", "processes"):
        naive = rows[("naive", f"{workers} {kind}")]
        assert naive["drift_toman"] > 0 and naive["lost_debits"] > 0, naive
        assert naive["actual"] > naive["expected"], naive


def test_a_thread_lock_fixes_threads_but_not_processes(outcomes):
    result = outcome(outcomes, "lost-update")
    rows = rows_by(result, "variant", "workers")
    workers = result["workers"]
    assert rows[("threading.Lock", f"{workers} threads")]["drift_toman"] == 0
    assert rows[("threading.Lock", f"{workers} processes")]["drift_toman"] > 0


def test_a_file_lock_or_begin_immediate_keeps_threads_and_processes_exact(outcomes):
    result = outcome(outcomes, "lost-update")
    assert result["effect_shown"], result["lesson"]
    total = result["workers"] * result["debits_per_worker"]
    for (variant, _), row in rows_by(result, "variant", "workers").items():
        if variant in ("filelock.FileLock", "BEGIN IMMEDIATE + guarded"):
            assert row["exact"] and row["drift_toman"] == 0, row
            assert row["debits_acked"] == total and row["actual"] == 0, row


def test_a_flock_queues_writers_in_the_kernel_while_the_busy_timeout_alone_lets_one_barge(
    outcomes,
):
    """Where writers wait, not how long: a busy box stretches every wait, but queued by a
    blocking flock they wait in the kernel (BEGIN IMMEDIATE then finds SQLite's lock free),
    while with the busy timeout alone they sleep in SQLite's busy handler and whoever
    retries first takes the lock, so the shares of the writes come out uneven. The worst
    waits and Jain's index are the demo's printed figures, not assertions."""
    result = outcome(outcomes, "file-lock")
    assert result["effect_shown"], result["lesson"]
    rows = {row["variant"]: row for row in result["rows"]}
    busy, flock = rows["busy timeout alone"], rows["fcntl.flock, blocking"]
    assert flock["waited_in_sqlite_pct"] < 10, flock
    assert busy["waited_in_sqlite_pct"] > 90, busy  # no gate: all its waiting is in SQLite
    assert busy["worker_ops_max"] >= 2 * busy["worker_ops_min"] or busy["locked_errors"], busy
    for row in result["rows"]:
        # Not worker_ops_min > 0: under the busy timeout alone a writer may starve
        # (docs/stack-notes.md, trap 6).
        assert row["tx_per_s"] > 0, row
        assert 0 < row["jain"] <= 1.0, row
    assert flock["locked_errors"] == flock["other_errors"] == 0

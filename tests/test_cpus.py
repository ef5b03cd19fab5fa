"""`--cpus`: each server process's threads pinned to one CPU, its writer to a spare one.

The placing is checked as a table, then on real servers: one process and two
(`--processes 2`), the CPUs each thread may run on read from /proc, as the kernel
keeps them. The CPUs are this test's own (`auto`), so the checks hold on any box:
on one CPU everything shares it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from chargebox import cpus
from chargebox.config import Config, cpu_setting
from chargebox.cpus import placed
from tests.support import ServerProcess, new_seller

MINE = tuple(sorted(os.sched_getaffinity(0)))
BOUND = 20.0  # seconds for a started thread to have pinned itself


@pytest.mark.parametrize(
    ("cpus", "processes", "slot", "where"),
    [
        ((0, 1), 1, 0, (0, 1)),  # one process: its writer on the spare CPU
        ((0, 1), 2, 0, (0, 0)),  # as many processes as CPUs: each writer with its process
        ((0, 1), 2, 1, (1, 1)),
        ((0, 1, 2, 3), 2, 1, (1, 3)),  # spares shared out among the writers
        ((0, 1), 3, 2, (0, 0)),  # more processes than CPUs: round the CPUs again
        ((5,), 1, 0, (5, 5)),  # one CPU: everything on it
    ],
)
def test_each_process_gets_a_cpu_and_its_writer_a_spare_one_if_there_is_one(
    cpus, processes, slot, where
):
    assert placed(cpus, processes, slot) == where


def test_a_writer_that_is_not_apart_stays_with_its_process():
    """PostgreSQL's writer (round trips, not work outside the lock) and no writer at all
    (no group commit): with its process, and the announcement names no writer's CPU."""
    assert placed((0, 1), 1, 0, apart=False) == (0, 0)
    assert cpus.described((0, 1), 1, apart=False) == ", CPUs 0"
    assert cpus.described((0, 1), 1) == ", CPUs 0 (writer 1)"
    assert cpus.described((), 1) == ""


def test_cpus_are_named_as_a_list_ranges_auto_or_off():
    assert cpu_setting("off") == () == Config().cpus == cpu_setting(" OFF ")
    assert cpu_setting("auto") == "auto" == cpu_setting(" AUTO ")
    assert cpu_setting("3, 0 - 1") == (0, 1, 3) == Config(cpus="1,0,3,0-1").cpus
    assert cpu_setting([1, 1, 0]) == (0, 1) and cpu_setting("8191") == (8191,)
    for wrong in ("", "x", "1-", "-1", "1-0", "0,,1", "\u0660", "0 1", "8192", "1" * 5000):
        with pytest.raises(ValueError, match="CHARGEBOX_CPUS"):
            cpu_setting(wrong)
    for wrong in ([-1], [True], ["1"], [8192], 3):
        with pytest.raises(ValueError, match="CHARGEBOX_CPUS"):
            cpu_setting(wrong)


def test_whether_this_process_may_run_there_is_asked_only_as_the_server_starts():
    """Any command reads the setting's spelling; only `serve` pins, so only it asks whether
    the CPUs are its own (a backup job on other CPUs shares the server's environment)."""
    assert Config(cpus="4095").cpus == (4095,)  # no refusal: not yet
    assert cpus.resolved("auto") == MINE and cpus.resolved(()) == ()
    assert cpus.resolved(MINE[:1]) == MINE[:1]
    with pytest.raises(ValueError, match="CPU 4095 is not one this process may run on"):
        cpus.resolved((MINE[0], 4095))


def test_a_cpu_taken_away_after_the_start_is_said_and_the_thread_runs_where_it_may(
    monkeypatch, caplog
):
    """After the start pinning is a wish: a cpuset narrowed since (EINVAL) is logged, a
    thread that ended meanwhile (ESRCH) passed over; neither stops a thread or a write."""

    def refused(tid, mask):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "sched_setaffinity", refused)
    monkeypatch.setattr(cpus, "_writer_cpu", None)
    with caplog.at_level(logging.WARNING, logger="chargebox.cpus"):
        cpus.pin((0, 1), 1, 0)
        cpus.writer_started()
    said = [r.getMessage() for r in caplog.records if r.name == "chargebox.cpus"]
    assert said and all("could not pin a thread to CPU" in line for line in said), said
    assert any("CPU 1 " in line for line in said)  # the writer's own, as it started

    def ended(tid, mask):
        raise ProcessLookupError(errno.ESRCH, "No such process")

    monkeypatch.setattr(os, "sched_setaffinity", ended)
    caplog.clear()
    cpus.pin((0, 1), 1, 0)
    assert not caplog.records

    pinned: list[int] = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda tid, mask: pinned.append(tid))
    monkeypatch.setattr(os, "listdir", lambda path: (_ for _ in ()).throw(FileNotFoundError(path)))
    cpus.pin((0, 1), 1, 0)  # no /proc: the threads Python knows, this one as 0
    assert 0 in pinned and len(pinned) == len(threading.enumerate())


def allowed(pid: int) -> dict[int, set[int]]:
    """The CPUs each thread of `pid` may run on, by thread id, as /proc says."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            line = next(row for row in status if row.startswith("Cpus_allowed_list:"))
        cpus: set[int] = set()
        for part in line.split(":", 1)[1].strip().split(","):
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
        threads[int(tid)] = cpus
    return threads


def until(check, what: str):
    """`check()` once it is true (a thread starting pins itself as it starts)."""
    deadline = time.monotonic() + BOUND
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


def serving(tmp_path: Path, **env: str) -> ServerProcess:
    return ServerProcess(tmp_path / "cb.db", threads=8, env=env).start()


def sell_once(server: ServerProcess) -> None:
    _, key = new_seller(server.admin(), "Ali", credit=10_000)
    sale = server.seller(key).post("/api/sales", {"phone": "09121234567", "amount": 1_000})
    assert sale.status_code == 201, sale.text


def test_one_process_runs_on_one_cpu_and_its_writer_on_another(tmp_path):
    mine, writer = placed(MINE, 1, 0)
    server = serving(tmp_path, CHARGEBOX_CPUS="auto")
    try:
        assert f"CPUs {mine} (writer {writer})" in server.announced
        sell_once(server)  # the writer thread starts with the first write

        apart = 2 if writer != mine else 0  # the writer's thread and the WAL's (wal.py)

        def pinned():
            threads = allowed(server.proc.pid)
            return threads if sum(cpus == {writer} for cpus in threads.values()) >= apart else None

        threads = until(pinned, "the writer thread never ran on its CPU")
        assert threads[server.proc.pid] == {mine}  # the loop's thread
        on_writer = [tid for tid, cpus in threads.items() if cpus == {writer}]
        others = [cpus for tid, cpus in threads.items() if tid not in on_writer]
        assert len(threads) > 8 and all(cpus == {mine} for cpus in others), threads
        assert len(on_writer) == (apart or len(threads)), threads
    finally:
        assert server.stop() == 0


def test_without_cpus_no_thread_is_pinned(tmp_path):
    server = serving(tmp_path)
    try:
        sell_once(server)
        assert all(cpus == set(MINE) for cpus in allowed(server.proc.pid).values())
    finally:
        assert server.stop() == 0


def test_forked_processes_each_run_on_a_cpu_of_their_own(tmp_path):
    server = serving(tmp_path, CHARGEBOX_CPUS="auto", CHARGEBOX_PROCESSES="2")
    try:
        parent = server.proc.pid
        places = [placed(MINE, 2, slot) for slot in (0, 1)]

        def children():
            with open(f"/proc/{parent}/task/{parent}/children") as listed:
                pids = [int(pid) for pid in listed.read().split()]
            mains = [allowed(pid)[pid] for pid in pids]
            return pids if len(pids) == 2 and all(len(cpus) == 1 for cpus in mains) else None

        pids = until(children, "the two server processes never pinned themselves")
        assert all(cpus == set(MINE) for cpus in allowed(parent).values())  # it only supervises
        mains = sorted(min(allowed(pid)[pid]) for pid in pids)
        assert mains == sorted(mine for mine, _ in places)
        for pid in pids:
            own = {cpu for mine, writer in places if {mine} == allowed(pid)[pid]
                   for cpu in (mine, writer)}  # fmt: skip
            assert all(cpus <= own for cpus in allowed(pid).values()), (pid, allowed(pid))
    finally:
        assert server.stop() == 0

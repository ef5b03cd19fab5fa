"""Server processes pinned to CPUs (`--cpus`): the interpreter lock handed over on one core.

Under load a server process's request threads, its loop and its writer hand one
interpreter lock to each other many times a request: each system call that lets it
go (a send, a log line, a wait for a batch) hands it to another thread. Left to the
scheduler, those threads run on every core, and a hand-over to a thread asleep on
another core waits for that core to wake it (an interrupt between processors; on a
virtual machine, a trip through the host): under `wrk` the lock was held by no one
about half the time (docs/performance.md, "Pinned to CPUs"). Pinned, a process's
threads share one core and hand the lock over there. Its writer thread, whose SQLite
work runs outside the lock, gets a core of its own when there is one to spare.

Off by default: a pinned process cannot move off a core that other work keeps busy.
"""

from __future__ import annotations

import os
import threading

WRITER_THREAD = "chargebox-writer"  # the group writer's thread (writer.py)

_writer_cpu: int | None = None  # this process's writer's, once pinned


def placed(cpus: tuple[int, ...], processes: int, slot: int) -> tuple[int, int]:
    """The CPU of server process `slot`'s threads (of `processes` on `cpus`), and of its
    writer: one beyond the processes' own when `cpus` has one to spare, else its own."""
    spare = cpus[processes:]
    mine = cpus[slot % len(cpus)]
    return mine, spare[slot % len(spare)] if spare else mine


def pin(cpus: tuple[int, ...], processes: int, slot: int) -> None:
    """Pin this process (server process `slot`): every thread it has to its CPU, its
    writer thread to the writer's, now or as it starts (`writer_started`); threads started
    later inherit their starter's CPU. Nothing when `cpus` is empty (off)."""
    global _writer_cpu
    if not cpus:
        return
    mine, _writer_cpu = placed(cpus, processes, slot)
    here = threading.current_thread()
    for thread in threading.enumerate():
        cpu = _writer_cpu if thread.name == WRITER_THREAD else mine
        if thread is here:  # 0: this thread (a forked child's keeps its parent's native_id)
            os.sched_setaffinity(0, {cpu})
        elif thread.native_id is not None:
            os.sched_setaffinity(thread.native_id, {cpu})


def writer_started() -> None:
    """The writer thread, as it starts: to its own CPU if this process is pinned."""
    if _writer_cpu is not None:
        os.sched_setaffinity(0, {_writer_cpu})


def described(cpus: tuple[int, ...], processes: int) -> str:
    """Where the server processes run, for the line that announces the server."""
    if not cpus:
        return ""
    places = [placed(cpus, processes, slot) for slot in range(processes)]
    return ", CPUs " + "; ".join(f"{mine} (writer {writer})" for mine, writer in places)

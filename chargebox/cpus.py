"""Server processes pinned to CPUs (`--cpus`): the interpreter lock handed over on one core.

Under load a server process's request threads, its loop and its writer hand one
interpreter lock to each other many times a request: each system call that lets it
go (a send, a log line, a wait for a batch) hands it to another thread. Left to the
scheduler, those threads run on every core, and a hand-over to a thread asleep on
another core waits for that core to wake it (an interrupt between processors; on a
virtual machine, a trip through the host): under `wrk` the lock was held by no one
about half the time (docs/performance.md, "Pinned to CPUs"). Pinned, a process's
threads share one core and hand the lock over there. On SQLite its writer thread,
whose SQLite work runs outside the lock, gets a core of its own when there is one to
spare; on PostgreSQL (round trips, not work) it stays with its process.

Off by default: a pinned process cannot move off a core that other work keeps busy.
Whether the CPUs are this process's to run on is checked once, as the server starts
(`resolved`: a refusal); after that pinning is a wish: a CPU a container has taken
away since is said in the log, and the thread runs where it may.
"""

from __future__ import annotations

import logging
import os
import threading

from chargebox.config import CPUS_SETTING

log = logging.getLogger("chargebox.cpus")

WRITER_THREAD = "chargebox-writer"  # the group writer's thread (writer.py)

_writer_cpu: int | None = None  # this process's writer's, once pinned


def resolved(setting: str | tuple[int, ...]) -> tuple[int, ...]:
    """Config's `cpus` as the CPUs to pin to: "auto" as those this process may run on now;
    named ones checked against them (a ValueError naming the setting and the CPU)."""
    if not setting:
        return ()
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError(f"{CPUS_SETTING}: this system cannot pin threads to CPUs")
    allowed = tuple(sorted(os.sched_getaffinity(0)))
    if setting == "auto":
        return allowed
    outside = sorted(set(setting) - set(allowed))
    if outside:
        mine = ", ".join(str(cpu) for cpu in allowed)
        raise ValueError(
            f"{CPUS_SETTING}: CPU {outside[0]} is not one this process may run on ({mine})"
        )
    return tuple(setting)


def placed(cpus: tuple[int, ...], processes: int, slot: int, apart: bool = True) -> tuple[int, int]:
    """The CPU of server process `slot`'s threads (of `processes` on `cpus`), and of its
    writer: `apart`, one beyond the processes' own when `cpus` has one to spare; else its
    process's."""
    spare = cpus[processes:] if apart else ()
    mine = cpus[slot % len(cpus)]
    return mine, spare[slot % len(spare)] if spare else mine


def pin(cpus: tuple[int, ...], processes: int, slot: int, apart: bool = True) -> None:
    """Pin this process (server process `slot`): every thread it has to its CPU, its
    writer thread to the writer's, now or as it starts (`writer_started`); threads started
    later inherit their starter's CPU. Nothing when `cpus` is empty (off)."""
    global _writer_cpu
    if not cpus:
        return
    mine, _writer_cpu = placed(cpus, processes, slot, apart)
    here = threading.current_thread()
    writers = {thread.native_id for thread in threading.enumerate()
               if thread.name == WRITER_THREAD and thread is not here}  # fmt: skip
    for tid in _threads(here):
        _wished(tid, _writer_cpu if tid in writers else mine)


def _threads(here: threading.Thread) -> list[int]:
    """This process's threads' ids, from /proc (a thread not started by Python too), or as
    Python knows them (0 for this one: a forked child's keeps its parent's native_id)."""
    try:
        return sorted(int(name) for name in os.listdir("/proc/self/task"))
    except OSError:  # no /proc here
        threads = threading.enumerate()
        return [0 if t is here else t.native_id for t in threads if t.native_id is not None]


def writer_started() -> None:
    """The writer thread (or the WAL's checkpoints'), as it starts: to the writer's CPU if
    this process is pinned."""
    if _writer_cpu is not None:
        _wished(0, _writer_cpu)


def _wished(tid: int, cpu: int) -> None:
    """Thread `tid` (0: this one) to `cpu`, if it still may run there and still runs."""
    try:
        os.sched_setaffinity(tid, {cpu})
    except ProcessLookupError:
        pass  # the thread ended meanwhile
    except OSError as exc:  # the CPU taken away since the start (a cpuset narrowed, offline)
        log.warning("could not pin a thread to CPU %d (%s): it runs where it may", cpu,
                    exc.strerror)  # fmt: skip


def described(cpus: tuple[int, ...], processes: int, apart: bool = True) -> str:
    """Where the server processes run, for the line that announces the server."""
    if not cpus:
        return ""
    places = [placed(cpus, processes, slot, apart) for slot in range(processes)]
    return ", CPUs " + "; ".join(
        str(mine) if writer == mine else f"{mine} (writer {writer})" for mine, writer in places
    )

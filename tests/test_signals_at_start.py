"""A server signalled at once: as soon as it says it serves, or while its children start.

A supervisor (systemd, a deploy script, a test) may send SIGTERM the moment it reads
"chargebox serving on ...". Before, the line was printed before the handler that makes
SIGTERM a clean stop was installed: such a server died of the signal (exit -15, no
"chargebox stopped"), and with `--processes 2` its children, still starting, took the
dead parent's successor for their parent and served on, orphans, for good. Now the
handler comes before the line, and a child knows its parent's PID from before the fork.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ADMIN_TOKEN, ROOT, alive

GONE_WITHIN = 30  # seconds for a child to see its parent gone (it looks every loop turn)


def started(tmp_path, processes: int) -> subprocess.Popen:
    """`chargebox serve` with its first line read: it says it serves. Its stderr goes to
    `server.log` (a child left behind must not hold a pipe the test waits on)."""
    with open(tmp_path / "server.log", "a") as log:
        return _started(tmp_path, processes, log)


def _started(tmp_path, processes: int, log, command=("-m", "chargebox.cli")) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, *command, "serve", "--port", "0",
         "--db", str(tmp_path / "cb.db"), "--processes", str(processes)],
        cwd=ROOT,
        start_new_session=True,  # a group of its own, as a terminal's job is
        env={**os.environ, "CHARGEBOX_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )  # fmt: skip
    assert "serving on" in server.stdout.readline()
    return server


def children_of(pid: int) -> list[int]:
    return [int(n) for n in open(f"/proc/{pid}/task/{pid}/children").read().split()]


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_sent_as_soon_as_the_server_says_it_serves_is_a_clean_stop(
    tmp_path, processes, sig
):
    for attempt in range(3):
        server = started(tmp_path, processes)
        children = children_of(server.pid)
        server.send_signal(sig)
        out, _ = server.communicate(timeout=60)
        err = (tmp_path / "server.log").read_text()
        assert server.returncode == 0, (attempt, server.returncode, err[-2000:])
        assert out.splitlines()[-1] == "chargebox stopped", out
        assert "Traceback" not in err, err[-2000:]
        assert not [pid for pid in children if alive(pid)], "a child outlived its parent"


def test_children_still_starting_when_their_parent_is_killed_stop_too(tmp_path):
    """SIGKILL (the OOM killer) leaves the parent no last word: each child must see that
    the parent that forked it is gone, even one that was still starting at the time."""
    for attempt in range(3):
        server = started(tmp_path, 2)
        children = children_of(server.pid)
        assert len(children) == 2, children
        server.kill()
        server.wait(timeout=60)
        server.stdout.close()  # a child never writes to it
        deadline = time.monotonic() + GONE_WITHIN
        while [pid for pid in children if alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the children's own exit, bounded by the deadline
        orphans = [pid for pid in children if alive(pid)]
        for pid in orphans:  # ours to clean up, by PID, before the assertion says why
            os.kill(pid, signal.SIGKILL)
        assert not orphans, f"attempt {attempt}: children {orphans} served on, orphaned"


def test_ctrl_c_at_a_terminal_reaches_every_process_and_is_a_clean_stop(tmp_path):
    """A terminal's Ctrl-C signals the whole group: children still starting die of it
    (nothing in flight yet), the others stop; the parent mourns none of them, replaces
    none, and exits 0."""
    for attempt in range(3):
        server = started(tmp_path, 2)
        children = children_of(server.pid)
        os.killpg(server.pid, signal.SIGINT)
        out, _ = server.communicate(timeout=60)
        err = (tmp_path / "server.log").read_text()
        assert server.returncode == 0, (attempt, server.returncode, err[-2000:])
        assert out.splitlines()[-1] == "chargebox stopped", out
        assert "replacement" not in err and "Traceback" not in err, err[-2000:]
        assert not [pid for pid in children if alive(pid)], "a child outlived its parent"


# The parent signals itself just before it forks its last child: the stop is asked while
# the children start, and that child is forked with the stop already under way.
STOPPED_WHILE_FORKING = """
import os, signal, sys
from chargebox import server
from chargebox.cli import main

forking = server._Supervisor.start_child


def start_child(self, slot):
    if slot == self.config.processes - 1 and not self.replaced:
        os.kill(os.getpid(), signal.SIGTERM)
    forking(self, slot)


server._Supervisor.start_child = start_child
sys.exit(main(sys.argv[1:]))
"""


def test_a_stop_asked_while_the_children_are_forked_stops_every_one_at_once(tmp_path):
    """The parent's SIGTERM to a child just forked came before the child made SIGTERM its
    default again: it set the parent's flag, copied there, that nobody reads, and the
    child served on until the parent killed it (exit 1). The stops are held back across
    the fork now."""
    script = tmp_path / "stopped_while_forking.py"
    script.write_text(STOPPED_WHILE_FORKING)
    for attempt in range(3):
        with open(tmp_path / "server.log", "w") as log:
            server = _started(tmp_path, 2, log, command=(str(script),))
        out, _ = server.communicate(timeout=60)
        err = (tmp_path / "server.log").read_text()
        assert server.returncode == 0, (attempt, server.returncode, err[-2000:])
        assert "did not stop in time" not in err and "Traceback" not in err, err[-2000:]


# `nohup chargebox serve`: SIGHUP ignored as the server starts
IGNORING_HUP = ("-c", "import signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN);"
                " from chargebox.cli import main; sys.exit(main(sys.argv[1:]))")  # fmt: skip


def signal_masks(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1], 16) for line in status
            if line.startswith(("SigIgn:", "SigCgt:"))}  # fmt: skip


@pytest.mark.parametrize("processes", [1, 2])
def test_a_server_started_with_sighup_ignored_keeps_ignoring_it(tmp_path, processes):
    """SIGHUP stops the server cleanly, unless it was ignored as it started: `nohup` would
    mean nothing otherwise (helper-126). Every process, once it serves (its SIGTERM
    caught), still ignores SIGHUP; SIGTERM stops them all cleanly."""
    with open(tmp_path / "server.log", "a") as log:
        server = _started(tmp_path, processes, log, IGNORING_HUP)
    try:
        every = [server.pid, *children_of(server.pid)]
        assert len(every) == (1 if processes == 1 else 3), every
        hup, term = 1 << (signal.SIGHUP - 1), 1 << (signal.SIGTERM - 1)
        until = time.monotonic() + GONE_WITHIN
        while not all(signal_masks(pid)["SigCgt"] & term for pid in every):
            assert time.monotonic() < until, [signal_masks(pid) for pid in every]
            time.sleep(0.05)  # polled: each child installs its handler as it starts serving
        for pid in every:
            masks = signal_masks(pid)
            assert masks["SigIgn"] & hup and not masks["SigCgt"] & hup, (pid, masks)
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
        assert server.returncode == 0 and out.splitlines()[-1] == "chargebox stopped", out
    finally:
        if server.poll() is None:  # a failed assertion leaves no server behind
            os.killpg(server.pid, signal.SIGKILL)
            server.communicate(timeout=60)

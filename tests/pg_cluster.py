"""A throwaway PostgreSQL cluster for the tests (stress/pg_cluster.py: shared with the
benchmark), and `serving`: a `chargebox serve` on one of its databases.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stress.pg_cluster import (  # noqa: F401 (the tests' names for them)
    PASSWORD,
    STOP_TIMEOUT,
    SUPERUSER,
    Cluster,
    Roles,
    _free_port,
    embedded_bin,
    initialised,
    new_database,
    running,
    server_bin,
    start,
)


def needed() -> None:
    """A test that needs a PostgreSQL server skips without one and says how to get it,
    except under CI=true, where it fails."""
    if server_bin() is None:
        message = "no PostgreSQL server: apt-get install postgresql (CI's .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def serving(
    app_url: str,
    data: Path,
    log: Path,
    admin_token: str,
    processes: int = 1,
    within: str | None = None,
):
    """`chargebox serve` on the database at `app_url` (a free port); yields (url, process).
    `within`: a network namespace to run it in (`ip netns exec` execs, so the PID is its).

    Stopped by PID with SIGTERM at the end, and it must exit 0, unless the test killed it.
    """
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "CHARGEBOX_ADMIN_TOKEN": admin_token, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "chargebox.cli", "serve", "--port", "0", "--db", app_url,
               "--data-dir", str(data), "--processes", str(processes)]  # fmt: skip
    if within is not None:
        command = ["ip", "netns", "exec", within, *command]
    with open(log, "w") as errors:
        server = subprocess.Popen(
            command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
    try:
        line = server.stdout.readline()
        found = re.search(r"serving on (http://\S+:\d+)", line)
        assert found, f"the server did not start: {line!r} {log.read_text()[-1500:]}"
        yield found.group(1), server, line
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=STOP_TIMEOUT) == 0, log.read_text()[-1500:]
        server.stdout.close()

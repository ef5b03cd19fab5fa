"""Starting and stopping real chargebox server processes on free 127.0.0.1 ports.

Used by the harness and by the test suite alike: `python run.py --port 0`, the
announced address read from its first line, ready when /health answers.
Stopped by PID with SIGTERM (clean exit 0 expected), SIGKILL as a last resort.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from stress.client import Client

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30


@dataclasses.dataclass
class ServerProcess:
    """`python run.py` on a free 127.0.0.1 port with its own database file."""

    db_path: Path
    admin_token: str
    threads: int = 16
    env: dict = dataclasses.field(default_factory=dict)
    proc: subprocess.Popen | None = None
    url: str = ""
    announced: str = ""  # the server's first line: address, database, threads, durability
    log_path: Path | None = None

    def start(self) -> ServerProcess:
        env = {
            **os.environ,
            "CHARGEBOX_ADMIN_TOKEN": self.admin_token,
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        self.log_path = self.db_path.with_name(self.db_path.name + f".{id(self)}.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "run.py"),
                    "--port",
                    "0",
                    "--db",
                    str(self.db_path),
                    "--threads",
                    str(self.threads),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        line = self.announced = self.proc.stdout.readline().strip()
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r} {self.log_path.read_text()}")
        self.url = match.group(1)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        client = Client(self.url, timeout=2)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                try:
                    if client.get("/health").status == 200:
                        return
                except OSError:
                    time.sleep(0.05)
            raise RuntimeError("server never answered /health")
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc.stdout.close()
        return code


def cli_audit(db_path: Path) -> subprocess.CompletedProcess:
    """`chargebox audit --db PATH`, as an operator runs it: straight from the file."""
    return subprocess.run(
        [sys.executable, "-m", "chargebox.cli", "audit", "--db", str(db_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

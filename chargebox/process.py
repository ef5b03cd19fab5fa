"""Start and stop a real chargebox server process on a free 127.0.0.1 port.

What an operator types (`chargebox serve --port 0 --db PATH`, or `--db URL
--data-dir DIR` for PostgreSQL), run as a child
process: its announced address is read from its first line, and it is ready
once /health answers. Used by the load harness (`stress`) and the test suite
alike, which must both talk HTTP to a real server; so this module imports
nothing of chargebox, reads no environment (the caller says what the server
inherits), and stops only the process it started, by its PID.
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

START_TIMEOUT = 30  # seconds for a server to announce itself and answer /health
AUDIT_TIMEOUT = 120
# Where `python -m chargebox.cli` resolves from a checkout (a working directory of no
# consequence when chargebox is installed).
CHECKOUT = Path(__file__).resolve().parent.parent


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chargebox.cli", *args]


@dataclasses.dataclass
class ServerProcess:
    """`chargebox serve` on a free 127.0.0.1 port with its own database.

    `db_path` is what `--db` gets: an SQLite file, or a PostgreSQL URL; for a URL,
    `data_dir` holds the secrets (`--data-dir`) and the server's log.
    """

    db_path: Path | str
    admin_token: str
    environ: Mapping[str, str]  # what the server inherits: the caller's os.environ
    threads: int = 16
    env: dict = dataclasses.field(default_factory=dict)  # settings on top of `environ`
    proc: subprocess.Popen | None = None
    url: str = ""
    announced: str = ""  # the server's first line: address, database, threads, durability
    log_path: Path | None = None  # its stderr
    data_dir: Path | None = None  # --data-dir (PostgreSQL)

    def start(self) -> ServerProcess:
        env = {
            **self.environ,
            "CHARGEBOX_ADMIN_TOKEN": self.admin_token,
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        command = _command("serve", "--port", "0", *database_args(self.db_path, self.data_dir))
        if self.data_dir is not None:
            self.log_path = self.data_dir / f"server.{id(self)}.log"
        else:
            self.log_path = self.db_path.with_name(self.db_path.name + f".{id(self)}.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [*command, "--threads", str(self.threads)],
                cwd=CHECKOUT,
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
        host, port = self.url.removeprefix("http://").split(":")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass  # not listening yet
            finally:
                conn.close()
            time.sleep(0.05)
        raise RuntimeError("server never answered /health")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the server (SIGTERM: a clean stop) and wait; SIGKILL as a last resort."""
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


def database_args(db: Path | str, data_dir: Path | None = None) -> list[str]:
    """`--db DB`, and `--data-dir DIR` when there is one (a PostgreSQL URL's secrets)."""
    return ["--db", str(db), *(["--data-dir", str(data_dir)] if data_dir is not None else [])]


def cli_audit(db_path: Path | str, data_dir: Path | None = None) -> subprocess.CompletedProcess:
    """`chargebox audit --db PATH` (or `--db URL --data-dir DIR`), as an operator runs it."""
    return subprocess.run(
        _command("audit", *database_args(db_path, data_dir)),
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=AUDIT_TIMEOUT,
    )

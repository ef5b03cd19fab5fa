"""The single file (deploy/build.py), as an operator gets it: built, copied, run.

The file is built from this working tree (its dependencies' wheels come from PyPI),
copied alone into an empty directory and run there by the machine's own Python
(Debian's /usr/bin/python3 when it is 3.11 or newer), which cannot import chargebox,
peewee, bottle or waitress by itself: whatever runs, the file brought. Through it:
init-db, then a real server on 127.0.0.1 and the customer's scenario over HTTP (a
seller credited 1,000,000 sells sixty 5,000-toman charges and has 700,000 left, its
ledger says so; then `python -m stress run`'s 2 sellers, 10 credits and 1,000 sales
from 16 workers against it, books verified, and a `backup` while it serves), SIGTERM and
exit 0, then audit (of the database and of the backup), migrate and create-seller. Size
and start-up times are printed (-s).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

import chargebox
from chargebox import schema
from tests.support import ADMIN_TOKEN, ROOT, Api, run_stress
from tests.test_deploy import BACKUP, UNIT, settings
from tests.test_migrations import old_file, old_keys, sells_on_with_old_keys

BUILD = ROOT / "deploy" / "build.py"
SYSTEM_PYTHON = Path("/usr/bin/python3")
NOBODY = pwd.getpwnam("nobody")  # the unit's dedicated user, played by nobody
DEADLINE = 30  # seconds for the server to announce itself and answer /health, or to stop


def system_python() -> Path:
    """Debian's Python if it is 3.11+, else the base interpreter under this test's venv."""
    if SYSTEM_PYTHON.exists():
        version = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 11))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if version == "True":
            return SYSTEM_PYTHON
    return Path(sys._base_executable)


@pytest.fixture(scope="module")
def single_file(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("dist") / "chargebox"
    built = subprocess.run(
        [sys.executable, BUILD, "--output", output], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stdout + built.stderr[-4000:]
    return output


@pytest.fixture
def place(single_file, tmp_path) -> tuple[Path, dict]:
    """An empty directory holding only a copy of the file, and a bare environment whose
    `python3` is the system's, with a fresh SHIV_ROOT (where the file unpacks itself)."""
    where = tmp_path / "srv"
    where.mkdir()
    shutil.copy2(single_file, where / "chargebox")
    python = system_python()
    env = {
        "PATH": f"{python.parent}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "SHIV_ROOT": str(tmp_path / "shiv"),
        "LANG": "C.UTF-8",
    }
    alone = subprocess.run(
        ["python3", "-c", "import chargebox"], env=env, cwd=where, capture_output=True
    )
    assert alone.returncode != 0, f"{python} imports chargebox by itself: the test proves nothing"
    for name in ("peewee", "bottle", "waitress", "filelock", "prometheus_client"):
        found = subprocess.run(["python3", "-c", f"import {name}"], env=env, capture_output=True)
        assert found.returncode != 0, f"{python} has {name} already"
    return where, env


def run(place: tuple[Path, dict], *args: str) -> subprocess.CompletedProcess:
    where, env = place
    return subprocess.run(
        ["./chargebox", *args], cwd=where, env=env, capture_output=True, text=True, timeout=120
    )


def timed(place, *args: str) -> float:
    began = time.perf_counter()
    assert run(place, *args).returncode == 0
    return time.perf_counter() - began


def test_the_file_starts_alone_and_says_its_version(single_file, place):
    first = timed(place, "--version")  # unpacks into SHIV_ROOT
    later = [timed(place, "--version") for _ in range(5)]
    help_first = timed(place, "serve", "--help")
    assert run(place, "--version").stdout.strip() == f"chargebox {chargebox.__version__}"
    unpacked = list(Path(place[1]["SHIV_ROOT"]).glob("chargebox_*/site-packages/chargebox"))
    assert len(unpacked) == 1, "the file ran from somewhere other than its SHIV_ROOT"
    assert (place[0] / "chargebox").stat().st_mode & 0o111, "the copy is not executable"
    print(
        f"\nsingle file: {single_file.stat().st_size:,} bytes; --version: first run "
        f"{first:.2f} s (unpacking), later {statistics.median(later):.2f} s (median of 5); "
        f"serve --help {help_first:.2f} s; python3 is {system_python()}"
    )


def test_a_second_build_of_the_same_tree_is_the_same_file(single_file, tmp_path):
    again = subprocess.run(
        [sys.executable, BUILD, "--output", tmp_path / "chargebox"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert (tmp_path / "chargebox").read_bytes() == single_file.read_bytes()
    assert hashlib.sha256(single_file.read_bytes()).hexdigest() in again.stdout


def test_every_command_of_the_file_answers_its_help(place):
    listed = run(place, "--help")
    assert listed.returncode == 0
    commands = listed.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    expected = {"serve", "init-db", "migrate", "create-seller", "audit", "copy", "backup"}
    assert expected <= set(commands)
    for command in commands:
        answered = run(place, command, "--help")
        assert answered.returncode == 0, (command, answered.stderr)


class Served:
    """A `chargebox serve` from the file, as a real process on a free 127.0.0.1 port."""

    def __init__(self, command: list[str], cwd: Path, env: dict, log: Path, preexec=None) -> None:
        began = time.perf_counter()
        self.log_path = log
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            preexec_fn=preexec,
        )
        line = self.proc.stdout.readline()
        assert "serving on http://127.0.0.1:" in line, (line, log.read_text())
        self.url = line.split("serving on ", 1)[1].split()[0]
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                self.health = requests.get(self.url + "/health", timeout=2)
                self.ready = time.perf_counter() - began  # from exec to /health's answer
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "/health never answered"
                time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM, and its exit status; what it said after its first line is in `said`."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.said = self.proc.stdout.read()
            self.proc.stdout.close()
            self.log.close()


def served(place, *args: str) -> Served:
    """`./chargebox serve` in the place, on a free port, with 16 threads."""
    where, env = place
    command = ["./chargebox", "serve", "--port", "0", "--threads", "16", *args]
    return Served(command, where, env, where / "serve.log")


def walk_through(url: str, admin_token: str) -> None:
    """The customer's example: 1,000,000 credited, sixty 5,000-toman sales, 700,000 left."""
    admin = Api(url, admin_token)
    created = admin.post("/api/sellers", {"name": "Ali Mobile"})
    assert created.status_code == 201, created.text
    seller = Api(url, created.json()["api_key"])
    asked = seller.post("/api/credit-requests", {"amount": 1_000_000})
    assert asked.status_code == 201, asked.text
    path = f"/api/credit-requests/{asked.json()['id']}/approve"
    assert admin.post(path).status_code == 200
    assert admin.post(path).json()["error"]["code"] == "not_pending"  # credited once
    for n in range(60):
        sale = seller.post(
            "/api/sales",
            {"phone": "09121234567", "amount": 5_000},
            headers={"Idempotency-Key": f"order-{n}"},
        )
        assert sale.status_code == 201, sale.text
    again = seller.post(
        "/api/sales",
        {"phone": "09121234567", "amount": 5_000},
        headers={"Idempotency-Key": "order-0"},
    )
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert seller.get("/api/me").json()["balance"] == 700_000
    entries = seller.get("/api/ledger").json()["items"]
    assert len(entries) == 61
    assert sum(entry["amount"] for entry in entries) == 700_000
    assert entries[-1]["balance_after"] == 700_000
    audit = admin.get("/api/audit").json()
    assert audit["consistent"], audit["problems"]


def test_the_customers_scenario_runs_through_the_file_over_http(place, tmp_path):
    where, _env = place
    made = run(place, "init-db", "--db", "data/chargebox.db")
    assert made.returncode == 0, made.stderr
    for secret in ("admin_token", "ledger_key"):
        assert (where / "data" / secret).stat().st_mode & 0o777 == 0o600, secret
    token = (where / "data" / "admin_token").read_text().strip()

    server = served(place, "--db", "data/chargebox.db")
    try:
        assert server.health.json() == {"status": "ok", "version": chargebox.__version__}
        print(f"\nserve answered /health {server.ready:.2f} s after it was started (unpacked)")
        walk_through(server.url, token)
        stress = run_stress(
            "run", "--url", server.url, f"--admin-token={token}",  # a token may begin with -
            "--db", str(where / "data" / "chargebox.db"),
            "--sellers", "2", "--credits", "10", "--sales", "1000", "--workers", "16",
            "--quiet", "--out", str(tmp_path / "stress"),
            timeout=300,
        )  # fmt: skip
        assert stress.returncode == 0, stress.stdout[-3000:] + stress.stderr[-3000:]
        (written,) = (tmp_path / "stress").glob("run-*.json")
        (stressed,) = json.loads(written.read_text())["rounds"]
        print(f"stress run through the file: {stressed['status_counts']}, {stressed['books']}")
        (where / "backups").mkdir()
        backed_up = run(place, "backup", "--db", "data/chargebox.db", "backups")  # while serving
        assert backed_up.returncode == 0, backed_up.stderr
    finally:
        code = server.stop()
    assert code == 0, (where / "serve.log").read_text()[-3000:]
    assert server.said.rstrip().endswith("chargebox stopped"), server.said

    audited = run(place, "audit", "--db", "data/chargebox.db", "--json")
    assert audited.returncode == 0, audited.stderr
    report = json.loads(audited.stdout)
    assert report["consistent"], report["problems"]
    assert report["totals"]["sales"] == 60 + stressed["ok_201"]  # each acknowledged sale, once
    (copy,) = (where / "backups").iterdir()
    key = (where / "data" / "ledger_key").read_text().strip()
    checked = subprocess.run(
        ["./chargebox", "audit", "--db", str(copy)], cwd=where, capture_output=True, text=True,
        env={**place[1], "CHARGEBOX_LEDGER_KEY": key}, timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr  # the backup's books reconcile too
    migrated = run(place, "migrate", "--db", "data/chargebox.db")
    assert migrated.returncode == 0 and "nothing to do" in migrated.stderr, migrated.stderr
    created = run(place, "create-seller", "--db", "data/chargebox.db", "Sara")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["api_key"].startswith("cbk_")


def test_the_file_serves_with_two_forked_processes(place):
    server = served(place, "--db", "data/chargebox.db", "--processes", "2")
    print(f"\nserve --processes 2 answered /health {server.ready:.2f} s after it was started, "
          "unpacking first")  # fmt: skip
    token = (place[0] / "data" / "admin_token").read_text().strip()
    try:
        admin = Api(server.url, token)
        assert admin.post("/api/sellers", {"name": "Two"}).status_code == 201
        assert admin.get("/api/audit").json()["consistent"]
    finally:
        assert server.stop() == 0


def snapshot(directory: Path) -> dict[str, tuple]:
    """Every path under `directory` with its mode, owner and modification time."""
    return {
        str(path): (info.st_mode, info.st_uid, info.st_mtime_ns)
        for path in [directory, *directory.rglob("*")]
        for info in [path.lstat()]
    }


def test_the_units_two_commands_run_as_it_says_code_unpacked_by_root_data_by_its_user(
    single_file,
):
    """What the systemd unit does at each start, without systemd (not PID 1 here): its
    ExecStartPre as root under the unit's UMask=0077, then its ExecStart as an unprivileged
    user (nobody) under the same umask, with the unit's environment, paths moved into a
    scratch directory, in a mount namespace where only the data directory (and a private
    /tmp) is writable; then the nightly backup unit's commands the same way (its backups
    directory writable too). The service must run on code it can read but not change, and
    write only its data directory. Before the ExecStartPre set umask 022, the unpacked code
    was 0700 and the service could not read it."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("needs root, to run the service as another user")
        pytest.skip("needs root, to run the service as another user")
    unit = settings(UNIT.read_text())
    scratch = Path(tempfile.mkdtemp(prefix="chargebox-unit-", dir="/var/tmp"))  # not in /tmp
    try:
        scratch.chmod(0o755)  # the service user must reach what is inside
        program, code, data = scratch / "bin" / "chargebox", scratch / "lib", scratch / "data"
        program.parent.mkdir()
        shutil.copy2(single_file, program)
        backups = scratch / "backups"
        for directory in (data, backups):  # StateDirectory=, StateDirectoryMode=0700
            directory.mkdir(mode=0o700)
            os.chown(directory, NOBODY.pw_uid, NOBODY.pw_gid)

        def moved(command: str) -> list[str]:
            text = command.replace("/usr/local/bin/chargebox", str(program))
            text = text.replace("/var/lib/chargebox-backups", str(backups))
            return shlex.split(text.replace("--port 8080", "--port 0"))

        env = {
            "PATH": f"{system_python().parent}:/usr/bin:/bin",
            "SHIV_ROOT": str(code),  # the unit's SHIV_ROOT, moved
            "CHARGEBOX_DB": str(data / "chargebox.db"),  # its CHARGEBOX_DB, moved
            "HOME": str(data),
            "LANG": "C.UTF-8",
        }
        assert unit["Environment"] == [
            "CHARGEBOX_DB=/var/lib/chargebox/chargebox.db",
            "SHIV_ROOT=/usr/local/lib/chargebox",
        ]
        umask = unit["UMask"][0]
        pre = unit["ExecStartPre"][0].removeprefix("+")
        unpacked = subprocess.run(
            moved(pre), env=env, capture_output=True, text=True, timeout=120,
            preexec_fn=lambda: os.umask(int(umask, 8)),
        )  # fmt: skip
        assert unpacked.returncode == 0 and unpacked.stdout.startswith("chargebox "), unpacked
        before = snapshot(code)
        assert all(uid == 0 for _mode, uid, _time in before.values())

        # ProtectSystem=strict, ReadWritePaths and PrivateTmp, roughly: in a mount namespace
        # of its own, every file system read-only but the data directory, and an empty /tmp.
        def sandbox(*writable: Path) -> list[str]:
            return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'while [ "$1" != -- ]; do mount --bind "$1" "$1" || exit 1; shift; done; '
                    "shift && mount -o remount,bind,ro / "
                    '&& mount -t tmpfs -o mode=1777 private-tmp /tmp && exec "$@"',
                    "sandbox", *map(str, writable), "--"]  # fmt: skip

        as_nobody = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}",
                     "--clear-groups", "--no-new-privs"]  # fmt: skip
        probe = subprocess.run(
            [
                *sandbox(data),
                "sh",
                "-c",
                f"touch {data}/probe /tmp/probe && ! ls /tmp/pytest-of-* "
                f"2>/dev/null && ! touch {scratch}/probe 2>/dev/null",
            ],  # fmt: skip
            capture_output=True,
        )
        assert probe.returncode == 0, "the sandbox does not hold: the test would prove nothing"
        (data / "probe").unlink()
        log = scratch / "serve.log"
        server = Served(
            sandbox(data) + as_nobody + moved(unit["ExecStart"][0]), data, env, log,
            preexec=lambda: os.umask(int(umask, 8)),
        )  # fmt: skip
        try:
            token = (data / "admin_token").read_text().strip()
            admin = Api(server.url, token)
            seller = admin.post("/api/sellers", {"name": "Unit"})
            assert seller.status_code == 201, seller.text
            assert admin.get("/api/audit").json()["consistent"]
        finally:
            code_stopped = server.stop()
        assert code_stopped == 0, log.read_text()[-3000:]

        # The nightly chargebox-backup.service: its commands, as its user, in its sandbox.
        nightly = settings(BACKUP.read_text())
        assert nightly["Environment"] == unit["Environment"]
        for command in nightly["ExecStart"]:
            done = subprocess.run(
                sandbox(data, backups) + as_nobody + moved(command), cwd=data, env=env,
                capture_output=True, text=True, timeout=120,
                preexec_fn=lambda: os.umask(int(umask, 8)),
            )  # fmt: skip
            assert done.returncode == 0, (command, done.stderr)
        (copy,) = backups.iterdir()
        assert copy.name.startswith("chargebox-") and copy.stat().st_uid == NOBODY.pw_uid
        assert snapshot(code) == before, "the service changed its own code"
        for path in data.iterdir():
            info = path.stat()
            assert info.st_uid == NOBODY.pw_uid, path  # the service's own files
            assert info.st_mode & 0o077 == 0, (path, oct(info.st_mode))  # UMask=0077
    finally:
        shutil.rmtree(scratch)


@pytest.mark.postgresql_only
def test_the_file_built_with_postgresql_serves_a_postgresql_database(new_database, tmp_path):
    """`deploy/build.py --postgresql`: psycopg's binary wheel inside, run on the system's
    Python against the test cluster's database (made by init-db --grant-to, the service's
    role in the URL): the customer's example, a clean stop, then `audit` from the file."""
    output = tmp_path / "dist" / "chargebox"
    built = subprocess.run(
        [sys.executable, BUILD, "--postgresql", "--output", output],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    where = tmp_path / "srv"
    where.mkdir()
    shutil.copy2(output, where / "chargebox")
    url, data = new_database(tmp_path / "home")
    env = {
        "PATH": f"{system_python().parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SHIV_ROOT": str(tmp_path / "shiv"),
        "LANG": "C.UTF-8",
        "CHARGEBOX_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    database = ["--db", url, "--data-dir", str(data)]
    command = ["./chargebox", "serve", "--port", "0", "--threads", "8", *database]
    server = Served(command, where, env, where / "serve.log")
    try:
        walk_through(server.url, ADMIN_TOKEN)
    finally:
        code = server.stop()
    assert code == 0, (where / "serve.log").read_text()[-3000:]
    audited = subprocess.run(
        ["./chargebox", "audit", *database], cwd=where, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert audited.returncode == 0, audited.stderr
    print(f"\nsingle file with psycopg: {output.stat().st_size:,} bytes")


class _Release:
    """What tests/test_migrations' checks ask of a server: its clients."""

    def __init__(self, url: str) -> None:
        self.url = url

    def admin(self) -> Api:
        return Api(self.url, ADMIN_TOKEN)

    def seller(self, key: str) -> Api:
        return Api(self.url, key)


def test_the_file_upgrades_a_release_0_1_0_database_as_the_changelog_says(place):
    """CHANGELOG.md's upgrade from 0.1.0, through the shipped file: on the 0.1.0 fixture
    (a real 0.1.0 server's file), serve refuses it until `migrate`, which moves it to this
    release's schema; it audits clean, serves on with the sellers' old keys (a keyed sale
    of 0.1.0 replays), and /health names the new release."""
    where, env = place
    env = {**env, "CHARGEBOX_ADMIN_TOKEN": ADMIN_TOKEN}  # the fixture's admin token
    old_file(where / "data")
    database = ["--db", "data/chargebox.db"]

    def chargebox_(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["./chargebox", *args], cwd=where, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    refused = chargebox_("serve", "--port", "0", *database)
    assert refused.returncode == 2 and "run `chargebox migrate`" in refused.stderr
    migrated = chargebox_("migrate", *database)
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema version 1 -> {schema.VERSION}" in migrated.stderr
    assert chargebox_("audit", *database).returncode == 0
    command = ["./chargebox", "serve", "--port", "0", "--threads", "8", *database]
    server = Served(command, where, env, where / "serve.log")
    try:
        assert server.health.json()["version"] == chargebox.__version__
        sells_on_with_old_keys(_Release(server.url), old_keys())
    finally:
        assert server.stop() == 0
    assert chargebox_("audit", *database).returncode == 0

"""What happens on PostgreSQL when one side of a conversation stops answering.

- A statement already streaming when the database refuses its next chunk: the
  client sees a download cut short (the chunked body never ends), and the server
  logs one line, no trace.
- An app server that stops answering in the middle of a write, frozen (its
  transaction idle between two round trips) or its host lost (no FIN, no RST:
  the link goes down under it, while PostgreSQL waits for its next statement,
  sends it a result, or waits for a lock for it): PostgreSQL ends that
  transaction after the peer timeout (here 2 s), so another server's sale
  of the same seller, waiting for its row, sells; and the lost server's next
  statement is Unavailable within as long, not after Linux's minutes of
  retransmissions or hours of keepalive silence. Without each setting, its case
  fails: the sale waits out its busy timeout (60 s here), or the lost server
  waits past the test's 60 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import psycopg
import pytest
import requests

from chargebox import pg_driver
from chargebox.cli import main as chargebox_main
from chargebox.cli import prepare
from chargebox.config import Config, env_defaults
from chargebox.errors import Unavailable
from chargebox.postgresql import Database
from chargebox.services import Chargebox
from tests import pg_cluster, test_postgresql_namespaces
from tests.support import ADMIN_TOKEN, ROOT
from tests.test_postgresql_namespaces import ip
from tests.test_postgresql_servers import funded_seller
from tests.test_postgresql_service import books

hosts = test_postgresql_namespaces.hosts  # a fixture: namespaces, or skip (CI: fail)

BUSY_TIMEOUT_MS = 1000
LOST_AFTER = 2  # seconds: CHARGEBOX_PEER_TIMEOUT, in place of its default 10
PATIENT_MS = 60_000  # the busy timeout of the server whose sale waits for a lost one's row
PHONE = "09121234567"


@pytest.fixture
def quick_server(postgresql_cluster, tmp_path, monkeypatch):
    """One `serve` process on a fresh database, its busy timeout 1 s; yields (its URL,
    a superuser URL to the database, its log)."""
    monkeypatch.setenv("CHARGEBOX_BUSY_TIMEOUT_MS", str(BUSY_TIMEOUT_MS))
    data, log = tmp_path / "data", tmp_path / "server.log"
    made = pg_cluster.initialised(postgresql_cluster, "lost", data)
    superuser = postgresql_cluster.url(db=made.app_url.rsplit("/", 1)[1])
    with pg_cluster.serving(made.app_url, data, log, ADMIN_TOKEN) as (url, _, _):
        yield url, superuser, log


def test_a_statement_the_database_cuts_short_is_an_unfinished_download_and_one_log_line(
    quick_server,
):
    url, superuser, log = quick_server
    seller_id, key = funded_seller(url, 5_000)
    with psycopg.connect(superuser) as blocker:
        # Its entries' chunks read the sale table: held, the first chunk waits for it for
        # the busy timeout (then LockTimeout), after the statement's head was sent.
        blocker.execute("LOCK TABLE sale IN ACCESS EXCLUSIVE MODE")
        answer = requests.get(url + "/api/statements?from=2000-01-01&to=2100-01-01&format=csv",
                              headers={"Authorization": f"Bearer {key}"}, stream=True,
                              timeout=30)  # fmt: skip
        assert answer.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            answer.content  # noqa: B018 (read to the end, which never comes)
    said = log.read_text()
    assert "Traceback" not in said, said
    errors = [line for line in said.splitlines() if " ERROR " in line]
    assert len(errors) == 1, said
    assert "/api/statements: LockTimeout from LockNotAvailable at " in errors[0], said
    (access,) = [line for line in said.splitlines() if "path=/api/statements " in line]
    assert " status=200 " in access and access.endswith(" cut=1"), access
    assert requests.get(url + "/health", timeout=10).json()["status"] == "ok"


def funded(config: Config, credit: int) -> tuple[Chargebox, int]:
    service = Chargebox(prepare(config))
    seller, _ = service.create_seller("held")
    service.approve_credit_request(service.request_credit(seller["id"], credit).record["id"])
    return service, seller["id"]


def test_the_peer_timeout_reaches_both_ends_of_each_session_and_each_write(
    postgresql_cluster, tmp_path
):
    made = pg_cluster.initialised(postgresql_cluster, "peer", tmp_path / "data")
    environ = {"CHARGEBOX_DB": made.app_url, "CHARGEBOX_PEER_TIMEOUT": "7"}
    database = Database(Config(**env_defaults(environ)))
    settings = "SELECT " + ", ".join(f"current_setting('{name}')" for name in _THERE)
    try:
        session = database.rows(settings)[0]
        assert session == ("3", "1", "4", "7000", "0"), session  # PostgreSQL's end
        conn = database.connection()
        libpq = {name: conn.info.get_parameters().get(name) for name in _HERE}
        assert libpq == {"keepalives_idle": "3", "keepalives_count": "4",
                         "tcp_user_timeout": "7000"}, libpq  # fmt: skip
        in_a_write = database.write(lambda write: write.rows(settings)[0])
        assert in_a_write[-1] == "7s", in_a_write  # for each write transaction only
    finally:
        database.close()
    with pytest.raises(ValueError, match="CHARGEBOX_PEER_TIMEOUT"):
        Config(**env_defaults({**environ, "CHARGEBOX_PEER_TIMEOUT": "0"}))


def test_the_commands_own_connections_give_up_after_the_peer_timeout_too(
    postgresql_cluster, tmp_path, monkeypatch
):
    """init-db, migrate and the service as it starts (`prepare`, in this process) open their
    connections with CHARGEBOX_PEER_TIMEOUT, as the service's are."""
    asked = []
    keepalives = pg_driver._keepalives
    monkeypatch.setattr(pg_driver, "_keepalives", lambda s: asked.append(s) or keepalives(s))
    monkeypatch.setenv("CHARGEBOX_PEER_TIMEOUT", "7")
    data = tmp_path / "data"
    made = pg_cluster.initialised(postgresql_cluster, "commands", data)
    assert chargebox_main(["migrate", "--db", made.owner_url, "--data-dir", str(data)]) == 0
    monkeypatch.setenv("CHARGEBOX_DB", made.app_url)
    prepare(Config(**env_defaults(), data_dir=data))  # its probe, then its database's
    assert len(asked) == 4 and set(asked) == {7}, asked


_THERE = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
          "tcp_user_timeout", "idle_in_transaction_session_timeout")  # fmt: skip
_HERE = ("keepalives_idle", "keepalives_count", "tcp_user_timeout")


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipeline", "without (libpq < 14)"])
def test_a_write_its_app_server_leaves_idle_ends_and_another_server_sells(
    postgresql_cluster, tmp_path, monkeypatch, pipelined
):
    """Ended, the idle write's next statement is Unavailable (503): in a pipeline libpq
    reports the lost connection; without one, psycopg raises PostgreSQL's own error."""
    if not pipelined:
        monkeypatch.setattr(pg_driver, "pipelined", lambda conn: contextlib.nullcontext())
    made = pg_cluster.initialised(postgresql_cluster, "idle", tmp_path / "data")
    config = Config(db_url=made.app_url, data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN,
                    busy_timeout_ms=PATIENT_MS, peer_timeout=LOST_AFTER)  # fmt: skip
    other, seller_id = funded(config, 5_000)
    frozen = Database(config)  # a server frozen (SIGSTOP, a paused VM) inside a write
    try:
        with frozen.transaction() as write:
            write.hold(seller_id)
            write.execute("SELECT 1")  # answered: from here its session is idle in transaction
            # (LockTimeout, had it waited out its busy timeout, would be an Unavailable too)
            assert other.sell(seller_id, PHONE, 1_000).record["balance_after"] == 4_000
            with pytest.raises(Unavailable):
                write.execute("SELECT 1")  # the server ended its session meanwhile
    except Unavailable:
        pass  # and so its ROLLBACK
    finally:
        frozen.close()
        other.close()
    assert books(made.app_url) == {seller_id: 4_000}


@pytest.mark.parametrize("held", ["waiting", "sending", "queued"])
def test_a_server_whose_host_is_lost_mid_write_lets_go_and_gives_up_in_seconds(
    hosts, postgresql_cluster, tmp_path, held
):
    """The lost host holds a seller's row mid-write, and PostgreSQL's session for it is:

    - `waiting` for the next statement, having sent all it had: its keepalives find the
      host gone; the host's own next statement, sent after its link went down, is never
      acknowledged (the host's TCP_USER_TIMEOUT);
    - `sending` a result the host does not read: nothing is acknowledged any more
      (TCP_USER_TIMEOUT at both ends);
    - `queued` for another row's lock, the host waiting for the answer with nothing in
      flight: the host's keepalives find PostgreSQL gone; the lock let go after the link
      went down, PostgreSQL's answer is never acknowledged (its TCP_USER_TIMEOUT).
    """
    host, outside, inside = hosts[0]
    with pg_cluster.running(also_on=(outside,)) as cluster:
        data = tmp_path / "data"
        made = pg_cluster.initialised(cluster, "lost", data)
        config = Config(db_url=made.app_url, data_dir=data, admin_token=ADMIN_TOKEN,
                        busy_timeout_ms=PATIENT_MS)  # fmt: skip
        other, seller_id = funded(config, 5_000)
        second = other.create_seller("locked")[0]["id"]
        there = made.app_url.replace("@127.0.0.1:", f"@{outside}:")
        command = ["ip", "netns", "exec", host, sys.executable, __file__, there, str(seller_id),
                   str(second), held]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        blocker = psycopg.connect(cluster.url(db=made.app_url.rsplit("/", 1)[1]))
        blocker.execute("SELECT 1 FROM seller WHERE id = %s FOR UPDATE", (second,))
        holder = subprocess.Popen(command, cwd=ROOT, env=env, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        try:
            assert holder.stdout.readline() == "held\n"
            with psycopg.connect(cluster.url(), autocommit=True) as watcher:
                until_its_session(watcher, host, inside, held)
            ip("-n", host, "link", "set", "eth0", "down")  # host lost: no packet more, either way
            holder.stdin.write("go\n")  # it writes again at once: nothing acknowledges it
            holder.stdin.flush()
            blocker.commit()  # `queued`: the lock is had; its answer goes nowhere
            assert other.sell(seller_id, PHONE, 1_000).record["balance_after"] == 4_000
            said = json.loads(holder.communicate(timeout=60)[0])
            assert holder.returncode == 0
        finally:
            holder.kill()  # by its PID, if it is still there
            holder.communicate()
            blocker.close()
            other.close()
        assert said["error"] == "Unavailable", said
        assert books(made.app_url) == {seller_id: 4_000, second: 0}


# What PostgreSQL's session waits for: the next message, to send what the client does not
# read, another transaction (a row's lock)
_WAITS = {"waiting": "ClientRead", "sending": "ClientWrite", "queued": "transactionid"}
_ITS_SESSION = "SELECT state, wait_event FROM pg_stat_activity WHERE client_addr = %s"


def until_its_session(watcher, host: str, inside: str, held: str) -> None:
    """Wait (a bounded poll) until the lost host's session is mid-write as `held` says, with
    nothing in flight from the side that must find the other gone by its keepalives."""
    for _ in range(500):
        found = watcher.execute(_ITS_SESSION, (inside,)).fetchall()
        if held == "sending" and not found:
            return  # gone already: a window shut that long is silence too (TCP_USER_TIMEOUT)
        if found == [("active", _WAITS[held])]:
            if held == "sending":
                return
            ss = ["ss", "-Htn", "state", "established"]
            # waiting: PostgreSQL's socket to the host; queued: the host's own
            command = (
                [*ss, "dst", inside] if held == "waiting" else ["ip", "netns", "exec", host, *ss]
            )
            if not _unsent(command):
                return
        time.sleep(0.02)
    raise AssertionError(f"the held session never got there: {found}")


def _unsent(command: list[str]) -> int:
    """Bytes sent and not acknowledged (Send-Q) on the sockets `ss` lists."""
    listed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30)
    return sum(int(line.split()[1]) for line in listed.stdout.splitlines())


def hold(url: str, seller_id: int, second: int, held: str) -> None:
    """In the lost host: hold the seller's row inside a write whose pipeline is not synced
    (its session active); `sending`, also a result it does not read; `queued`, also wait for
    the `second` seller's row. Say so, and once told, write again."""
    database = Database(Config(db_url=url, busy_timeout_ms=PATIENT_MS, peer_timeout=LOST_AFTER))
    began, error = 0.0, None
    try:
        with database.transaction() as write:
            write.hold(seller_id)
            write.later("SELECT 1")()  # read by a flush, not a sync: the pipeline stays open
            if held == "sending":  # ~200 MB: more than both ends' buffers hold
                write.send("SELECT repeat('x', 1000) FROM generate_series(1, 200000)")
            print("held", flush=True)
            began = time.monotonic()
            if held == "queued":
                write.execute("SELECT 1 FROM seller WHERE id = ? FOR UPDATE", (second,))
            sys.stdin.readline()
            began = time.monotonic()
            write.execute("SELECT 1")
    except Unavailable as exc:
        error = type(exc).__name__
    print(json.dumps({"error": error, "seconds": round(time.monotonic() - began, 1)}))


if __name__ == "__main__":
    hold(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
